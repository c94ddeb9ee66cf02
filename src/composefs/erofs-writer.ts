// The composefs EROFS image writer: byte-identical to mkcomposefs 1.0.x
// (libcomposefs lcfs-writer-erofs.c). The layout rules that matter for byte
// identity are kept in the same order as upstream: overlay xattr rewriting,
// breadth-first inode order, shared xattr selection and order, tail packing
// and padding, chunk-based stubs for external files. Each step says which
// upstream function it mirrors.
import { escapeName } from '../util/names.ts';
import {
  type FsNode, S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, S_IFSOCK, S_IFIFO, compareNames, hardlinkPrimary, isKnownType,
} from '../tree/node.ts';
import { CowshedError } from '../util/errors.ts';
import { INLINE_CONTENT_MAX, PATH_MAX, NAME_MAX, XATTR_NAME_MAX, XATTR_VALUE_MAX } from './dump.ts';

export const COMPOSEFS_MAGIC = 0xd078629a;
export const COMPOSEFS_HEADER_VERSION = 1;
export const COMPOSEFS_VERSION_MAX = 1;
export const EROFS_MAGIC = 0xe0f5e1e2;
export const EROFS_SUPER_OFFSET = 1024;
export const EROFS_SUPER_SIZE = 128;
export const BLKSIZ = 4096;
export const BLKSIZ_BITS = 12;
export const SLOTSIZE = 32;
export const COMPACT_INODE_SIZE = 32;
export const EXTENDED_INODE_SIZE = 64;
export const XATTR_IBODY_HEADER_SIZE = 12;
export const XATTR_ENTRY_SIZE = 4;
export const DIRENT_SIZE = 12;
export const FEATURE_COMPAT_MTIME = 0x2;
export const FEATURE_COMPAT_XATTR_FILTER = 0x4;
export const XATTR_FILTER_SEED = 0x25bbe08f;
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const MAX_NONINLINE_CHUNKS = 1024;
export const NULL_ADDR = 0xffffffff;
export const FLAGS_HAS_ACL = 1;
/** Upper bound on shared xattr references per inode (EROFS_XATTR_LONG_PREFIX). */
const MAX_SHARED_PER_INODE = 0x80;

export const LAYOUT_FLAT_PLAIN = 0;
export const LAYOUT_FLAT_INLINE = 2;
export const LAYOUT_CHUNK_BASED = 4;

export const FT = { UNKNOWN: 0, REG: 1, DIR: 2, CHRDEV: 3, BLKDEV: 4, FIFO: 5, SOCK: 6, SYMLINK: 7 } as const;

/** Xattr name prefixes EROFS stores as an index (only these; order as upstream's match order). */
export const XATTR_PREFIXES: readonly [string, number][] = [
  ['user.', 1],
  ['system.posix_acl_access', 2],
  ['system.posix_acl_default', 3],
  ['trusted.', 4],
  ['security.', 6],
];
/** Index → prefix, for reading (index 5 is "lustre."). */
export const XATTR_PREFIX_BY_INDEX = ['', 'user.', 'system.posix_acl_access', 'system.posix_acl_default', 'trusted.', 'lustre.', 'security.'];

export const OVERLAY_PREFIX = 'trusted.overlay.';
/** Where a layer image names its parent: the EROFS superblock's uuid and volume_name, 32 bytes. */
export const LAYER_PARENT_OFFSET = 48;
export const OVERLAY_ESCAPE_PREFIX = 'trusted.overlay.overlay.';
export const XATTR_METACOPY = 'trusted.overlay.metacopy';
export const XATTR_REDIRECT = 'trusted.overlay.redirect';
export const XATTR_OPAQUE = 'trusted.overlay.opaque';
export const XATTR_ESCAPED_WHITEOUT = 'trusted.overlay.overlay.whiteout';
export const XATTR_ESCAPED_WHITEOUTS = 'trusted.overlay.overlay.whiteouts';
export const XATTR_ESCAPED_OPAQUE = 'trusted.overlay.overlay.opaque';
export const XATTR_USER_WHITEOUT = 'user.overlay.whiteout';
export const XATTR_USER_WHITEOUTS = 'user.overlay.whiteouts';
export const XATTR_USER_OPAQUE = 'user.overlay.opaque';

// --- xxh32 (the kernel's lib/xxhash.c), for the xattr name bloom filter ---
const P1 = 2654435761, P2 = 2246822519, P3 = 3266489917, P4 = 668265263, P5 = 374761393;
const rotl = (x: number, r: number): number => ((x << r) | (x >>> (32 - r))) >>> 0;
const mul = (a: number, b: number): number => Math.imul(a, b) >>> 0;
const round = (acc: number, input: number): number => mul(rotl((acc + mul(input, P2)) >>> 0, 13), P1);

