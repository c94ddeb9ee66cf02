// fs-verity digests of a directory's files, and their copies into a digest
// store, for `composefs create DIR` (treeFromDirectory). Synchronous and
// self-contained so that the same code runs on the main thread and in the
// hashing worker (hash-worker.ts): each thread reads every file into one
// reused buffer (no garbage per file), hashes it, and writes the object from
// that same buffer when the store lacks it.
import { closeSync, constants, copyFileSync, existsSync, fstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { FsVerityHasher, fsverityDigest } from './fsverity.ts';
import { escapeName } from '../util/names.ts';

/** Files up to this size are read whole (and written to the store from memory); larger ones are streamed. */
export const WHOLE_READ_MAX = 8 << 20;
const STREAM_CHUNK = 1 << 20;

/** A failure with the errno-like code the caller maps to a CowshedError (workers pass plain data). */
export interface HashFailure { code: 'ENOENT' | 'EINVAL' | 'ENOSPC'; message: string }

export class FileHasher {
  private buf = Buffer.allocUnsafe(1 << 16);
  private readonly madeDirs = new Set<string>();
  private readonly store: string | undefined;
  constructor(store?: string) { this.store = store; }

  /** The fs-verity digest of the file at `path` (expected `size` bytes), copied into the store if it has none. */
  hash(path: Buffer, size: number): Buffer {
    const fd = openSync(path, 'r');
    try {
      if (size > WHOLE_READ_MAX) return this.hashStreamed(fd, path, size);
      if (this.buf.length < size) this.buf = Buffer.allocUnsafe(Math.max(size, this.buf.length * 2));
      const data = this.buf.subarray(0, size);
      let got = 0;
      while (got < size) {
        const n = readSync(fd, data, got, size - got, got);
        if (n === 0) throw failure('EINVAL', `${show(path)}: file shrank while reading`);
        got += n;
      }
      if (readSync(fd, this.buf, 0, 1, size) !== 0) throw failure('EINVAL', `${show(path)}: file grew while reading`);
      const digest = fsverityDigest(data);
      if (this.store) this.storeObject(digest, (tmp) => { writeFileSync(tmp, data, { mode: 0o644 }); });
      return digest;
    } finally {
      closeSync(fd);
    }
  }

  private hashStreamed(fd: number, path: Buffer, size: number): Buffer {
    if (this.buf.length < STREAM_CHUNK) this.buf = Buffer.allocUnsafe(STREAM_CHUNK);
    const h = new FsVerityHasher();
    let pos = 0;
    for (;;) {
      const n = readSync(fd, this.buf, 0, STREAM_CHUNK, pos);
      if (n === 0) break;
      h.update(this.buf.subarray(0, n));
      pos += n;
    }
    if (pos !== size || Number(fstatSync(fd).size) !== size) throw failure('EINVAL', `${show(path)}: file changed size while reading`);
    const digest = h.digest();
    // Reflink where the filesystem can (a copy otherwise), as mkcomposefs does.
    if (this.store) this.storeObject(digest, (tmp) => { copyFileSync(path, tmp, constants.COPYFILE_FICLONE); });
    return digest;
  }

  /** Writes the object (XX/<62 hex>) through a temporary name, once. */
  private storeObject(digest: Buffer, write: (tmp: string) => void): void {
    const hex = digest.toString('hex');
    const dir = `${this.store}/${hex.slice(0, 2)}`;
    const dst = `${dir}/${hex.slice(2)}`;
    if (existsSync(dst)) return;
    if (!this.madeDirs.has(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      this.madeDirs.add(dir);
    }
    const tmp = `${dir}/.${randomBytes(6).toString('hex')}.tmp`;
    try {
      write(tmp);
      renameSync(tmp, dst);
    } catch (e) {
      rmSync(tmp, { force: true });
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') throw failure('ENOSPC', `not enough space writing ${dst}`);
      throw failure('EINVAL', `cannot write ${dst}: ${(e as Error).message}`);
    }
  }
}

const show = (p: Buffer): string => escapeName(p.toString('latin1'));

const FAILURE = Symbol('hash failure');
function failure(code: HashFailure['code'], message: string): Error {
  return Object.assign(new Error(message), { code, [FAILURE]: true });
}

/** A thrown value as plain data (it may cross a thread boundary). */
export function asFailure(e: unknown, path: Buffer): HashFailure {
  const err = e as NodeJS.ErrnoException & { [FAILURE]?: boolean };
  if (err?.[FAILURE]) return { code: err.code as HashFailure['code'], message: err.message };
  return { code: err?.code === 'ENOENT' ? 'ENOENT' : 'EINVAL', message: `cannot read ${show(path)}: ${err?.message ?? String(e)}` };
}
