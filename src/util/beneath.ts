// Reading a container's files from the host without being led out of it.
// A container's own processes can replace any of its directories with a
// symlink (to /etc, say, or to the store) at any moment; a plain path read
// from the host would then follow it and read the host. Node has no openat,
// so each directory is opened relative to the one before it through
// /proc/self/fd/N (the kernel resolves that to the open directory itself),
// refusing symlinks at every step: paths handed out by `path()` have every
// parent pinned, and only their last component is looked up by name.
// Relative paths and names are binary strings (util/names.ts): every fs call
// gets them as bytes.
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, type BigIntStats } from 'node:fs';
import { CowshedError, errno } from './errors.ts';
import { escapeName, fsPath } from './names.ts';

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
// O_NONBLOCK: a regular file swapped for a fifo must not hang the open.
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
/** Directory descriptors kept open between batches (the rest are reopened on demand). */
const KEEP_OPEN = 256;

export class BeneathRoot {
  readonly root: string;
  private readonly rootFd: number;
  private readonly dirs = new Map<string, number>();
  private readonly what: string;

  /** `what` names the tree in errors ("container web"). */
  constructor(root: string, what: string) {
    this.root = root;
    this.what = what;
    this.rootFd = openSync(root, DIR_FLAGS);
  }

  /**
   * A path for `rel` (relative to the root, '/'-separated, leading '/'
   * allowed) whose parent directories are pinned: lstat, readlink and
   * getfattr -h on it see the entry below the root or fail.
   */
  path(rel: string, viaPid = false): string {
    const parts = rel.split('/').filter((c) => c !== '');
    const name = parts.pop();
    if (name === undefined || name === '..' || name === '.') return this.fdPath(this.rootFd, viaPid);
    return `${this.fdPath(this.dirFd(parts), viaPid)}/${name}`;
  }

  /** lstat of the entry at `rel`; one that vanished is a change under way. */
  lstat(rel: string): BigIntStats {
    try {
      return lstatSync(fsPath(this.path(rel)), { bigint: true });
    } catch (e) {
      if (e instanceof CowshedError) throw e;
      throw this.changed(rel, `it cannot be read (${errno(e) ?? String(e)})`, e);
    }
  }

  readlink(rel: string): string {
    try {
      return readlinkSync(fsPath(this.path(rel)), { encoding: 'latin1' });
    } catch (e) {
      throw this.changed(rel, `it cannot be read (${errno(e) ?? String(e)})`, e);
    }
  }

  /**
   * Opens the regular file at `rel` for reading, and checks it is the
   * inode `expected` (from an lstat of `path(rel)`): a file swapped after
   * that lstat is refused rather than read.
   */
  openFile(rel: string, expected: BigIntStats): number {
    const p = this.path(rel);
    let fd: number;
    try {
      fd = openSync(fsPath(p), FILE_FLAGS);
    } catch (e) {
      throw this.changed(rel, `it cannot be opened (${errno(e) ?? String(e)})`, e);
    }
    const st = fstatSync(fd, { bigint: true });
    if (!st.isFile() || st.ino !== expected.ino || st.dev !== expected.dev) {
      closeSync(fd);
      throw this.changed(rel, 'it was replaced');
    }
    return fd;
  }

  /** Closes directory descriptors beyond the few kept for the next batch. */
  trim(): void {
    if (this.dirs.size <= KEEP_OPEN) return;
    for (const fd of this.dirs.values()) closeSync(fd);
    this.dirs.clear();
  }

  close(): void {
    for (const fd of this.dirs.values()) closeSync(fd);
    this.dirs.clear();
    closeSync(this.rootFd);
  }

  private fdPath(fd: number, viaPid: boolean): string {
    // Another process (getfattr) reaches our descriptors by our pid, not "self".
    return `/proc/${viaPid ? process.pid : 'self'}/fd/${fd}`;
  }

  private dirFd(parts: string[]): number {
    if (parts.length === 0) return this.rootFd;
    const key = parts.join('/');
    const known = this.dirs.get(key);
    if (known !== undefined) return known;
    const name = parts[parts.length - 1]!;
    if (name === '..' || name === '.') throw this.changed(key, 'its path is not plain');
    const parent = this.dirFd(parts.slice(0, -1));
    let fd: number;
    try {
      fd = openSync(fsPath(`${this.fdPath(parent, false)}/${name}`), DIR_FLAGS);
    } catch (e) {
      const code = errno(e);
      // ELOOP: a symlink where a directory was; ENOTDIR: something else is.
      throw this.changed(key, code === 'ELOOP' ? 'it is now a symlink' : code === 'ENOTDIR' ? 'it is no longer a directory' : `it cannot be opened (${code ?? String(e)})`, e);
    }
    this.dirs.set(key, fd);
    return fd;
  }

  /** The error for `rel` having changed under the reader. */
  changed(rel: string, why: string, cause?: unknown): CowshedError {
    return new CowshedError('EBUSY', `${this.what} changed while it was read: /${escapeName(rel.replace(/^\/+/, ''))}: ${why}; stop the container and try again`, { cause });
  }
}
