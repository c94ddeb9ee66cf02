// A filesystem of its own for a store, on a sparse file through a loop
// device: btrfs for the btrfs driver, xfs with reflink=1 for vfs (so its
// copies are reflinks). Set up and torn down explicitly (losetup -f, then
// umount and losetup -d), so nothing is left attached when a run throws.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';

export type LoopKind = 'btrfs' | 'xfs';

export interface LoopFs { dir: string; device: string; image: string; destroy(): void }

const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** A `size` sparse file formatted as `kind`, mounted at `dir` (made here). */
export function makeLoopFs(dir: string, kind: LoopKind, size = '2G'): LoopFs {
  const image = `${dir}.img`;
  run('truncate', ['-s', size, image]);
  const device = run('losetup', ['-f', '--show', image]).trim();
  const fs: LoopFs = {
    dir, device, image,
    destroy() {
      // Whatever a killed command left mounted below the filesystem goes first.
      const below = run('findmnt', ['-rn', '-o', 'TARGET']).split('\n').filter((m) => m.startsWith(dir + '/')).sort((a, b) => b.length - a.length);
      for (const m of below) { try { run('umount', [m]); } catch { run('umount', ['-l', m]); } }
      try { run('umount', [dir]); } catch { try { run('umount', ['-l', dir]); } catch { /* not mounted */ } }
      try { run('losetup', ['-d', device]); } catch { /* already detached */ }
      rmSync(image, { force: true });
    },
  };
  try {
    if (kind === 'btrfs') run('mkfs.btrfs', ['-q', '-f', device]);
    else run('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', device]);
    mkdirSync(dir, { recursive: true });
    run('mount', [device, dir]);
  } catch (e) {
    fs.destroy();
    throw e;
  }
  return fs;
}

/**
 * The same with `mount -o loop` (autoclear): for tests whose removeTree()
 * of a parent unmounts it, the loop device goes with the unmount.
 */
export function loopFs(dir: string, kind: LoopKind, size = '2G'): string {
  const img = `${dir}.img`;
  run('truncate', ['-s', size, img]);
  if (kind === 'btrfs') run('mkfs.btrfs', ['-q', '-f', img]);
  else run('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', img]);
  mkdirSync(dir, { recursive: true });
  run('mount', ['-o', 'loop', img, dir]);
  return dir;
}
