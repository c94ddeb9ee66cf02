// Names are bytes, through every driver. A hand-made image whose names,
// link targets, whiteout and xattr names are not UTF-8 (Latin-1 and 0xff
// names, a newline, a backslash, a tab, a 255-byte name, names differing
// only in such bytes, binary xattr names and values) imports and mounts as
// exactly the tree `umoci unpack` makes; a container that adds, renames and
// deletes such names lists them in diff as raw bytes (and in --json as text
// plus base64), and commits and exports as exactly its tree (umoci unpack
// of the export). zfs runs on zfs-fuse, which stores no xattrs: there the
// image with xattrs is refused at create with one line naming the entry, and
// the same image without its xattrs makes the round trip (a small pool,
// started and stopped here).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, lchownSync, linkSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, cowshedOk, tempDir, removeTree, lastLine } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';
import { loopFs } from '../helpers/loop-fs.ts';
import { writeOciLayout } from '../../src/oci/layout-writer.ts';
import { startZfsPool, type ZfsPool } from '../helpers/zfs-pool.ts';

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : 'needs root (mounts, loop devices, owners)';

interface Case { name: string; driver: string; fs?: 'btrfs' | 'xfs' | 'zfs'; exactTimes: boolean }
const CASES: Case[] = [
  { name: 'composefs', driver: 'composefs', exactTimes: true },
  { name: 'overlay', driver: 'overlay', exactTimes: false },
  { name: 'btrfs (loop)', driver: 'btrfs', fs: 'btrfs', exactTimes: false },
  { name: 'vfs (loop xfs)', driver: 'vfs', fs: 'xfs', exactTimes: false },
  // zfs-fuse keeps whole seconds only (the image's times are whole).
  { name: 'zfs (zfs-fuse)', driver: 'zfs', fs: 'zfs', exactTimes: false },
];

const B = (s: string): Buffer => Buffer.from(s, 'latin1');
/** A binary string (one char per byte) path below a host dir, as a Buffer for fs calls. */
const at = (dir: string, rel: string): Buffer => Buffer.concat([Buffer.from(dir), B('/'), B(rel)]);

const LONG = '\xe9'.repeat(255);
const NAMES = {
  dir: 'd\xe9j\xe0', acute: 'caf\xe9.txt', grave: 'caf\xe8.txt', ff: '\xff', newline: 'new\nline', backslash: 'back\\slash',
  tab: 'tab\there', long: LONG, xattr: 'user.n\xe9\x01', added: 'ajout\xe9-\xff', renamed: 'renomm\xe9\n', dirRenamed: 'D\xc9J\xc0',
};

/** Sets xattrs with setfattr --restore (names octal-escaped, as getfattr writes them). */
function setXattrs(list: Array<[Buffer, string, Buffer]>): void {
  const oct = (b: Buffer): string => [...b].map((c) => (c > 0x20 && c < 0x7f && c !== 0x5c && c !== 0x3d ? String.fromCharCode(c) : `\\${c.toString(8).padStart(3, '0')}`)).join('');
  let s = '';
  for (const [p, k, v] of list) s += `# file: ${oct(p)}\n${oct(B(k))}=0x${v.toString('hex')}\n\n`;
  execFileSync('setfattr', ['-h', '--restore=-'], { input: Buffer.from(s, 'latin1') });
}