export function xxh32(buf: Uint8Array, seed: number): number {
  const len = buf.length;
  let p = 0;
  let h: number;
  const le32 = (i: number): number => (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)) >>> 0;
  if (len >= 16) {
    const limit = len - 16;
    let v1 = (seed + P1 + P2) >>> 0, v2 = (seed + P2) >>> 0, v3 = seed >>> 0, v4 = (seed - P1) >>> 0;
    do {
      v1 = round(v1, le32(p)); p += 4;
      v2 = round(v2, le32(p)); p += 4;
      v3 = round(v3, le32(p)); p += 4;
      v4 = round(v4, le32(p)); p += 4;
    } while (p <= limit);
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) >>> 0;
  } else {
    h = (seed + P5) >>> 0;
  }
  h = (h + len) >>> 0;
  while (p + 4 <= len) {
    h = mul(rotl((h + mul(le32(p), P3)) >>> 0, 17), P4);
    p += 4;
  }
  while (p < len) {
    h = mul(rotl((h + mul(buf[p]!, P5)) >>> 0, 11), P1);
    p++;
  }
  h ^= h >>> 15; h = mul(h, P2);
  h ^= h >>> 13; h = mul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Split an xattr name into EROFS prefix index and the stored suffix. */
export function xattrIndex(key: Buffer): [number, Buffer] {
  for (const [prefix, index] of XATTR_PREFIXES) {
    if (key.length >= prefix.length && key.subarray(0, prefix.length).toString('latin1') === prefix) {
      return [index, key.subarray(prefix.length)];
    }
  }
  return [0, key];
}

const roundUp = (n: number, a: number): number => Math.ceil(n / a) * a;
/** Messages name paths, which are bytes: escaped so the error stays one readable line. */
const invalid = (msg: string): never => { throw new CowshedError('EINVAL', escapeName(msg)); };

/** One distinct xattr name in the image: its EROFS prefix index, stored suffix and bloom-filter bit, computed once. */
interface XKey { name: string; index: number; suffix: string; filterBit: number; pairs: Map<string, Pair> }
/** One distinct key/value pair: how many inodes carry it and, if shared, its offset in the shared area. */
interface Pair { key: XKey; value: string; count: number; offset: number }
/** A directory entry; `primary` when it is the inode's own (first) name, not ".", ".." or a later hardlink. */
interface Entry { name: string; node: WNode; primary: boolean }

/** A writer-private inode: a mutable copy of an FsNode (the caller's tree is never changed). */
interface WNode {
  mode: number; uid: number; gid: number; nlink: number; rdev: number;
  mtimeSec: number; mtimeNsec: number; size: number;
  /**
   * Names, targets, payloads and xattr values are binary strings (one char
   * per byte): values are compared, counted and written by the engine's
   * string code, and most are made from strings (redirects). Content is
   * bytes the caller owns, never written to.
   */
  target?: string; payload?: string; content?: Uint8Array; digest?: Uint8Array;
  /** [name, value, name, value, …] in name order: an inode has a few, kept sorted as they are set. */
  xattrs: string[];
  entries?: Entry[]; // sorted, "." and ".." included after rewriting
  parent: WNode;
  /** The name of the entry this inode was created from (its first name, depth-first); '' for the root. */
  name: string;
  /** Layer images (stacks): an overlay whiteout or opaque directory, written as overlayfs reads it, not escaped. */
  rawWhiteout?: boolean;
  rawOpaque?: boolean;
  // layout
  inodeNum: number; nid: number; nBlocks: number; tailSize: number; compact: boolean;
  sortedXattrs: Pair[]; xattrSize: number; ipad: number; isize: number;
}

function newWNode(mode: number, parent: WNode | undefined, name: string): WNode {
  const n: WNode = {
    mode, uid: 0, gid: 0, nlink: 1, rdev: 0, mtimeSec: 0, mtimeNsec: 0, size: 0,
    xattrs: [], parent: parent!, name,
    inodeNum: 0, nid: 0, nBlocks: 0, tailSize: 0, compact: false, sortedXattrs: [], xattrSize: 0, ipad: 0, isize: 0,
  };
  if (!parent) n.parent = n;
  return n;
}

/** An inode's path, for error messages only (built on demand from its first name). */
function pathOf(n: WNode): string {
  if (n.parent === n) return '/';
  const parts: string[] = [];
  for (let c = n; c.parent !== c; c = c.parent) parts.push(c.name);
  return '/' + parts.reverse().join('/');
}
const childPath = (dir: WNode, name: string): string => `${dir.parent === dir ? '' : pathOf(dir)}/${name}`;

const typeOf = (n: { mode: number }): number => n.mode & S_IFMT;

function fileType(n: WNode): number {
  switch (typeOf(n)) {
    case S_IFREG: return FT.REG;
    case S_IFDIR: return FT.DIR;
    case S_IFLNK: return FT.SYMLINK;
    case S_IFCHR: return FT.CHRDEV;
    case S_IFBLK: return FT.BLKDEV;
    case S_IFIFO: return FT.FIFO;
    case S_IFSOCK: return FT.SOCK;
    default: return FT.UNKNOWN;
  }
}

