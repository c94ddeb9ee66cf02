// The zfs driver on zfs-fuse (this kernel has no ZFS module): a pool on a
// file, started and stopped by the test (test/helpers/zfs-pool.ts, with its
// watchdog against a zfs-fuse deadlock). zfs-fuse cannot hold xattrs,
// sub-second times, times past 2038 or ids of 2^31 and above, so images with
// any are refused; the Debian image has none and works end to end.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lchownSync, mkdirSync, readFileSync, utimesSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine, debianFixture } from '../helpers/cli.ts';
import { buildEdgeImage } from '../fixtures/edge-image.ts';
import { startZfsPool, type ZfsPool } from '../helpers/zfs-pool.ts';

describe('zfs driver (zfs-fuse)', () => {
  let work: string;
  let pool: ZfsPool;
  let store: string;
  const guarded = (body: () => void | Promise<void>) => (t: { skip(msg: string): void }): Promise<void> => pool.guarded(body)(t);

  before(async () => {
    work = tempDir();
    pool = await startZfsPool(work, { sizeMiB: 2048, watchdogS: 600 }); // the whole file takes ~20 s alone, minutes on a busy machine
    store = join(pool.mountpoint, 'store');
  });

  after(async () => {
    await pool?.destroy();
    removeTree(work);
  });

  test('containers are clones: create, change, diff, commit, remove', guarded(() => {
    cowshedOk(store, '--driver', 'zfs', 'import', `oci:${debianFixture().layout}:v1`, 'debian:v1');
    cowshedOk(store, 'create', '--name', 'z1', 'debian:v1');
    cowshedOk(store, 'create', '--name', 'z2', 'debian:v1');
    const root = lastLine(cowshedOk(store, 'mount', 'z1'));
    assert.match(readFileSync(join(root, 'etc', 'debian_version'), 'utf8'), /^12\./);
    writeFileSync(join(root, 'hello'), 'hi\n');
    rmSync(join(root, 'etc', 'motd'));
    assert.deepEqual(cowshedOk(store, 'diff', 'z1').trim().split('\n'), ['C /etc', 'D /etc/motd', 'A /hello']);
    assert.equal(cowshedOk(store, 'diff', 'z2').trim(), '', 'clones are independent');
    cowshedOk(store, 'commit', 'z1', 'debian:z');
    assert.deepEqual(cowshedOk(store, 'diff', 'debian:v1', 'debian:z').trim().split('\n'), ['C /etc', 'D /etc/motd', 'A /hello']);
    cowshedOk(store, 'rm', 'z1', 'z2');
    const datasets = execFileSync('zfs', ['list', '-H', '-o', 'name', '-r', pool.name], { encoding: 'utf8' });
    assert.doesNotMatch(datasets, /cowshed-ctr-/);
    assert.equal(cowshed(store, 'fsck').status, 0);
  }));

  test('an image with xattrs is refused with a clear error', guarded(async () => {
    const layout = join(work, 'edge');
    await buildEdgeImage(layout);
    cowshedOk(store, 'import', `oci:${layout}:edge`, 'edge');
    const r = cowshed(store, 'create', 'edge');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^cowshed: zfs-fuse stores no extended attributes, and this image has some \(\/.*: .*\); use another driver\n$/);
    assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), '');
  }));

  test('sub-second times, times past 2038 and ids of 2^31 and above are refused, naming the entry, not changed', guarded(() => {
    const cases: Array<[string, (f: string) => void, RegExp]> = [
      ['nsec', (f) => utimesSync(f, 1_700_000_000.5, 1_700_000_000.5), /^cowshed: zfs-fuse keeps whole-second times only, and this image has finer ones \(\/f: mtime 1700000000\.500000000\); use another driver\n$/],
      ['y2038', (f) => utimesSync(f, 2 ** 31, 2 ** 31), /^cowshed: zfs-fuse keeps times within a signed 32-bit second count only \(1901 to 2038\), and this image has one outside it \(\/f: mtime 2147483648\); use another driver\n$/],
      ['uid', (f) => lchownSync(f, 2 ** 31, 0), /^cowshed: zfs-fuse refuses owner ids of 2\^31 and above, and this image has one \(\/f: 2147483648:0\); use another driver\n$/],
    ];
    for (const [name, make, message] of cases) {
      const dir = join(work, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'f'), `${name}\n`);
      utimesSync(join(dir, 'f'), 1_700_000_000, 1_700_000_000);
      make(join(dir, 'f'));
      utimesSync(dir, 1_700_000_000, 1_700_000_000);
      execFileSync('tar', ['--format=pax', '--numeric-owner', '-C', dir, '-cf', `${dir}.tar`, '.']);
      cowshedOk(store, 'import', `tar:${dir}.tar`, name);
      const r = cowshed(store, 'create', name);
      assert.notEqual(r.status, 0, name);
      assert.match(r.stderr, message);
    }
    assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), '');
    assert.doesNotMatch(execFileSync('zfs', ['list', '-H', '-o', 'name', '-r', pool.name], { encoding: 'utf8' }), /cowshed-ctr-/);
  }));

  test('a store outside a ZFS dataset is refused', () => {
    const r = cowshed(join(work, 'elsewhere'), '--driver', 'zfs', 'images');
    assert.match(r.stderr, /^cowshed: the zfs driver needs the store inside a mounted ZFS dataset/);
  });
});
