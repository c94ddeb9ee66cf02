// The in-memory filesystem tree every part of cowshed speaks: import builds
// it from layers or a directory, the composefs writer serialises it, the
// EROFS reader and the dump parser rebuild it, diff compares two of them.
//
// Hardlinks are one FsNode object reachable under several names: identity
// is the link. Directories own their children in `children`.

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export interface FsNode {
  /** st_mode: file type bits and permission bits (incl. setuid/setgid/sticky). */
  mode: number;
  uid: number;
  gid: number;
  /** Link count as written to the image (directories: 2 + subdirectories). */
  nlink: number;
  /** Device number (Linux encoding, major/minor via makedev) for char/block devices. */
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Content length for regular files; 0 for others (symlinks: target length is derived). */
  size: number;
  /** Symlink target (a binary string: one char per byte, like every name here). */
  target?: string;
  /** Content of a small regular file kept inside the metadata image. */
  inline?: Uint8Array;
  /** fs-verity SHA-256 digest (32 bytes) of a regular file's content. */
  digest?: Uint8Array;
  /** Where overlayfs finds the content (`trusted.overlay.redirect`), e.g. "ab/cdef…". */
  payload?: string;
  /** Extended attributes: full key ("user.foo", "security.capability") to raw bytes. */
  xattrs: Map<string, Uint8Array>;
  /** Directory entries, by name (binary strings; no "." or ".."). */
  children?: Map<string, FsNode>;
}

export const fileType = (n: FsNode): number => n.mode & S_IFMT;
export const isDir = (n: FsNode): boolean => (n.mode & S_IFMT) === S_IFDIR;
export const isReg = (n: FsNode): boolean => (n.mode & S_IFMT) === S_IFREG;
export const isSymlink = (n: FsNode): boolean => (n.mode & S_IFMT) === S_IFLNK;

const KNOWN_TYPES = new Set([S_IFREG, S_IFDIR, S_IFLNK, S_IFBLK, S_IFCHR, S_IFSOCK, S_IFIFO]);
/** Whether a mode's type bits name one of the seven Linux file types. */
export const isKnownType = (mode: number): boolean => KNOWN_TYPES.has(mode & S_IFMT);

export function newNode(mode: number, init: Partial<FsNode> = {}): FsNode {
  const n: FsNode = {
    mode, uid: 0, gid: 0, nlink: 1, rdev: 0, mtimeSec: 0, mtimeNsec: 0, size: 0,
    xattrs: new Map(), ...init,
  };
  if ((mode & S_IFMT) === S_IFDIR && !n.children) n.children = new Map();
  return n;
}

/** Linux dev_t encoding (glibc makedev / major / minor), for majors below 4096. */
export function makedev(maj: number, min: number): number {
  return ((min & 0xff) | ((maj & 0xfff) << 8) | ((min & ~0xff) << 12)) >>> 0;
}
export function major(dev: number): number {
  return (dev >>> 8) & 0xfff;
}
export function minor(dev: number): number {
  return ((dev & 0xff) | ((dev >>> 12) & ~0xff)) >>> 0;
}

/** Depth-first walk yielding every (path, node) pair; paths are "/a/b" (root is "/"). */
export function* walk(root: FsNode, prefix = ''): Generator<[string, FsNode]> {
  yield [prefix === '' ? '/' : prefix, root];
  if (!root.children) return;
  const names = [...root.children.keys()].sort(compareNames);
  for (const name of names) {
    const child = root.children.get(name)!;
    const p = `${prefix}/${name}`;
    if (child.children) yield* walk(child, p);
    else yield [p, child];
  }
}

/**
 * Byte order of names, the order EROFS directories use. Names are binary
 * strings (one char per byte, see util/names.ts), so this is plain string
 * comparison.
 */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Where a hardlinked file was defined, when that is not simply its first
 * name in name order: a composefs dump defines it on one line and names it
 * again with `@` lines, and mkcomposefs places the inode where the defining
 * line put it. Set by the dump parser, read by the EROFS writer.
 */
export const hardlinkPrimary = new WeakMap<FsNode, { dir: FsNode; name: string }>();
