// Read a composefs EROFS image back into an FsNode tree: the inverse of
// erofs-writer.ts (as libcomposefs's lcfs_load_node_from_image). Overlay
// xattrs become digest/payload again, escaped whiteouts become 0:0 character
// devices, the root's 00..ff whiteouts are dropped. Every read is bounds
// checked: a damaged image gives an EFORMAT error, never a crash or a loop.
import { type FsNode, S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, newNode, isKnownType } from '../tree/node.ts';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { CowshedError } from '../util/errors.ts';
import {
  COMPOSEFS_MAGIC, COMPOSEFS_HEADER_VERSION, EROFS_MAGIC, EROFS_SUPER_OFFSET, BLKSIZ, SLOTSIZE,
  COMPACT_INODE_SIZE, EXTENDED_INODE_SIZE, XATTR_IBODY_HEADER_SIZE, DIRENT_SIZE,
  LAYOUT_FLAT_PLAIN, LAYOUT_FLAT_INLINE, LAYOUT_CHUNK_BASED, XATTR_PREFIX_BY_INDEX,
  OVERLAY_PREFIX, OVERLAY_ESCAPE_PREFIX, XATTR_METACOPY, XATTR_REDIRECT, XATTR_ESCAPED_WHITEOUT,
  XATTR_ESCAPED_WHITEOUTS, XATTR_USER_WHITEOUT, XATTR_USER_WHITEOUTS, XATTR_ESCAPED_OPAQUE, XATTR_USER_OPAQUE,
} from './erofs-writer.ts';

const bad = (msg: string): never => { throw new CowshedError('EFORMAT', `composefs image: ${msg}`); };

interface Inode {
  nid: number; mode: number; nlink: number; size: number; uid: number; gid: number;
  mtimeSec: number; mtimeNsec: number; u: number; layout: number;
  xattrs: [string, Buffer][];
  /** Offset of the inline tail (after inode and xattrs). */
  tailOff: number;
}

/** Image metadata as read from the composefs header and EROFS superblock. */
export interface ComposefsImageInfo { composefsVersion: number; hasAcl: boolean; inodes: number; buildTimeSec: number }

export function readComposefsInfo(image: Uint8Array): ComposefsImageInfo {
  const img = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (img.length < EROFS_SUPER_OFFSET + 128) bad('too short');
  if (img.readUInt32LE(0) !== COMPOSEFS_MAGIC) bad('not a composefs image (bad magic)');
  if (img.readUInt32LE(4) !== COMPOSEFS_HEADER_VERSION) bad(`unsupported header version ${img.readUInt32LE(4)}`);
  if (img.readUInt32LE(EROFS_SUPER_OFFSET) !== EROFS_MAGIC) bad('bad EROFS superblock magic');
  return {
    composefsVersion: img.readUInt32LE(12),
    hasAcl: (img.readUInt32LE(8) & 1) !== 0,
    inodes: Number(img.readBigUInt64LE(EROFS_SUPER_OFFSET + 16)),
    buildTimeSec: Number(img.readBigInt64LE(EROFS_SUPER_OFFSET + 24)),
  };
}

/** Raw access to an image's inodes and directories (bounds checked), shared by the tree reader and lookups. */
export interface ImageAccess {
  rootNid: number;
  readInode: (nid: number) => Inode;
  readData: (ino: Inode) => Buffer;
  readDirents: (ino: Inode) => [string, number][];
  /** An inode as a tree node (no children read); undefined for the root's 00..ff whiteouts. */
  buildNode: (nid: number, inRoot: boolean, name: string) => FsNode | undefined;
}

export type { Inode as RawInode };

/**
 * `load(off, len)`: called before every read of the image's bytes, so they can
 * be read from the file on demand (imageFileAccess) instead of all up front.
 */
