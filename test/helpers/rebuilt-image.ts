// Two versions of a "rebuilt" image, derived from the Debian fixture at run
// time (less apt's caches): each is one full layer (as a CI rebuild makes), the second with
// about 1% of the regular files changed by a small edit (one byte flipped in
// the middle). Used by the partial-pull test and benchmark.
import { execFileSync } from 'node:child_process';
import { mkdirSync, openSync, readSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface RebuiltVersions {
  v1: string;
  v2: string;
  /** Paths (relative, "./…") of the files edited in v2. */
  changed: string[];
  /** Regular files in the tree. */
  files: number;
}

const tarArgs = (root: string, out: string): string[] => ['--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name', '-C', root, '-cf', out, '.'];

export function rebuiltVersions(rootfsTar: string, work: string, share = 0.01): RebuiltVersions {
  const root = join(work, 'rebuilt-rootfs');
  mkdirSync(root, { recursive: true });
  // Without apt's package lists and downloaded .debs, as published images are
  // (85 of the fixture's 206 MB, which every step below would read again).
  execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '--wildcards',
    '--exclude=./var/lib/apt/lists/*', '--exclude=./var/cache/apt/archives/*.deb', '-xpf', rootfsTar, '-C', root]);
  const v1 = join(work, 'rebuilt-v1.tar');
  execFileSync('tar', tarArgs(root, v1));
  const list = execFileSync('find', ['.', '-type', 'f', '-size', '+0'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n').filter(Boolean).sort();
  const every = Math.max(1, Math.round(1 / share));
  const changed: string[] = [];
  for (let i = every >> 1; i < list.length; i += every) {
    const rel = list[i]!;
    const p = join(root, rel);
    const size = statSync(p).size;
    const fd = openSync(p, 'r+');
    try {
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, size >> 1);
      b[0] ^= 0x20;
      writeSync(fd, b, 0, 1, size >> 1);
    } finally {
      closeSync(fd);
    }
    changed.push(rel);
  }
  const v2 = join(work, 'rebuilt-v2.tar');
  execFileSync('tar', tarArgs(root, v2));
  execFileSync('rm', ['-rf', root]);
  return { v1, v2, changed, files: list.length };
}
