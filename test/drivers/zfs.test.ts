// The zfs driver on zfs-fuse (this kernel has no ZFS module): a pool on a
// file, started and stopped by the test. zfs-fuse stores no xattrs, so images
// with xattrs are refused; the Debian image has none and works end to end.
//
// zfs-fuse itself can deadlock (seen once in CI: every FUSE request waits
// forever, and whoever made one sleeps in the kernel, this process too). A
// watchdog in a process of its own kills zfs-fuse after WATCHDOG_S seconds;
// the tests then report a skip naming zfs-fuse, not a hang or a failure.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine, debianFixture } from '../helpers/cli.ts';
import { buildEdgeImage } from '../fixtures/edge-image.ts';

const POOL = `cowshedtest${process.pid}`;
const WATCHDOG_S = 240; // the whole file takes ~20 s

describe('zfs driver (zfs-fuse)', () => {
  let work: string;
  let daemon: ChildProcess | undefined;
  let store: string;
  let watchdog: ChildProcess | undefined;
  let hungMarker: string;
  /** Runs a test body; if the watchdog had to kill zfs-fuse, a skip that says so instead of its error. */
  const guarded = (body: () => void | Promise<void>) => async (t: { skip(msg: string): void }): Promise<void> => {
    try { await body(); } catch (e) {
      if (!existsSync(hungMarker)) throw e;
      t.skip(`zfs-fuse stopped answering FUSE requests (a zfs-fuse deadlock); the watchdog killed it after ${WATCHDOG_S} s`);
    }
  };

  before(async () => {
    work = tempDir();
    hungMarker = join(work, 'zfs-fuse-hung');
    watchdog = spawn('sh', ['-c', `sleep ${WATCHDOG_S}; touch ${hungMarker}; pkill -9 -x zfs-fuse`], { stdio: 'ignore', detached: true });
    let running = '';
    try { running = execFileSync('pgrep', ['-x', 'zfs-fuse'], { encoding: 'utf8' }).trim(); } catch { running = ''; }
    if (!running) {
      daemon = spawn('zfs-fuse', ['--no-daemon'], { stdio: 'ignore' });
      for (let i = 0; i < 50 && !existsSync('/var/run/zfs/zfs_socket'); i++) await new Promise((r) => setTimeout(r, 100));
    }
    execFileSync('truncate', ['-s', '2G', join(work, 'pool.img')]);
    execFileSync('zpool', ['create', '-f', '-m', join(work, 'pool'), POOL, join(work, 'pool.img')], { stdio: 'ignore' });
    store = join(work, 'pool', 'store');
  });

  after(() => {
    try { process.kill(-watchdog!.pid!, 'SIGKILL'); } catch { /* fired already */ }
    try { execFileSync('zpool', ['destroy', '-f', POOL], { stdio: 'ignore', timeout: 60_000 }); } catch { /* reported by the tests */ }
    if (daemon?.pid) daemon.kill('SIGTERM');
    // A zfs-fuse the watchdog killed leaves its kstat mount behind, dead.
    if (existsSync(hungMarker)) try { execFileSync('umount', ['-l', '/zfs-kstat'], { stdio: 'ignore' }); } catch { /* not mounted */ }
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
    const datasets = execFileSync('zfs', ['list', '-H', '-o', 'name', '-r', POOL], { encoding: 'utf8' });
    assert.doesNotMatch(datasets, /cowshed-ctr-/);
    assert.equal(cowshed(store, 'fsck').status, 0);
  }));

  test('an image with xattrs is refused with a clear error', guarded(async () => {
    const layout = join(work, 'edge');
    await buildEdgeImage(layout);
    cowshedOk(store, 'import', `oci:${layout}:edge`, 'edge');
    const r = cowshed(store, 'create', 'edge');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^cowshed: zfs-fuse stores no extended attributes, and this image has some/);
    assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), '');
  }));

  test('a store outside a ZFS dataset is refused', () => {
    const r = cowshed(join(work, 'elsewhere'), '--driver', 'zfs', 'images');
    assert.match(r.stderr, /^cowshed: the zfs driver needs the store inside a mounted ZFS dataset/);
  });
});
