// Small filesystem helpers shared by the store: durable atomic writes and
// filesystem-wide syncs.
import { closeSync, fsyncSync, openSync, renameSync, writeSync, mkdirSync, rmSync, statfsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { crypto } from './builtins.ts';
import { CowshedError, errno } from './errors.ts';

/** Write a file so that it appears whole or not at all: temp file in tmpDir, fsync, rename. */
export function writeFileAtomic(path: string, data: Uint8Array | string, tmpDir = dirname(path)): void {
  const tmp = join(tmpDir, `.${crypto().randomBytes(8).toString('hex')}.tmp`);
  try {
    const fd = openSync(tmp, 'wx', 0o644);
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw asSpaceError(e, path);
  }
}

/** syncfs(2) on the filesystem holding path (Node has no binding; coreutils' sync -f is one). */
export function syncFilesystem(path: string): void {
  execFileSync('sync', ['-f', path], { stdio: 'ignore' });
}

/** fsync a file or directory by path. */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

export function ensureDir(path: string, mode = 0o700): void {
  mkdirSync(path, { recursive: true, mode });
}

export function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
}

/** Turn ENOSPC/EDQUOT into the typed out-of-space error; pass everything else through. */
export function asSpaceError(e: unknown, what: string): unknown {
  const c = errno(e);
  if (c === 'ENOSPC' || c === 'EDQUOT') return new CowshedError('ENOSPC', `not enough space writing ${what}`, { cause: e });
  return e;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}