/** Number of significant bits of a non-negative safe integer. */
const bitLength = (x: number): number => (x < 2 ** 32 ? 32 - Math.clz32(x) : 64 - Math.clz32(Math.floor(x / 2 ** 32)));

/** Chunk size bits for an external file: as few chunks as possible, at least one block. */
export function chunkBits(size: number): number {
  let bits = size > 1 ? bitLength(size - 1) : 0;
  if (bits < BLKSIZ_BITS) bits = BLKSIZ_BITS;
  if (bits - BLKSIZ_BITS > CHUNK_FORMAT_BLKBITS_MASK) bits = CHUNK_FORMAT_BLKBITS_MASK + BLKSIZ_BITS;
  return bits;
}
/** Dividing by a power of two is exact in floating point, so this is ceil(size / chunk size) for any safe size. */
export function chunkCount(size: number): number {
  return Math.ceil(size / 2 ** chunkBits(size));
}

/** A 64-bit little-endian field from a safe integer (two's complement when negative, as BigInt.asUintN(64) gives). */
function writeU64(img: Buffer, v: number, off: number): void {
  if (v >= 0) {
    img.writeUInt32LE(v % 2 ** 32, off);
    img.writeUInt32LE(Math.floor(v / 2 ** 32), off + 4);
  } else {
    img.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), off);
  }
}

/** Bytes as a binary string; short ones (digests, most values) without a Buffer wrapper. */
const binary = (b: Uint8Array): string =>
  b.length <= 1024 ? String.fromCharCode.apply(null, b as unknown as number[]) : Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');

const isExternal = (n: WNode): boolean => typeOf(n) === S_IFREG && n.size > 0 && n.content === undefined;

/** Copy the caller's tree: hardlinks become extra entries pointing at the first name's inode (depth-first order). */
function copyTree(root: FsNode, layer?: LayerImage): WNode {
  const copies = new Map<FsNode, WNode>();
  const copy = (src: FsNode, parent: WNode | undefined, name: string): WNode => {
    const type = typeOf(src);
    const n = newWNode(src.mode, parent, name);
    n.uid = src.uid; n.gid = src.gid; n.nlink = src.nlink;
    n.rdev = type === S_IFCHR || type === S_IFBLK ? src.rdev : 0;
    n.mtimeSec = src.mtimeSec; n.mtimeNsec = src.mtimeNsec;
    if (layer?.whiteouts.has(src)) {
      if (type !== S_IFCHR || src.rdev !== 0) invalid(`${pathOf(n)}: an overlay whiteout must be a 0:0 character device`);
      n.rawWhiteout = true;
    }
    if (layer?.opaque.has(src)) n.rawOpaque = true;
    if (!isKnownType(src.mode)) invalid(`${pathOf(n)}: invalid file mode ${src.mode.toString(8)}`);
    for (const k of src.xattrs.size === 0 ? [] : sortNames([...src.xattrs.keys()])) {
      const v = src.xattrs.get(k)!;
      const kl = k.length; // binary string: one char per byte
      if (kl === 0 || kl > XATTR_NAME_MAX) invalid(`${pathOf(n)}: invalid xattr name length ${kl}`);
      if (v.length > XATTR_VALUE_MAX) invalid(`${pathOf(n)}: xattr ${k} value too long`);
      n.xattrs.push(k, binary(v));
    }
    if (type === S_IFLNK) {
      const t = src.target ?? '';
      if (t.length === 0) invalid(`${pathOf(n)}: symlink with empty target`);
      if (t.length >= PATH_MAX) invalid(`${pathOf(n)}: symlink target too long (${t.length} bytes)`);
      n.target = t;
      n.size = t.length;
    } else if (type === S_IFREG) {
      n.size = src.size;
      if (!Number.isSafeInteger(n.size) || n.size < 0) invalid(`${pathOf(n)}: invalid size ${src.size}`);
      if (src.inline && src.inline.length > 0) {
        if (src.inline.length > INLINE_CONTENT_MAX) invalid(`${pathOf(n)}: inline content larger than ${INLINE_CONTENT_MAX} bytes`);
        n.content = src.inline;
        n.size = src.inline.length;
      } else if (src.inline) {
        n.size = 0;
      }
      if (src.payload !== undefined) {
        if (src.payload.length >= PATH_MAX) invalid(`${pathOf(n)}: payload too long`);
        n.payload = src.payload;
      }
      if (src.digest) {
        if (src.digest.length !== 32) invalid(`${pathOf(n)}: digest must be 32 bytes`);
        n.digest = src.digest;
      }
      if (isExternal(n) && chunkCount(n.size) > MAX_NONINLINE_CHUNKS) invalid(`${pathOf(n)}: file too large (${n.size} bytes)`);
    }
    copies.set(src, n);
    if (type === S_IFDIR) {
      const entries: Entry[] = n.entries = [];
      const names = [...(src.children?.keys() ?? [])].sort(compareNames);
      for (let i = 0; i < names.length; i++) {
        const name = names[i]!;
        if (name.length === 0 || name.length > NAME_MAX || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
          invalid(`${pathOf(n)}: invalid file name "${name}"`);
        }
        const child = src.children!.get(name)!;
        const existing = copies.get(child);
        if (existing) {
          if (typeOf(child) === S_IFDIR) invalid(`${childPath(n, name)}: directories cannot be hardlinked`);
          entries.push({ name, node: existing, primary: false });
          continue;
        }
        const primary = hardlinkPrimary.get(child);
        if (primary && (primary.dir !== src || primary.name !== name)) {
          // A dump's `@` line met before the line that defines the file: the
          // inode belongs where that line put it (as mkcomposefs numbers it).
          const entry: Entry = { name, node: n, primary: false };
          entries.push(entry);
          pending.push([entry, child, n]);
        } else {
          entries.push({ name, node: copy(child, n, name), primary: true });
        }
      }
    }
    return n;
  };
  if (typeOf(root) !== S_IFDIR) invalid('the root of a composefs image must be a directory');
  const pending: Array<[Entry, FsNode, WNode]> = [];
  const out = copy(root, undefined, '');
  for (const [entry, child, dir] of pending) {
    const node = copies.get(child);
    if (!node) invalid(`${childPath(dir, entry.name)}: hardlink to a file outside the tree`);
    entry.node = node!;
  }
  return out;
}

