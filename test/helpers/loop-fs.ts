// A loop-mounted filesystem made for one test (btrfs for the btrfs driver,
// xfs with reflink=1 for vfs reflinks). removeTree() of a parent unmounts it;
// the loop device goes with the unmount (mount -o loop sets autoclear).
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

export function loopFs(dir: string, kind: 'btrfs' | 'xfs', size = '2G'): string {
  const img = `${dir}.img`;
  execFileSync('truncate', ['-s', size, img]);
  execFileSync(kind === 'btrfs' ? 'mkfs.btrfs' : 'mkfs.xfs', kind === 'btrfs' ? ['-q', '-f', img] : ['-q', '-f', '-m', 'reflink=1', img]);
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-o', 'loop', img, dir]);
  return dir;
}