/** The edge image; without its xattrs (for zfs-fuse, which stores none) when `xattrs` is false. */
async function buildByteImage(layout: string, work: string, xattrs = true): Promise<void> {
  const l1 = join(work, 'l1');
  const l2 = join(work, 'l2');
  mkdirSync(work, { recursive: true });
  mkdirSync(l1);
  mkdirSync(l2);
  mkdirSync(at(l1, NAMES.dir));
  writeFileSync(at(l1, `${NAMES.dir}/${NAMES.acute}`), 'e acute\n');
  writeFileSync(at(l1, `${NAMES.dir}/${NAMES.grave}`), 'e grave\n');
  for (const n of [NAMES.ff, NAMES.newline, NAMES.backslash, NAMES.tab, NAMES.long]) writeFileSync(at(l1, n), `${n.length} bytes\n`);
  writeFileSync(at(l1, 'x'), 'xattrs\n');
  symlinkSync(B(`${NAMES.dir}/${NAMES.acute}`), at(l1, 'lien-\xe9'));
  symlinkSync(B(NAMES.long), at(l1, 'lien-long'));
  linkSync(at(l1, NAMES.ff), at(l1, 'hard-\xff'));
  lchownSync(at(l1, NAMES.newline), 1000, 1000);
  chmodSync(at(l1, NAMES.tab), 0o600);
  if (xattrs) setXattrs([[at(l1, 'x'), NAMES.xattr, Buffer.from([0, 0xff, 0x0a, 0x3d])], [at(l1, NAMES.ff), 'user.\xff', Buffer.from([0xe9])]]);
  // Layer 2: whiteouts of names that are not UTF-8, and a new one.
  mkdirSync(at(l2, NAMES.dir));
  writeFileSync(at(l2, `${NAMES.dir}/.wh.${NAMES.grave}`), '');
  writeFileSync(at(l2, `.wh.${NAMES.newline}`), '');
  writeFileSync(at(l2, '\xe0-nouveau'), 'new\n');
  for (const l of [l1, l2]) {
    // Whole seconds throughout, the layer's root too: zfs-fuse keeps no finer times.
    execFileSync('find', [l, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
    execFileSync('tar', ['--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', l, '-cf', `${l}.tar`, '.']);
    execFileSync('gzip', ['-n', `${l}.tar`]);
  }
  await writeOciLayout(layout, {
    config: { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] } },
    layers: [{ path: `${l1}.tar.gz` }, { path: `${l2}.tar.gz` }],
    tag: 'bytes',
  });
}