/** Each inode once, pre-order, children in name order (upstream's rewrite walk). */
function preorder(root: WNode): WNode[] {
  const out: WNode[] = [];
  const stack: WNode[] = [root];
  while (stack.length) {
    const n = stack.pop()!;
    out.push(n);
    if (n.entries) {
      for (let i = n.entries.length - 1; i >= 0; i--) {
        const e = n.entries[i]!;
        if (e.primary) stack.push(e.node);
      }
    }
  }
  return out;
}

/** The fs-verity descriptor header of trusted.overlay.metacopy: version 0, length 36, reserved, SHA-256. */
const METACOPY_HEADER = '\x00\x24\x00\x01';

/** mirrors add_overlayfs_xattrs(): escape trusted.overlay.*, add metacopy/redirect, turn whiteouts into files. */
function addOverlayXattrs(n: WNode, version: number): void {
  const xs = n.xattrs;
  let escape = false;
  for (let i = 0; i < xs.length; i += 2) if (xs[i]!.startsWith(OVERLAY_PREFIX)) escape = true;
  if (escape) {
    // Every trusted.overlay.* name is renamed, so no renamed name meets one left as it was.
    n.xattrs = [];
    for (let i = 0; i < xs.length; i += 2) {
      const k = xs[i]!;
      setXattr(n, k.startsWith(OVERLAY_PREFIX) ? OVERLAY_ESCAPE_PREFIX + k.slice(OVERLAY_PREFIX.length) : k, xs[i + 1]!);
    }
  }
  if (isExternal(n)) {
    setXattr(n, XATTR_METACOPY, n.digest ? METACOPY_HEADER + binary(n.digest) : '');
    if (n.payload) setXattr(n, XATTR_REDIRECT, '/' + n.payload);
  }
  if (n.rawOpaque) setXattr(n, XATTR_OPAQUE, 'y');
  if (typeOf(n) === S_IFCHR && n.rdev === 0 && !n.rawWhiteout) {
    n.size = 0;
    n.mode = S_IFREG | (n.mode & ~S_IFMT);
    setXattr(n, XATTR_ESCAPED_WHITEOUT, '');
    setXattr(n, XATTR_USER_WHITEOUT, '');
    const p = n.parent;
    setXattr(p, XATTR_ESCAPED_WHITEOUTS, '');
    setXattr(p, XATTR_USER_WHITEOUTS, '');
    if (version >= 1) {
      setXattr(p, XATTR_ESCAPED_OPAQUE, 'x');
      setXattr(p, XATTR_USER_OPAQUE, 'x');
    }
  }
}

/** Names are binary strings: string order is byte order. */
function insertSorted(entries: Entry[], e: Entry): void {
  let i = 0;
  while (i < entries.length && entries[i]!.name < e.name) i++;
  entries.splice(i, 0, e);
}

/** Set an xattr, keeping the list in name order (binary strings: string order is byte order). */
function setXattr(n: WNode, name: string, value: string): void {
  const xs = n.xattrs;
  let i = 0;
  for (; i < xs.length; i += 2) {
    if (xs[i] === name) { xs[i + 1] = value; return; }
    if (xs[i]! > name) break;
  }
  xs.splice(i, 0, name, value);
}
function getXattr(n: WNode, name: string): string | undefined {
  const xs = n.xattrs;
  for (let i = 0; i < xs.length; i += 2) if (xs[i] === name) return xs[i + 1];
  return undefined;
}

/** Sort binary strings (byte order): an inode mostly has a few xattrs, which insertion sort orders fastest. */
function sortNames(a: string[]): string[] {
  if (a.length > 16) return a.sort(compareNames);
  for (let i = 1; i < a.length; i++) {
    const v = a[i]!;
    let j = i - 1;
    for (; j >= 0 && a[j]! > v; j--) a[j + 1] = a[j]!;
    a[j + 1] = v;
  }
  return a;
}