export function imageAccess(image: Uint8Array, load?: (off: number, len: number) => void): ImageAccess {
  const img = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  load?.(0, Math.min(img.length, BLKSIZ));
  readComposefsInfo(img);
  const sb = EROFS_SUPER_OFFSET;
  if (img.readUInt8(sb + 12) !== 12) bad('unsupported block size');
  const rootNid = img.readUInt16LE(sb + 14);
  const buildSec = Number(img.readBigInt64LE(sb + 24));
  const buildNsec = img.readUInt32LE(sb + 32);
  const metaStart = img.readUInt32LE(sb + 40) * BLKSIZ;
  const xattrStart = img.readUInt32LE(sb + 44) * BLKSIZ;

  const need = (off: number, len: number, what: string): void => {
    if (!Number.isSafeInteger(off) || off < 0 || len < 0 || off + len > img.length) bad(`${what} out of bounds`);
    load?.(off, len);
  };

  const readXattrEntry = (off: number, end: number): [string, Buffer, number] => {
    need(off, 4, 'xattr entry');
    if (off + 4 > end) bad('xattr entry overruns its area');
    const nameLen = img.readUInt8(off);
    const index = img.readUInt8(off + 1);
    const valueLen = img.readUInt16LE(off + 2);
    const total = 4 + nameLen + valueLen;
    if (off + total > end) bad('xattr entry overruns its area');
    need(off, total, 'xattr entry');
    const prefix = XATTR_PREFIX_BY_INDEX[index];
    if (prefix === undefined) bad(`unknown xattr prefix index ${index}`);
    const name = prefix + img.toString('latin1', off + 4, off + 4 + nameLen);
    const value = Buffer.from(img.subarray(off + 4 + nameLen, off + total));
    return [name, value, off + Math.ceil(total / 4) * 4];
  };

  const readInode = (nid: number): Inode => {
    const off = metaStart + nid * SLOTSIZE;
    need(off, COMPACT_INODE_SIZE, `inode ${nid}`);
    const format = img.readUInt16LE(off);
    const extended = (format & 1) === 1;
    const layout = (format >> 1) & 7;
    if (format >> 4 !== 0) bad(`inode ${nid}: unsupported format ${format}`);
    const isize = extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE;
    need(off, isize, `inode ${nid}`);
    const icount = img.readUInt16LE(off + 2);
    const ino: Inode = {
      nid, mode: img.readUInt16LE(off + 4), nlink: 0, size: 0, uid: 0, gid: 0, mtimeSec: buildSec, mtimeNsec: buildNsec,
      u: img.readUInt32LE(off + 16), layout, xattrs: [], tailOff: 0,
    };
    if (extended) {
      const size = img.readBigUInt64LE(off + 8);
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) bad(`inode ${nid}: size too large`);
      ino.size = Number(size);
      ino.uid = img.readUInt32LE(off + 24);
      ino.gid = img.readUInt32LE(off + 28);
      ino.mtimeSec = Number(img.readBigInt64LE(off + 32));
      ino.mtimeNsec = img.readUInt32LE(off + 40);
      ino.nlink = img.readUInt32LE(off + 44);
    } else {
      ino.nlink = img.readUInt16LE(off + 6);
      ino.size = img.readUInt32LE(off + 8);
      ino.uid = img.readUInt16LE(off + 24);
      ino.gid = img.readUInt16LE(off + 26);
    }
    let p = off + isize;
    if (icount > 0) {
      const end = p + XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4;
      need(p, end - p, `inode ${nid} xattrs`);
      const nShared = img.readUInt8(p + 4);
      let q = p + XATTR_IBODY_HEADER_SIZE;
      if (q + nShared * 4 > end) bad(`inode ${nid}: shared xattr count overruns xattr area`);
      for (let i = 0; i < nShared; i++, q += 4) {
        const at = xattrStart + img.readUInt32LE(q) * 4;
        const [k, v] = readXattrEntry(at, img.length);
        ino.xattrs.push([k, v]);
      }
      while (q < end) {
        const [k, v, next] = readXattrEntry(q, end);
        ino.xattrs.push([k, v]);
        q = next;
      }
      p = end;
    }
    ino.tailOff = p;
    return ino;
  };

  /** The bytes of a flat (plain or tail-packed) inode's data. */
  const readData = (ino: Inode): Buffer => {
    if (ino.layout !== LAYOUT_FLAT_PLAIN && ino.layout !== LAYOUT_FLAT_INLINE) bad(`inode ${ino.nid}: unsupported data layout ${ino.layout}`);
    if (ino.size > img.length) bad(`inode ${ino.nid}: size larger than the image`);
    const out = Buffer.alloc(ino.size);
    const fullBlocks = ino.layout === LAYOUT_FLAT_INLINE ? Math.floor(ino.size / BLKSIZ) : Math.ceil(ino.size / BLKSIZ);
    const blockBytes = Math.min(fullBlocks * BLKSIZ, ino.size);
    if (blockBytes > 0) {
      need(ino.u * BLKSIZ, blockBytes, `inode ${ino.nid} data`);
      img.copy(out, 0, ino.u * BLKSIZ, ino.u * BLKSIZ + blockBytes);
    }
    const tail = ino.size - blockBytes;
    if (tail > 0) {
      need(ino.tailOff, tail, `inode ${ino.nid} inline data`);
      if (Math.floor(ino.tailOff / BLKSIZ) !== Math.floor((ino.tailOff + tail - 1) / BLKSIZ)) bad(`inode ${ino.nid}: inline data crosses a block`);
      img.copy(out, blockBytes, ino.tailOff, ino.tailOff + tail);
    }
    return out;
  };

  const readDirents = (ino: Inode): [string, number][] => {
    const data = readData(ino);
    const out: [string, number][] = [];
    for (let b = 0; b < data.length; b += BLKSIZ) {
      const block = data.subarray(b, Math.min(b + BLKSIZ, data.length));
      if (block.length < DIRENT_SIZE) bad(`directory ${ino.nid}: truncated block`);
      const first = block.readUInt16LE(8);
      if (first % DIRENT_SIZE !== 0 || first === 0 || first > block.length) bad(`directory ${ino.nid}: bad dirent table`);
      const n = first / DIRENT_SIZE;
      for (let i = 0; i < n; i++) {
        const nid = block.readBigUInt64LE(i * DIRENT_SIZE);
        const nameoff = block.readUInt16LE(i * DIRENT_SIZE + 8);
        let end = i + 1 < n ? block.readUInt16LE((i + 1) * DIRENT_SIZE + 8) : block.length;
        if (i + 1 === n) {
          const nul = block.indexOf(0, nameoff);
          if (nul >= 0 && nul < end) end = nul;
        }
        if (nameoff < first || end < nameoff || end > block.length) bad(`directory ${ino.nid}: bad name offset`);
        if (nid > 0xffffffffn) bad(`directory ${ino.nid}: bad inode number`);
        const name = block.toString('latin1', nameoff, end);
        if (name === '' || name.includes('/') || name.includes('\0')) bad(`directory ${ino.nid}: invalid file name`);
        out.push([name, Number(nid)]);
      }
    }
    return out;
  };

  const buildNode = (nid: number, inRoot: boolean, name: string): FsNode | undefined => {
    const ino = readInode(nid);
    const type = ino.mode & S_IFMT;
    if (!isKnownType(ino.mode)) bad(`inode ${nid}: invalid mode ${ino.mode.toString(8)}`);
    if (type === S_IFCHR && ino.u === 0 && inRoot && /^[0-9a-f]{2}$/.test(name)) return undefined; // the root's whiteouts
    const node = newNode(ino.mode, {
      uid: ino.uid, gid: ino.gid, nlink: ino.nlink, mtimeSec: ino.mtimeSec, mtimeNsec: ino.mtimeNsec,
    });
    if (type === S_IFCHR || type === S_IFBLK) node.rdev = ino.u;
    if (type === S_IFLNK) {
      const t = readData(ino);
      node.target = t.toString('latin1');
    } else if (type === S_IFREG) {
      node.size = ino.size;
      if (ino.layout === LAYOUT_CHUNK_BASED) {
        // External content: the chunk index is a stub, overlayfs finds the data by redirect.
      } else if (ino.size > 0) {
        node.inline = new Uint8Array(readData(ino));
      }
    }
    const names = new Set(ino.xattrs.map(([k]) => k));
    const whiteout = type === S_IFREG && names.has(XATTR_ESCAPED_WHITEOUT);
    const hasWhiteouts = names.has(XATTR_ESCAPED_WHITEOUTS);
    for (const [k, v] of ino.xattrs) {
      if (k === XATTR_REDIRECT) {
        if (type === S_IFREG) node.payload = (v.length > 1 && v[0] === 0x2f ? v.subarray(1) : v).toString('latin1');
        continue;
      }
      if (k === XATTR_METACOPY) {
        if (type === S_IFREG && v.length === 36) node.digest = new Uint8Array(v.subarray(4));
        continue;
      }
      if (k === XATTR_ESCAPED_WHITEOUT || k === XATTR_ESCAPED_WHITEOUTS || k === XATTR_USER_WHITEOUT || k === XATTR_USER_WHITEOUTS) continue;
      // Format 1 marks directories holding whiteouts as opaque "x": writer-made, not the user's.
      if (hasWhiteouts && (k === XATTR_ESCAPED_OPAQUE || k === XATTR_USER_OPAQUE) && v.equals(Buffer.from('x'))) continue;
      if (k.startsWith(OVERLAY_PREFIX)) {
        if (k.startsWith(OVERLAY_ESCAPE_PREFIX)) node.xattrs.set(OVERLAY_PREFIX + k.slice(OVERLAY_ESCAPE_PREFIX.length), v);
        continue;
      }
      node.xattrs.set(k, v);
    }
    if (whiteout) {
      node.mode = (node.mode & ~S_IFMT) | S_IFCHR;
      node.rdev = 0;
      node.size = 0;
      delete node.inline;
      delete node.digest;
      delete node.payload;
    }
    return node;
  };

  return { rootNid, readInode, readData, readDirents, buildNode };
}

