// `cowshed composefs create` against mkcomposefs 1.0.8 (../shared/tools/, see
// its README) on the Debian fixture's rootfs, a real tree with hardlinked
// files: from the directory (with a digest store, cold then warm) and from a
// dump, the images are byte-identical, the printed digests agree and both
// stores hold the same objects. By default each name of a hardlinked file is
// its own inode, as mkcomposefs reads it; --hardlinks keeps the link.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { REPO, cowshed, cowshedOk, debianFixture, removeTree, tempDir } from '../helpers/cli.ts';

const MKCOMPOSEFS = join(REPO, '..', 'shared', 'tools', 'composefs-1.0.8', 'mkcomposefs');
const isRoot = process.getuid?.() === 0;
const skip = !existsSync(MKCOMPOSEFS) ? `mkcomposefs 1.0.8 not found at ${MKCOMPOSEFS} (a clone outside this workspace)`
  : !isRoot ? 'needs root (the Debian fixture, owners and devices of the rootfs)' : false;

let work: string;
let rootfs: string;
/** Two names of one inode in the rootfs (derived from the tree, never assumed). */
let linked: [string, string];

before(() => {
  if (skip) return;
  work = tempDir('cowshed-cfs-debian-');
  rootfs = join(work, 'rootfs');
  execFileSync('mkdir', [rootfs]);
  execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', debianFixture().rootfsTar, '-C', rootfs]);
  const out = execFileSync('find', [rootfs, '-type', 'f', '-links', '+1', '-printf', '%i %P\n'], { encoding: 'utf8' });
  const byIno = new Map<string, string[]>();
  for (const l of out.trim().split('\n').filter(Boolean)) {
    const [ino, path] = [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)];
    byIno.set(ino, [...(byIno.get(ino) ?? []), path]);
  }
  const pair = [...byIno.values()].find((names) => names.length >= 2);
  assert.ok(pair, 'the Debian rootfs has hardlinked files');
  linked = [pair[0]!, pair[1]!];
});
after(() => { if (work) removeTree(work); });

const mk = (...args: string[]): string => execFileSync(MKCOMPOSEFS, args, { encoding: 'utf8' });
/** Every object of a digest store, as "xx/rest size". */
const objects = (store: string): string[] =>
  readdirSync(store).flatMap((d) => readdirSync(join(store, d)).map((f) => `${d}/${f} ${statSync(join(store, d, f)).size}`)).sort();

test('from the Debian rootfs: byte-identical to mkcomposefs 1.0.8, cold and warm store, same digest and objects', { skip }, () => {
  const store = join(work, 'store');
  const theirs = mk(`--digest-store=${join(work, 'objects-mk')}`, '--print-digest', rootfs, join(work, 'mk.cfs')).trim();
  for (const round of ['cold', 'warm']) {
    const ours = cowshedOk(store, 'composefs', 'create', '--digest-store', join(work, 'objects'), '--print-digest', rootfs, join(work, `${round}.cfs`)).trim();
    assert.ok(readFileSync(join(work, `${round}.cfs`)).equals(readFileSync(join(work, 'mk.cfs'))), `${round}: image differs from mkcomposefs's`);
    assert.equal(ours, theirs, `${round}: digest`);
  }
  assert.deepEqual(objects(join(work, 'objects')), objects(join(work, 'objects-mk')));
  // Both names of a hardlinked file: separate inodes with nlink 1, one object.
  const dump = cowshedOk(store, 'composefs', 'dump', join(work, 'cold.cfs')).split('\n');
  const line = (p: string): string[] => dump.find((l) => l.startsWith(`/${p} `))!.split(' ');
  const [a, b] = linked.map(line) as [string[], string[]];
  assert.equal(a[3], '1');
  assert.equal(b[3], '1');
  assert.ok(!b[2]!.startsWith('@'), 'not a hardlink entry');
  assert.equal(a[8], b[8], 'same object');
});

test('--hardlinks keeps the Debian rootfs\'s hardlinks: one inode under both names', { skip }, () => {
  const store = join(work, 'store');
  cowshedOk(store, 'composefs', 'create', '--hardlinks', rootfs, join(work, 'links.cfs'));
  const dump = cowshedOk(store, 'composefs', 'dump', join(work, 'links.cfs')).split('\n');
  const fields = linked.map((p) => dump.find((l) => l.startsWith(`/${p} `))!.split(' '));
  const [first, second] = fields[0]![2]!.startsWith('@') ? [fields[1]!, fields[0]!] : [fields[0]!, fields[1]!];
  assert.equal(first[3], '2', 'nlink counts both names');
  assert.match(second[2]!, /^@/, 'the other name is a hardlink entry');
  // Not mkcomposefs 1.0.8's image (it has no such option), and the digest says so.
  assert.notEqual(cowshedOk(store, 'composefs', 'create', '--hardlinks', '--print-digest-only', rootfs).trim(),
    mk('--print-digest-only', rootfs).trim());
  const r = cowshed(store, 'composefs', 'create', '--hardlinks', '--from-file', '-', join(work, 'x.cfs'));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^cowshed: hardlinks applies to a directory/);
});

test('from a dump of the Debian rootfs: byte-identical to mkcomposefs 1.0.8, hardlinks included', { skip }, () => {
  const store = join(work, 'store');
  // The dump of the --hardlinks image names its hardlinks with @ lines.
  const dump = join(work, 'links.dump');
  writeFileSync(dump, cowshedOk(store, 'composefs', 'dump', join(work, 'links.cfs')));
  assert.match(readFileSync(dump, 'latin1'), /^\/\S+ \d+ @/m);
  mk('--from-file', dump, join(work, 'mk-dump.cfs'));
  cowshedOk(store, 'composefs', 'create', '--from-file', dump, join(work, 'dump.cfs'));
  assert.ok(readFileSync(join(work, 'dump.cfs')).equals(readFileSync(join(work, 'mk-dump.cfs'))));
  assert.ok(readFileSync(join(work, 'dump.cfs')).equals(readFileSync(join(work, 'links.cfs'))), 'the dump rebuilds the image it came from');
});