const xattrEntrySize = (p: Pair): number => roundUp(XATTR_ENTRY_SIZE + p.key.suffix.length + p.value.length, 4);

/**
 * The image's distinct xattr keys and key/value pairs: pairs are found by
 * value within their key, and each key's prefix split and bloom-filter bit
 * are computed once.
 */
class XattrTable {
  keys = new Map<string, XKey>();
  pairs: Pair[] = [];

  key(name: string): XKey {
    let k = this.keys.get(name);
    if (!k) {
      const [index, suffix] = xattrIndex(Buffer.from(name, 'latin1'));
      const filterBit = 1 << (xxh32(suffix, (XATTR_FILTER_SEED + index) >>> 0) & 31);
      this.keys.set(name, (k = { name, index, suffix: suffix.toString('latin1'), filterBit, pairs: new Map() }));
    }
    return k;
  }

  /** The pair for this key and value, counted once more. */
  add(name: string, value: string): Pair {
    const key = this.key(name);
    let p = key.pairs.get(value);
    if (p) {
      p.count++;
    } else {
      key.pairs.set(value, (p = { key, value, count: 1, offset: -1 }));
      this.pairs.push(p);
    }
    return p;
  }
}

/** mirrors compute_erofs_dir_size(): full blocks of dirents, and a tail of at most half a block. */
function dirSize(n: WNode): void {
  let blocks = 0, blockSize = 0;
  const entries = n.entries!;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const len = DIRENT_SIZE + e.name.length;
    if (blockSize + len > BLKSIZ) { blocks++; blockSize = 0; }
    blockSize += len;
  }
  if (blockSize > BLKSIZ / 2) { blocks++; blockSize = 0; }
  n.nBlocks = blocks;
  n.tailSize = blockSize;
}

/** mirrors compute_erofs_inode_padding_for_tail(): keep a tail from straddling a block boundary. */
function tailPadding(n: WNode, pos: number, inodeSize: number, xattrSize: number): number {
  const nonTail = inodeSize + xattrSize;
  const total = nonTail + n.tailSize;
  if (typeOf(n) === S_IFLNK) {
    const posBlock = Math.floor(pos / BLKSIZ);
    const endBlock = Math.floor((pos + total - 1) / BLKSIZ);
    if (Math.floor(total / BLKSIZ) > 0) { n.nBlocks++; n.tailSize = 0; }
    return posBlock !== endBlock ? roundUp(pos, BLKSIZ) - pos : 0;
  }
  let remainder = BLKSIZ - ((pos + nonTail) % BLKSIZ);
  if (remainder < n.tailSize) {
    const extra = roundUp(remainder, SLOTSIZE);
    remainder = BLKSIZ - ((pos + nonTail + extra) % BLKSIZ);
    if (n.tailSize <= remainder) return extra;
    n.nBlocks++;
    n.tailSize = 0;
    return roundUp(pos, BLKSIZ) - pos;
  }
  return 0;
}

/**
 * A layer image of a stack (see composefs/stack.ts): mounted as an overlay
 * lower layer above its parent's image(s), so its whiteouts and opaque
 * directories are real overlayfs ones, and its root is neither opaque nor
 * padded with the 00..ff whiteouts (those would hide the parent). The
 * parent's composefs digest goes in the superblock's uuid and volume name
 * (32 bytes the kernel does not interpret), so the same change on two
 * parents makes two different images.
 */
export interface LayerImage {
  whiteouts: ReadonlySet<FsNode>;
  opaque: ReadonlySet<FsNode>;
  parent: Uint8Array;
}

export interface WriteOptions { minVersion?: number; maxVersion?: number; layer?: LayerImage }