describe('names are bytes through every driver', { skip }, () => {
  let work: string;
  let layout: string;
  let unpacked: string;
  let pool: ZfsPool | undefined;

  before(async () => {
    work = tempDir('cowshed-bytes-');
    layout = join(work, 'oci');
    await buildByteImage(layout, work);
    execFileSync('umoci', ['unpack', '--image', `${layout}:bytes`, join(work, 'umoci')], { stdio: 'ignore' });
    unpacked = join(work, 'umoci', 'rootfs');
  });
  after(async () => {
    await pool?.destroy();
    if (work) removeTree(work);
  });

  test('the fixture holds the names it should (umoci unpacks them as bytes)', () => {
    const names = new Set(readdirSync(B(unpacked), { encoding: 'latin1' }));
    for (const n of [NAMES.dir, NAMES.ff, NAMES.backslash, NAMES.tab, NAMES.long, '\xe0-nouveau', 'hard-\xff', 'lien-\xe9']) assert.ok(names.has(n), JSON.stringify(n));
    assert.ok(!names.has(NAMES.newline), 'whited out');
    assert.deepEqual(readdirSync(at(unpacked, NAMES.dir), { encoding: 'latin1' }), [NAMES.acute]);
  });

  for (const c of CASES) {
    describe(c.name, () => {
      let store: string;
      let base: string;
      /** The image this driver takes and umoci's tree of it (for zfs, the one without xattrs). */
      let image = '';
      let judge = '';
      const opts = { nsec: c.exactTimes, bytes: true, noXattrs: c.fs === 'zfs' };
      /** A zfs-fuse deadlock (its watchdog fired) is a skip naming it; other drivers run the body as it is. */
      const guarded = (body: () => Promise<void>) => (t: { skip(msg: string): void }): Promise<void> => (pool ? pool.guarded(body)(t) : body());

      before(async () => {
        base = join(work, c.name.replace(/\W+/g, '-'));
        if (c.fs === 'zfs') {
          mkdirSync(base);
          const plain = join(base, 'no-xattrs');
          await buildByteImage(join(plain, 'oci'), plain, false);
          execFileSync('umoci', ['unpack', '--image', `${plain}/oci:bytes`, join(plain, 'umoci')], { stdio: 'ignore' });
          image = `oci:${plain}/oci:bytes`;
          judge = join(plain, 'umoci', 'rootfs');
          pool = await startZfsPool(base, { sizeMiB: 256, watchdogS: 300 }); // ~40 s on a busy machine
          store = join(pool.mountpoint, 'store');
          // A zfs-fuse deadlock here: the tests below report it as a skip (guarded).
          try { cowshedOk(store, '--driver', c.driver, 'import', image, 'bytes'); } catch (e) { if (!pool.hung()) throw e; }
          return;
        } else {
          store = join(c.fs ? loopFs(base, c.fs) : (mkdirSync(base), base), 'store');
          image = `oci:${layout}:bytes`;
          judge = unpacked;
        }
        cowshedOk(store, '--driver', c.driver, 'import', image, 'bytes');
      });

      if (c.fs === 'zfs') {
        test('the image with xattrs is refused at create, in one line naming the entry as bytes', guarded(async () => {
          cowshedOk(store, 'import', `oci:${layout}:bytes`, 'bytes:xattrs');
          const r = spawnSync(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, 'create', 'bytes:xattrs'], { encoding: 'latin1' });
          assert.notEqual(r.status, 0);
          assert.match(r.stderr, /^cowshed: zfs-fuse stores no extended attributes, and this image has some \(\/(x: user\.n\\xe9\\x01|(hard-)?\\xff: user\.\\xff)\); use another driver\n$/);
          assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), '');
        }));
      }

      test('imports and mounts as exactly the tree umoci unpacks, names as bytes', guarded(async () => {
        const mnt = lastLine(cowshedOk(store, 'mount', 'bytes'));
        assert.deepEqual(compareTrees(await listTree(mnt, opts), await listTree(judge, opts), { ignoreRoot: true }), []);
        cowshedOk(store, 'create', '--name', 'c', 'bytes');
        const root = lastLine(cowshedOk(store, 'mount', 'c'));
        assert.deepEqual(compareTrees(await listTree(root, opts), await listTree(judge, opts), { ignoreRoot: true }), []);
      }));

      test('adds, renames and deletes such names: diff shows the bytes, commit and export keep them', guarded(async () => {
        const root = lastLine(cowshedOk(store, 'mount', 'c'));
        writeFileSync(at(root, NAMES.added), 'added\n');
        if (c.fs !== 'zfs') setXattrs([[at(root, NAMES.added), 'user.\xe0\x02', Buffer.from([0xff, 0])]]); // zfs-fuse: ENOTSUP
        renameSync(at(root, NAMES.tab), at(root, NAMES.renamed));
        rmSync(at(root, NAMES.backslash));
        rmSync(at(root, `${NAMES.dir}/${NAMES.acute}`));
        renameSync(at(root, NAMES.dir), at(root, NAMES.dirRenamed));
        writeFileSync(at(root, `${NAMES.dirRenamed}/${NAMES.grave}`), 'back again\n');

        const r = spawnSync(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, 'diff', 'c'], { encoding: 'latin1' });
        assert.equal(r.status, 0, r.stderr);
        const lines = r.stdout.split('\n');
        for (const l of [`A /${NAMES.added}`, `D /${NAMES.backslash}`, `D /${NAMES.dir}`, `A /${NAMES.dirRenamed}`]) {
          assert.ok(lines.includes(l), `diff lacks ${JSON.stringify(l)}: ${JSON.stringify(r.stdout)}`);
        }
        const json = JSON.parse(cowshedOk(store, 'diff', '--json', 'c')) as Array<{ kind: string; path: string; pathBytes?: string }>;
        const added = json.find((x) => x.pathBytes !== undefined && Buffer.from(x.pathBytes, 'base64').equals(B(`/${NAMES.added}`)));
        assert.ok(added && added.kind === 'A' && added.path === '/ajout\ufffd-\ufffd', JSON.stringify(json));

        cowshedOk(store, 'commit', 'c', 'bytes:changed');
        const out = join(base, 'exported');
        cowshedOk(store, 'export', 'bytes:changed', `oci:${out}:changed`);
        execFileSync('umoci', ['unpack', '--image', `${out}:changed`, join(base, 'unpacked')], { stdio: 'ignore' });
        const exported = join(base, 'unpacked', 'rootfs');
        assert.deepEqual(compareTrees(await listTree(root, opts), await listTree(exported, opts), { ignoreRoot: true }), []);
        const names = new Set(readdirSync(B(exported), { encoding: 'latin1' }));
        assert.ok(names.has(NAMES.added) && names.has(NAMES.renamed) && names.has(NAMES.dirRenamed) && !names.has(NAMES.backslash));
      }));
    });
  }
});
