// Volumes with names that are bytes, with real runc on the composefs
// driver: the copy-up of an image directory holding Latin-1, 0xff, 255-byte
// and UTF-8 names fills the volume with exactly those names; a destination
// reached through an image symlink to a UTF-8 name mounts there, and one
// whose target is not UTF-8 (which the OCI runtime's JSON config cannot
// carry) is refused in one line rather than mounted at a mangled name; diff
// leaves out what is below a UTF-8 destination; df counts files whose names
// are not UTF-8.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine, debianFixture } from '../helpers/cli.ts';
import { compareTrees, listTree } from '../helpers/tree-listing.ts';

const isRoot = process.getuid?.() === 0;
const haveRunc = ((): boolean => { try { execFileSync('sh', ['-c', 'command -v runc'], { stdio: 'ignore' }); return true; } catch { return false; } })();
const skip = !isRoot ? 'needs root (mounts, runc)' : !haveRunc ? 'runc is not installed' : false;

const B = (s: string): Buffer => Buffer.from(s, 'latin1');
/** A binary-string (one char per byte) path below a host dir, as a Buffer for fs calls. */
const at = (dir: string, rel: string): Buffer => Buffer.concat([Buffer.from(dir), B('/'), B(rel)]);
const CAFE = Buffer.from('café', 'utf8').toString('latin1');
const mountpoint = (store: string, vol: string): string =>
  (JSON.parse(cowshedOk(store, 'volume', 'inspect', vol)) as Array<{ Mountpoint: string }>)[0]!.Mountpoint;

/** The directory the image holds at /srv/bytes. */
function byteTree(dir: string): void {
  mkdirSync(at(dir, 'd\xe9j\xe0'), { recursive: true });
  writeFileSync(at(dir, 'caf\xe9.txt'), 'e acute\n');
  writeFileSync(at(dir, 'caf\xe8.txt'), 'e grave\n');
  writeFileSync(at(dir, '\xff'), 'ff\n');
  writeFileSync(at(dir, '\xe9'.repeat(255)), 'long\n');
  writeFileSync(at(dir, `${CAFE}.txt`), 'utf-8\n');
  writeFileSync(at(dir, 'd\xe9j\xe0/inner\n'), 'newline\n');
  symlinkSync(B('caf\xe9.txt'), at(dir, 'lien-\xe9'));
}

describe('volumes: names are bytes', { skip }, () => {
  let work: string;
  let store: string;
  let ref: string;
  before(() => {
    work = tempDir('cowshed-vol-bytes-');
    store = join(work, 'store');
    ref = join(work, 'ref');
    byteTree(ref);
    cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'deb');
    cowshedOk(store, 'create', '--name', 'prep', 'deb');
    const root = lastLine(cowshedOk(store, 'mount', 'prep'));
    execFileSync('cp', ['-a', '-T', ref, join(root, 'srv', 'bytes')]);
    mkdirSync(at(root, `srv/${CAFE}`));
    writeFileSync(at(root, `srv/${CAFE}/x`), 'x\n');
    symlinkSync(B(CAFE), at(root, 'srv/cafe-link'));
    mkdirSync(at(root, 'srv/d\xe9j\xe0'));
    symlinkSync(B('d\xe9j\xe0'), at(root, 'srv/lat'));
    cowshedOk(store, 'commit', 'prep', 'bytes');
    cowshedOk(store, 'rm', 'prep');
  });
  after(() => { if (work) removeTree(work); });

  test('copy-up: the volume holds exactly the image directory, names as bytes', async () => {
    const r = cowshed(store, 'run', '--rm', '-v', 'bv:/srv/bytes', 'bytes', '--', 'true');
    assert.equal(r.status, 0, r.stderr);
    const diffs = compareTrees(await listTree(ref, { bytes: true }), await listTree(mountpoint(store, 'bv'), { bytes: true }), { ignoreRoot: true });
    assert.deepEqual(diffs, [], diffs.join('\n'));
  });

  test('a destination through an image symlink: to a UTF-8 name it mounts there; to a name that is not UTF-8 it is refused in one line', () => {
    const ok = cowshed(store, 'run', '--rm', '-v', 'cv:/srv/cafe-link', 'bytes', '--', 'cat', '/srv/café/x');
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout, 'x\n');
    assert.equal(readFileSync(join(mountpoint(store, 'cv'), 'x'), 'utf8'), 'x\n', 'copied up from /srv/café');
    const bad = cowshed(store, 'run', '--rm', '-v', 'lv:/srv/lat', 'bytes', '--', 'true');
    assert.notEqual(bad.status, 0, 'mounted at a mangled name');
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /\/srv\/lat resolves in the container to "\/srv\/d\\xe9j\\xe0", a name that is not UTF-8/);
  });

  test('diff leaves out what is below a UTF-8 destination', () => {
    cowshedOk(store, 'run', '--name', 'w', '-v', `dv:/srv/${'café'}`, 'bytes', '--', 'true');
    const root = lastLine(cowshedOk(store, 'mount', 'w'));
    writeFileSync(at(root, `srv/${CAFE}/below`), 'hidden by the volume\n');
    writeFileSync(at(root, 'srv/caf\xe9-beside'), 'a change\n');
    cowshedOk(store, 'umount', 'w');
    const diff = JSON.parse(cowshedOk(store, 'diff', '--json', 'w')) as Array<{ path: string; pathBytes?: string }>;
    const paths = diff.map((d) => (d.pathBytes ? Buffer.from(d.pathBytes, 'base64') : Buffer.from(d.path, 'utf8')).toString('latin1'));
    assert.ok(paths.includes('/srv/caf\xe9-beside'), JSON.stringify(diff));
    assert.ok(!paths.includes(`/srv/${CAFE}/below`), `below the volume: ${JSON.stringify(diff)}`);
    cowshedOk(store, 'rm', 'w');
  });

  test('df counts files whose names are not UTF-8', () => {
    cowshedOk(store, 'volume', 'create', 'sized');
    writeFileSync(at(mountpoint(store, 'sized'), 'caf\xe9'), Buffer.alloc(3000, 1));
    writeFileSync(at(mountpoint(store, 'sized'), 'plain'), Buffer.alloc(1000, 1));
    const df = JSON.parse(cowshedOk(store, 'df', '--json')) as { volumes: { volumes: Array<{ name: string; size: number }> } };
    assert.equal(df.volumes.volumes.find((v) => v.name === 'sized')?.size, 4000);
  });
});
