// A ZFS pool on a sparse file for a test, on zfs-fuse (this kernel has no ZFS
// module): the daemon is started if none runs (and stopped again), the pool
// created under the test's work directory and destroyed at the end.
//
// zfs-fuse itself can deadlock (seen once in CI: every FUSE request waits
// forever, and whoever made one sleeps in the kernel, this process too). A
// watchdog in a process of its own kills that zfs-fuse (by its pid) after
// watchdogS seconds; `guarded` then turns the test's error into a skip naming
// zfs-fuse, not a hang or a failure.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface ZfsPool {
  name: string;
  /** Where the pool's root dataset is mounted. */
  mountpoint: string;
  /** Whether the watchdog had to kill zfs-fuse. */
  hung: () => boolean;
  /** Runs a test body; if the watchdog had to kill zfs-fuse, a skip that says so instead of its error. */
  guarded: (body: () => void | Promise<void>) => (t: { skip(msg: string): void }) => Promise<void>;
  /** Destroys the pool; stops zfs-fuse (and waits for it to exit) if this started it. */
  destroy: () => Promise<void>;
}

let seq = 0;

/** Mount points strictly below dir that are not ZFS datasets, the latest mounted first. */
function mountsBelow(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' '))
    .filter((f) => f[4]?.startsWith(dir + '/') && f[f.indexOf('-') + 1] !== 'fuse.zfs').map((f) => f[4]!)
    .reverse();
}

export async function startZfsPool(work: string, opts: { sizeMiB: number; watchdogS: number }): Promise<ZfsPool> {
  const name = `cowshedtest${process.pid}x${seq++}`;
  const hungMarker = join(work, `${name}-zfs-fuse-hung`);
  let running = '';
  try { running = execFileSync('pgrep', ['-x', '-o', 'zfs-fuse'], { encoding: 'utf8' }).trim(); } catch { running = ''; }
  const daemon: ChildProcess | undefined = running ? undefined : spawn('zfs-fuse', ['--no-daemon'], { stdio: 'ignore' });
  if (daemon) for (let i = 0; i < 50 && !existsSync('/var/run/zfs/zfs_socket'); i++) await new Promise((r) => setTimeout(r, 100));
  const pid = daemon ? String(daemon.pid) : running;
  const watchdog = spawn('sh', ['-c', `sleep ${opts.watchdogS}; touch '${hungMarker}'; kill -9 ${pid}`], { stdio: 'ignore', detached: true });
  const img = join(work, `${name}.img`);
  const mountpoint = join(work, name);
  execFileSync('truncate', ['-s', `${opts.sizeMiB}M`, img]);
  execFileSync('zpool', ['create', '-f', '-m', mountpoint, name, img], { stdio: 'ignore' });

  return {
    name,
    mountpoint,
    hung: () => existsSync(hungMarker),
    guarded: (body) => async (t) => {
      try { await body(); } catch (e) {
        if (!existsSync(hungMarker)) throw e;
        t.skip(`zfs-fuse stopped answering FUSE requests (a zfs-fuse deadlock); the watchdog killed it after ${opts.watchdogS} s`);
      }
    },
    async destroy() {
      try { process.kill(-watchdog.pid!, 'SIGKILL'); } catch { /* fired already */ }
      // The store's own mounts (EROFS images, overlays) keep the pool busy: they go first.
      // Not lazily: a lazily unmounted EROFS image keeps its loop device, and so its file in the pool, open.
      for (const m of mountsBelow(mountpoint)) {
        try { execFileSync('umount', [m], { stdio: 'ignore' }); } catch { try { execFileSync('umount', ['-l', m], { stdio: 'ignore' }); } catch { /* gone */ } }
      }
      for (let attempt = 1; ; attempt++) {
        try { execFileSync('zpool', ['destroy', '-f', name], { stdio: 'pipe', timeout: 60_000 }); break; } catch (e) {
          const msg = String((e as { stderr?: Buffer }).stderr ?? e).trim();
          if (/busy/.test(msg) && attempt < 10) { execFileSync('sleep', ['1']); continue; }
          // Left behind, the pool would stay in zfs-fuse's cache as FAULTED once its file is gone.
          process.stderr.write(`zpool destroy ${name}: ${msg}\n`);
          break;
        }
      }
      if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
        const exited = new Promise((r) => daemon.once('exit', r));
        daemon.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      }
      // A zfs-fuse the watchdog killed leaves its kstat mount behind, dead.
      if (existsSync(hungMarker)) try { execFileSync('umount', ['-l', '/zfs-kstat'], { stdio: 'ignore' }); } catch { /* not mounted */ }
    },
  };
}