/** The tree of an image; `rootOnly`: just the root directory's own metadata (no entries read). */
export function readComposefsImage(image: Uint8Array, opts: { rootOnly?: boolean } = {}): FsNode {
  const { rootNid, readInode, readDirents, buildNode } = imageAccess(image);
  const nodes = new Map<number, FsNode>();
  const root = buildNode(rootNid, false, '');
  if (!root || (root.mode & S_IFMT) !== S_IFDIR) return bad('root is not a directory');
  if (opts.rootOnly) return root;
  nodes.set(rootNid, root);
  // Depth-first with an explicit stack: deep trees must not exhaust the call stack.
  const visitedDirs = new Set<number>([rootNid]);
  const stack: [FsNode, number][] = [[root, rootNid]];
  while (stack.length) {
    const [dir, nid] = stack.pop()!;
    const ino = readInode(nid);
    const entries = readDirents(ino);
    const subdirs: [FsNode, number][] = [];
    for (const [name, childNid] of entries) {
      if (name === '.' || name === '..') continue;
      if (dir.children!.has(name)) bad(`directory ${nid}: duplicate name ${name}`);
      let child = nodes.get(childNid);
      if (child) {
        if ((child.mode & S_IFMT) === S_IFDIR) bad(`directory ${childNid} is linked twice`);
      } else {
        child = buildNode(childNid, nid === rootNid, name);
        if (!child) continue;
        nodes.set(childNid, child);
        if ((child.mode & S_IFMT) === S_IFDIR) {
          if (visitedDirs.has(childNid)) bad(`directory loop at ${childNid}`);
          visitedDirs.add(childNid);
          subdirs.push([child, childNid]);
        }
      }
      dir.children!.set(name, child);
    }
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
  return root;
}

/**
 * An image file read block by block as lookups need it (a stack's parent can
 * be a 20 MB image of which a lookup needs a few blocks). Each block is read
 * once into a zero-filled buffer of the file's size (the kernel's lazily
 * zeroed pages: allocating it costs next to nothing).
 */
export function imageFileAccess(path: string): ImageAccess {
  // Opened per read (a few per lookup), so nothing stays open: the caller need not close anything.
  const readAt = (buf: Buffer, start: number, end: number): void => {
    const fd = openSync(path, 'r');
    try {
      for (let got = 0; got < end - start;) {
        const n = readSync(fd, buf, start + got, end - start - got, start + got);
        if (n === 0) bad('the image file shrank while it was read');
        got += n;
      }
    } finally {
      closeSync(fd);
    }
  };
  const size = statSync(path).size;
  const img = Buffer.alloc(size);
  const loaded = new Uint8Array(Math.ceil(size / BLKSIZ));
  return imageAccess(img, (off, len) => {
    const last = Math.min(loaded.length - 1, Math.floor((off + Math.max(len, 1) - 1) / BLKSIZ));
    for (let b = Math.floor(off / BLKSIZ); b <= last; b++) {
      if (loaded[b]) continue;
      let e = b; // a run of blocks not read yet, in one read
      while (e + 1 <= last && !loaded[e + 1]) e++;
      readAt(img, b * BLKSIZ, Math.min(size, (e + 1) * BLKSIZ));
      loaded.fill(1, b, e + 1);
      b = e;
    }
  });
}