/** Serialise a tree as a composefs EROFS image, byte-identical to `mkcomposefs` 1.0.x. */
export function writeComposefsImage(rootIn: FsNode, opts: WriteOptions = {}): Buffer {
  let version = opts.minVersion ?? 0;
  let maxVersion = opts.maxVersion ?? 1;
  if (!Number.isInteger(version) || version < 0 || version > COMPOSEFS_VERSION_MAX ||
      !Number.isInteger(maxVersion) || maxVersion < 0 || maxVersion > COMPOSEFS_VERSION_MAX) {
    invalid(`unsupported composefs format version (supported: 0..${COMPOSEFS_VERSION_MAX})`);
  }
  if (maxVersion < version) maxVersion = version;

  const layer = opts.layer;
  if (layer && layer.parent.length !== 32) invalid('a layer image needs its parent\'s 32-byte digest');
  const root = copyTree(rootIn, layer);
  const inodes = preorder(root);

  // lcfs_write_update_version(): whiteouts need format 1 when allowed.
  if (version < 1 && maxVersion >= 1 && inodes.some((n) => typeOf(n) === S_IFCHR && n.rdev === 0 && !n.rawWhiteout)) version = 1;

  // rewrite_tree_for_erofs()
  for (let i = 0; i < inodes.length; i++) {
    const n = inodes[i]!;
    addOverlayXattrs(n, version);
    if (n.entries) {
      insertSorted(n.entries, { name: '.', node: n, primary: false });
      insertSorted(n.entries, { name: '..', node: n.parent, primary: false });
    }
  }
  if (!layer) setXattr(root, XATTR_OPAQUE, 'y');
  const selinux = getXattr(root, 'security.selinux');
  const rootNames = new Set(root.entries!.map((e) => e.name));
  for (let i = 0; i < (layer ? 0 : 256); i++) {
    const name = i.toString(16).padStart(2, '0');
    if (rootNames.has(name)) continue;
    const w = newWNode(S_IFCHR | 0o644, root, name);
    w.uid = root.uid; w.gid = root.gid; w.mtimeSec = root.mtimeSec; w.mtimeNsec = root.mtimeNsec;
    if (selinux) setXattr(w, 'security.selinux', selinux);
    insertSorted(root.entries!, { name, node: w, primary: true });
  }

  // lcfs_compute_tree(): breadth-first order, directory link counts, canonical xattr order, minimum mtime.
  const table = new XattrTable();
  const order: WNode[] = [root];
  let minSec = root.mtimeSec, minNsec = root.mtimeNsec;
  for (let i = 0; i < order.length; i++) {
    const n = order[i]!;
    n.inodeNum = i;
    if (n.entries) {
      let links = 2;
      for (let j = 0; j < n.entries.length; j++) {
        const e = n.entries[j]!;
        if (e.name === '.' || e.name === '..') continue;
        if (typeOf(e.node) === S_IFDIR) links++;
        if (e.primary) order.push(e.node);
      }
      n.nlink = links;
    }
    const xs = n.xattrs;
    if (xs.length > 0) {
      const pairs: Pair[] = n.sortedXattrs = [];
      for (let j = 0; j < xs.length; j += 2) pairs.push(table.add(xs[j]!, xs[j + 1]!));
    }
    if (n.mtimeSec < minSec || (n.mtimeSec === minSec && n.mtimeNsec < minNsec)) {
      minSec = n.mtimeSec;
      minNsec = n.mtimeNsec;
    }
  }
  const hasAcl = table.keys.has('system.posix_acl_access') || table.keys.has('system.posix_acl_default');

  // compute_erofs_shared_xattrs(): key/value pairs used more than once go to
  // the shared table, ordered by key, value length and value, all descending.
  const shared = table.pairs.filter((p) => p.count > 1).sort((a, b) => {
    if (a.key !== b.key) return a.key.name < b.key.name ? 1 : -1;
    if (a.value.length !== b.value.length) return b.value.length - a.value.length;
    return a.value < b.value ? 1 : -1; // binary strings: string order is byte order
  });
  let sharedSize = 0;
  for (const p of shared) {
    p.offset = sharedSize;
    sharedSize += xattrEntrySize(p);
  }
  // An inode refers to at most MAX_SHARED_PER_INODE shared pairs (the first,
  // in key order); the rest are written inline. Later passes apply this rule.
  const isSharedRef = (p: Pair, sharedSoFar: number): boolean => p.offset >= 0 && sharedSoFar < MAX_SHARED_PER_INODE;

  // compute_erofs_inodes(): sizes, compact or extended, positions and nids.
  let pos = EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE;
  let nDataBlocks = 0;
  for (let i = 0; i < order.length; i++) {
    const n = order[i]!;
    const type = typeOf(n);
    n.nBlocks = 0;
    n.tailSize = 0;
    if (type === S_IFDIR) dirSize(n);
    else if (type === S_IFLNK) n.tailSize = n.target!.length;
    else if (type === S_IFREG && n.size > 0) {
      if (n.content) {
        n.nBlocks = Math.floor(n.size / BLKSIZ);
        n.tailSize = n.size % BLKSIZ;
        if (n.tailSize > BLKSIZ / 2) { n.nBlocks++; n.tailSize = 0; }
      } else {
        n.tailSize = chunkCount(n.size) * 4;
      }
    }
    const size = type === S_IFDIR ? n.nBlocks * BLKSIZ + n.tailSize : n.size;
    n.compact = n.mtimeSec === minSec && n.mtimeNsec === minNsec &&
      n.nlink <= 0xffff && n.uid <= 0xffff && n.gid <= 0xffff && size <= 0xffffffff;
    const inodeSize = n.compact ? COMPACT_INODE_SIZE : EXTENDED_INODE_SIZE;
    let nShared = 0, unsharedSize = 0;
    for (let j = 0; j < n.sortedXattrs.length; j++) {
      const p = n.sortedXattrs[j]!;
      if (isSharedRef(p, nShared)) nShared++;
      else unsharedSize += xattrEntrySize(p);
    }
    n.xattrSize = nShared === 0 && unsharedSize === 0 ? 0 : roundUp(XATTR_IBODY_HEADER_SIZE + nShared * 4 + unsharedSize, 4);
    if (n.xattrSize > 0 && (n.xattrSize - XATTR_IBODY_HEADER_SIZE) / 4 + 1 > 0xffff) invalid(`${pathOf(n)}: too many xattrs`);
    const aligned = roundUp(pos, SLOTSIZE);
    n.ipad = aligned - pos;
    pos = aligned;
    const extra = tailPadding(n, pos, inodeSize, n.xattrSize);
    n.ipad += extra;
    pos += extra;
    n.isize = inodeSize + n.xattrSize + n.tailSize;
    nDataBlocks += n.nBlocks;
    n.nid = pos / SLOTSIZE;
    pos += n.isize;
  }
  const inodesEnd = roundUp(pos, SLOTSIZE);
  if (root.nid >= 0xffff) invalid('root inode out of range');
  const dataStart = roundUp(inodesEnd + sharedSize, BLKSIZ);
  const totalBlocks = dataStart / BLKSIZ + nDataBlocks;
  if (totalBlocks > 0xffffffff) invalid('image too large');

  const img = Buffer.alloc(totalBlocks * BLKSIZ);
  // composefs header
  img.writeUInt32LE(COMPOSEFS_MAGIC, 0);
  img.writeUInt32LE(COMPOSEFS_HEADER_VERSION, 4);
  img.writeUInt32LE(hasAcl ? FLAGS_HAS_ACL : 0, 8);
  img.writeUInt32LE(version, 12);
  // EROFS superblock
  const sb = EROFS_SUPER_OFFSET;
  img.writeUInt32LE(EROFS_MAGIC, sb);
  img.writeUInt32LE(FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER, sb + 8);
  img.writeUInt8(BLKSIZ_BITS, sb + 12);
  img.writeUInt16LE(root.nid, sb + 14);
  writeU64(img, order.length, sb + 16);
  writeU64(img, minSec, sb + 24);
  img.writeUInt32LE(minNsec >>> 0, sb + 32);
  img.writeUInt32LE(totalBlocks, sb + 36);
  img.writeUInt32LE(Math.floor((EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE) / BLKSIZ), sb + 40);
  img.writeUInt32LE(Math.floor(inodesEnd / BLKSIZ), sb + 44);
  if (layer) Buffer.from(layer.parent).copy(img, sb + LAYER_PARENT_OFFSET); // uuid[16] + volume_name[16]

  let off = EROFS_SUPER_OFFSET + EROFS_SUPER_SIZE;
  let dataEnd = dataStart;
  const writeXattr = (p: Pair): void => {
    const { index, suffix } = p.key;
    img.writeUInt8(suffix.length, off);
    img.writeUInt8(index, off + 1);
    img.writeUInt16LE(p.value.length, off + 2);
    off += 4;
    off += img.write(suffix, off, 'latin1');
    off += img.write(p.value, off, 'latin1');
    off = roundUp(off, 4);
  };

  for (let i = 0; i < order.length; i++) {
    const n = order[i]!;
    off += n.ipad;
    const type = typeOf(n);
    let layout = n.tailSize > 0 ? LAYOUT_FLAT_INLINE : LAYOUT_FLAT_PLAIN;
    let size: number;
    let chunkFormat = 0;
    let nChunks = 0;
    if (type === S_IFDIR) size = n.nBlocks * BLKSIZ + n.tailSize;
    else if (type === S_IFREG) {
      size = n.size;
      if (isExternal(n)) {
        layout = LAYOUT_CHUNK_BASED;
        chunkFormat = chunkBits(n.size) - BLKSIZ_BITS;
        nChunks = chunkCount(n.size);
      }
    } else if (type === S_IFLNK) size = n.nBlocks === 0 ? n.tailSize : n.size;
    else size = 0;
    const format = (layout << 1) | (n.compact ? 0 : 1);
    let u = 0;
    if ((type === S_IFDIR || type === S_IFREG || type === S_IFLNK) && n.nBlocks > 0) {
      u = dataEnd / BLKSIZ;
      dataEnd += BLKSIZ * n.nBlocks;
    } else if (type === S_IFCHR || type === S_IFBLK) {
      u = n.rdev >>> 0;
    }
    if (layout === LAYOUT_CHUNK_BASED) u = chunkFormat; // i_u.c.format, with c.reserved = 0
    const icount = n.xattrSize === 0 ? 0 : (n.xattrSize - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
    img.writeUInt16LE(format, off);
    img.writeUInt16LE(icount, off + 2);
    img.writeUInt16LE(n.mode & 0xffff, off + 4);
    if (n.compact) {
      img.writeUInt16LE(n.nlink, off + 6);
      img.writeUInt32LE(size, off + 8);
      img.writeUInt32LE(u >>> 0, off + 16);
      img.writeUInt32LE(n.inodeNum, off + 20);
      img.writeUInt16LE(n.uid, off + 24);
      img.writeUInt16LE(n.gid, off + 26);
      off += COMPACT_INODE_SIZE;
    } else {
      writeU64(img, size, off + 8);
      img.writeUInt32LE(u >>> 0, off + 16);
      img.writeUInt32LE(n.inodeNum, off + 20);
      img.writeUInt32LE(n.uid >>> 0, off + 24);
      img.writeUInt32LE(n.gid >>> 0, off + 28);
      writeU64(img, n.mtimeSec, off + 32);
      img.writeUInt32LE(n.mtimeNsec >>> 0, off + 40);
      img.writeUInt32LE(n.nlink >>> 0, off + 44);
      off += EXTENDED_INODE_SIZE;
    }
    if (n.xattrSize > 0) {
      const start = off;
      let filter = 0;
      let nShared = 0;
      for (let j = 0; j < n.sortedXattrs.length; j++) {
        const p = n.sortedXattrs[j]!;
        filter |= p.key.filterBit;
        if (isSharedRef(p, nShared)) nShared++;
      }
      img.writeUInt32LE((~filter) >>> 0, off);
      img.writeUInt8(nShared, off + 4);
      off += XATTR_IBODY_HEADER_SIZE;
      let refs = 0;
      for (let j = 0; j < n.sortedXattrs.length; j++) {
        const p = n.sortedXattrs[j]!;
        if (!isSharedRef(p, refs)) continue;
        refs++;
        img.writeUInt32LE(((inodesEnd % BLKSIZ) + p.offset) / 4, off);
        off += 4;
      }
      refs = 0;
      for (let j = 0; j < n.sortedXattrs.length; j++) {
        const p = n.sortedXattrs[j]!;
        if (isSharedRef(p, refs)) refs++;
        else writeXattr(p);
      }
      if (off - start !== n.xattrSize) throw new Error('composefs writer: xattr size mismatch');
    }
    if (type === S_IFDIR) {
      off = writeDirents(img, off, n, false, true);
    } else if (type === S_IFLNK) {
      if (n.nBlocks === 0) off += img.write(n.target!, off, 'latin1');
    } else if (type === S_IFREG && n.tailSize > 0) {
      if (n.content) {
        img.set(n.content.subarray(n.size - n.tailSize), off);
        off += n.tailSize;
      } else {
        for (let k = 0; k < nChunks * 4; k++) img[off + k] = 0xff; // null chunk addresses: usually one
        off += nChunks * 4;
      }
    }
  }
  off = roundUp(off, SLOTSIZE);
  if (off !== inodesEnd) throw new Error('composefs writer: inode area size mismatch');
  for (const x of shared) writeXattr(x);
  off = roundUp(off, BLKSIZ);
  if (off !== dataStart) throw new Error('composefs writer: shared xattr size mismatch');

  // write_erofs_data_blocks(): directory blocks and non-inlined content, in inode order.
  for (let i = 0; i < order.length; i++) {
    const n = order[i]!;
    const type = typeOf(n);
    if (type === S_IFDIR) off = writeDirents(img, off, n, true, false);
    if (n.nBlocks === 0) continue;
    if (type === S_IFREG) {
      if (!n.content) {
        img.fill(0xff, off, off + BLKSIZ);
        off += BLKSIZ;
      } else {
        img.set(n.content.subarray(0, n.nBlocks * BLKSIZ), off);
        off += n.nBlocks * BLKSIZ;
      }
    } else if (type === S_IFLNK) {
      img.write(n.target!, off, 'latin1');
      off += n.nBlocks * BLKSIZ;
    }
  }
  if (off !== img.length || dataEnd !== img.length) throw new Error('composefs writer: data area size mismatch');
  return img;
}

/** mirrors write_erofs_dentries(): full blocks (write_blocks) and/or the inline tail (write_tail). */
function writeDirents(img: Buffer, off: number, n: WNode, writeBlocks: boolean, writeTail: boolean): number {
  const entries = n.entries!;
  const chunk = (first: number, count: number, align: number): void => {
    let nameoff = count * DIRENT_SIZE;
    let p = off;
    for (let i = first; i < first + count; i++) {
      const e = entries[i]!;
      writeU64(img, e.node.nid, p);
      img.writeUInt16LE(nameoff, p + 8);
      img.writeUInt8(fileType(e.node), p + 10);
      p += DIRENT_SIZE;
      nameoff += e.name.length;
    }
    for (let i = first; i < first + count; i++) p += img.write(entries[i]!.name, p, 'latin1');
    off = roundUp(p, align);
  };
  let blockSize = 0, written = 0, first = 0;
  for (let i = 0; i < entries.length; i++) {
    const len = DIRENT_SIZE + entries[i]!.name.length;
    if (blockSize + len > BLKSIZ) {
      if (writeBlocks) chunk(first, i - first, BLKSIZ);
      written++;
      blockSize = 0;
      first = i;
    }
    blockSize += len;
  }
  if (written < n.nBlocks) {
    if (writeBlocks) chunk(first, entries.length - first, BLKSIZ);
    written++;
    blockSize = 0;
    first = entries.length;
  }
  if (writeTail && blockSize > 0) chunk(first, entries.length - first, 1);
  return off;
}
