// The composefs dump text format (man composefs-dump): one line per file,
// 11 space-separated fields, then `key=value` xattrs, with `\xHH` escapes.
// The parser follows mkcomposefs 1.0.x's rules and limits so that whatever
// it accepts the EROFS writer can also write; printDump writes what
// `composefs-info dump` prints.
import {
  type FsNode, S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, S_IFSOCK, S_IFIFO,
  compareNames, newNode, hardlinkPrimary,
} from '../tree/node.ts';
import { CowshedError } from '../util/errors.ts';
import { escapeName } from '../util/names.ts';

/** Largest inline content mkcomposefs accepts (LCFS_INLINE_CONTENT_MAX). */
export const INLINE_CONTENT_MAX = 5000;
/** Symlink targets and payloads must be shorter than PATH_MAX. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;
export const XATTR_NAME_MAX = 255;
export const XATTR_VALUE_MAX = 0xffff;
/** Per-inode budget for xattrs from external input (LCFS_INODE_EXTERNAL_XATTR_MAX). */
export const EXTERNAL_XATTR_MAX = 0x7fff;

class DumpError extends CowshedError {
  constructor(line: number, message: string) {
    super('EFORMAT', `composefs dump line ${line}: ${message}`);
  }
}

function unescape(s: Buffer): Buffer {
  const out = Buffer.alloc(s.length);
  let o = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== 0x5c) { out[o++] = c; continue; }
    if (++i >= s.length) throw new Error('no character after escape');
    const e = s[i]!;
    if (e === 0x5c) out[o++] = 0x5c;
    else if (e === 0x6e) out[o++] = 0x0a;
    else if (e === 0x72) out[o++] = 0x0d;
    else if (e === 0x74) out[o++] = 0x09;
    else if (e === 0x78) {
      const h = s.subarray(i + 1, i + 3).toString('latin1');
      if (h.length !== 2) throw new Error('no hex characters after hex escape');
      if (!/^[0-9a-fA-F]{2}$/.test(h)) throw new Error('invalid hex characters after hex escape');
      out[o++] = parseInt(h, 16);
      i += 2;
    } else throw new Error(`unsupported escape \\${String.fromCharCode(e)}`);
  }
  return out.subarray(0, o);
}

const isDash = (f: Buffer): boolean => f.length === 1 && f[0] === 0x2d;
const unescapeOptional = (f: Buffer): Buffer | undefined => (isDash(f) ? undefined : unescape(f));

/** Paths, link targets and xattr names are bytes, kept as binary strings (util/names.ts). */
const text = (b: Buffer): string => b.toString('latin1');

function parseUint(f: Buffer, base: 8 | 10, what: string): bigint {
  const s = f.toString('latin1');
  const re = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(s)) throw new Error(`invalid ${what} ${JSON.stringify(s)}`);
  const v = base === 8 ? BigInt('0o' + s) : BigInt(s);
  if (v > 0xffffffffffffffffn) throw new Error(`${what} out of range`);
  return v;
}

const validType = (mode: number): boolean =>
  [S_IFREG, S_IFDIR, S_IFLNK, S_IFBLK, S_IFCHR, S_IFSOCK, S_IFIFO].includes(mode & S_IFMT);

/** Xattr bookkeeping as lcfs_node_set_xattr does it, to apply the same size budget. */
interface XattrBudget { size: number }

export function setXattrChecked(node: FsNode, budget: XattrBudget, key: string, value: Uint8Array): void {
  const nameLen = key.length; // a binary string: one char per byte
  if (nameLen === 0 || nameLen > XATTR_NAME_MAX) throw new Error(`invalid xattr name length ${nameLen}`);
  if (value.length > XATTR_VALUE_MAX) throw new Error(`xattr ${key} value too long (${value.length} bytes)`);
  const old = node.xattrs.get(key);
  if (old !== undefined) {
    node.xattrs.delete(key);
    budget.size = node.xattrs.size > 0 ? budget.size - (7 + nameLen + old.length) : 0;
  }
  let entry = 7 + nameLen + value.length;
  if (node.xattrs.size === 0) entry += 4;
  if (budget.size + entry > EXTERNAL_XATTR_MAX) throw new Error(`too much xattr data on one file`);
  budget.size += entry;
  node.xattrs.set(key, value);
}

interface Slot { node: FsNode; linkTarget?: string; lineNo: number; isLink: boolean; wasLink?: boolean }

function splitComponents(path: string): string[] {
  // mkcomposefs skips runs of '/', so "a//b" is "a/b"; a trailing '/' leaves an empty name.
  const trimmed = path.replace(/^\/+/, '');
  if (trimmed === '') return [];
  return trimmed.split(/\/+/);
}

/**
 * Parse a composefs dump into an FsNode tree. Strict by default; `lenient`
 * accepts what mkcomposefs accepts without CFS_PARSE_STRICT (a last line
 * without newline, symlink size not matching its target, rdev on non-devices).
 */
export function parseDump(input: Uint8Array | string, opts: { lenient?: boolean } = {}): FsNode {
  const lenient = opts.lenient ?? false;
  const data = typeof input === 'string' ? Buffer.from(input, 'latin1') : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  let root: FsNode | undefined;
  // Every entry by the slots of its parent directory: link entries are placeholders until resolved.
  const dirSlots = new Map<FsNode, Map<string, Slot>>();
  const links: Slot[] = [];

  const lookupSlot = (path: string): Slot | undefined => {
    let slot: Slot | undefined = root ? { node: root, lineNo: 0, isLink: false } : undefined;
    for (const name of splitComponents(path)) {
      if (!slot) return undefined;
      slot = dirSlots.get(slot.node)?.get(name);
    }
    return slot;
  };

  let start = 0;
  let lineNo = 0;
  while (start < data.length) {
    lineNo++;
    let end = data.indexOf(0x0a, start);
    if (end < 0) {
      if (!lenient) throw new DumpError(lineNo, 'missing trailing newline');
      end = data.length;
    }
    const line = data.subarray(start, end);
    start = end + 1;
    try {
      parseLine(line, lineNo);
    } catch (e) {
      if (e instanceof CowshedError) throw e;
      throw new DumpError(lineNo, (e as Error).message);
    }
  }
  if (!root) throw new CowshedError('EFORMAT', 'composefs dump has no files');

  // Resolve hardlinks now that every file exists: the link's name then refers to the target object.
  const resolving = new Set<Slot>();
  const linked = new Set<FsNode>();
  const resolve = (slot: Slot): FsNode => {
    if (!slot.isLink) return slot.node;
    if (resolving.has(slot)) throw new DumpError(slot.lineNo, 'hardlink loop');
    resolving.add(slot);
    const path = slot.linkTarget;
    if (path === undefined) throw new DumpError(slot.lineNo, 'no target path for the hardlink');
    const target = lookupSlot(path);
    if (!target) throw new DumpError(slot.lineNo, `no target at ${escapeName(path)} for hardlink`);
    if (target === slot) throw new DumpError(slot.lineNo, `self-referential hardlink ${escapeName(path)}`);
    const node = resolve(target);
    if ((node.mode & S_IFMT) === S_IFDIR) throw new DumpError(slot.lineNo, `hardlink to directory ${escapeName(path)}`);
    slot.isLink = false;
    slot.wasLink = true;
    slot.node = node;
    linked.add(node);
    resolving.delete(slot);
    return node;
  };
  for (const l of links) resolve(l);

  // Materialise children maps in name order, and directory link counts.
  const build = (dir: FsNode): void => {
    const slots = dirSlots.get(dir)!;
    const names = [...slots.keys()].sort(compareNames);
    dir.children = new Map();
    let subdirs = 0;
    for (const name of names) {
      const slot = slots.get(name)!;
      const child = slot.node;
      if (!slot.wasLink && linked.has(child)) hardlinkPrimary.set(child, { dir, name });
      dir.children.set(name, child);
      if ((child.mode & S_IFMT) === S_IFDIR) {
        subdirs++;
        build(child);
      }
    }
    dir.nlink = 2 + subdirs;
  };
  build(root);
  return root;

  function parseLine(line: Buffer, no: number): void {
    if (line.indexOf(0) >= 0) throw new Error(`embedded NUL at position ${line.indexOf(0)}`);
    const fields: Buffer[] = [];
    let rest = line;
    for (let i = 0; i < 11; i++) {
      const sp = rest.indexOf(0x20);
      if (sp < 0) {
        fields.push(rest);
        rest = Buffer.alloc(0);
      } else {
        fields.push(rest.subarray(0, sp));
        rest = rest.subarray(sp + 1);
      }
    }
    const [fPath, fSize, fMode0, fNlink, fUid, fGid, fRdev, fMtime, fPayload, fContent, fDigest] = fields as [
      Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer];
    const path = text(unescape(fPath));
    if (path === '') throw new Error('invalid empty path');
    let fMode = fMode0;
    const isLink = fMode.length > 0 && fMode[0] === 0x40;
    if (isLink) fMode = fMode.subarray(1);
    const modeBig = parseUint(fMode, 8, 'mode');
    if (modeBig > 0xffffffffn) throw new Error('mode out of range');
    const mode = Number(modeBig);
    if (!validType(mode)) throw new Error(`invalid mode ${mode.toString(8)}`);
    const type = mode & S_IFMT;
    const node = newNode(mode);
    const slot: Slot = { node, lineNo: no, isLink };

    // Place the entry in the tree.
    if (path === '/') {
      if (type !== S_IFDIR) throw new Error('root must be a directory');
      if (root) throw new Error("can't have multiple roots");
      if (isLink) throw new Error('root cannot be a hardlink');
      root = node;
      dirSlots.set(node, new Map());
    } else {
      if (!root) throw new Error('root node not present');
      const parts = splitComponents(path);
      const name = path.endsWith('/') ? '' : (parts.pop() ?? '');
      let parent: Slot = { node: root, lineNo: 0, isLink: false };
      for (const p of parts) {
        const next = dirSlots.get(parent.node)?.get(p);
        if (!next) throw new Error(`parent directory missing for ${escapeName(path)}`);
        parent = next;
      }
      const siblings = dirSlots.get(parent.node);
      if (!siblings || parent.isLink) throw new Error(`parent must be a directory for ${escapeName(path)}`);
      if (name === '.' || name === '..') throw new Error(`invalid . or .. in path: ${escapeName(path)}`);
      if (name === '') throw new Error(`invalid empty name in path: ${escapeName(path)}`);
      if (name.length > NAME_MAX) throw new Error(`name too long in path: ${escapeName(path)}`);
      if (siblings.has(name)) throw new Error(`path ${escapeName(path)} already exists`);
      siblings.set(name, slot);
    }

    if (isLink) {
      if (type === S_IFDIR) throw new Error("directories can't be hardlinked");
      const target = unescapeOptional(fPayload);
      if (target !== undefined) slot.linkTarget = text(target);
      links.push(slot);
      return;
    }
    if (type === S_IFDIR) dirSlots.set(node, new Map());

    const size = parseUint(fSize, 10, 'size');
    const nlink = parseUint(fNlink, 10, 'nlink');
    const uid = parseUint(fUid, 10, 'uid');
    const gid = parseUint(fGid, 10, 'gid');
    const rdev = parseUint(fRdev, 10, 'rdev');
    const dot = fMtime.indexOf(0x2e);
    if (dot < 0) throw new Error('invalid mtime (want SECONDS.NANOSECONDS)');
    const mtimeSec = parseUint(fMtime.subarray(0, dot), 10, 'mtime');
    const mtimeNsec = parseUint(fMtime.subarray(dot + 1), 10, 'mtime nanoseconds');
    const payload = unescapeOptional(fPayload);
    const content = unescapeOptional(fContent);
    if (content !== undefined && BigInt(content.length) !== size) {
      throw new Error(`invalid content size ${content.length}, must match size ${size}`);
    }
    const digestField = unescapeOptional(fDigest);

    node.nlink = Number(nlink & 0xffffffffn);
    node.uid = Number(uid & 0xffffffffn);
    node.gid = Number(gid & 0xffffffffn);
    node.mtimeSec = Number(BigInt.asIntN(64, mtimeSec));
    node.mtimeNsec = Number(mtimeNsec & 0xffffffffn);
    if (type === S_IFCHR || type === S_IFBLK) {
      if (rdev > 0xffffffffn) throw new Error('rdev out of range');
      node.rdev = Number(rdev);
    } else if (!lenient && rdev !== 0n) {
      throw new Error('non-zero devnum on non-device');
    }
    if (type === S_IFLNK) {
      if (payload === undefined || payload.length === 0) throw new Error('invalid symlink: empty target');
      if (payload.length >= PATH_MAX) throw new Error(`symlink target too long (${payload.length} bytes)`);
      if (!lenient) {
        if (BigInt(payload.length) !== size) {
          throw new Error(`invalid symlink size ${size}, must match target length ${payload.length}`);
        }
        if (content !== undefined && content.length > 0) throw new Error('symlink cannot have content');
      }
      node.target = text(payload);
    } else {
      if (payload !== undefined) {
        if (payload.length >= PATH_MAX) throw new Error(`payload too long (${payload.length} bytes)`);
        // Only regular files use a payload (the backing file path).
        if (type === S_IFREG) node.payload = text(payload);
      }
      if (type === S_IFREG) {
        if (size > BigInt(Number.MAX_SAFE_INTEGER) + 1n) throw new Error(`file size ${size} too large`);
        node.size = Number(size);
      }
      if (content !== undefined) {
        if (content.length > INLINE_CONTENT_MAX) {
          throw new Error(`inline content size ${content.length} exceeds maximum ${INLINE_CONTENT_MAX}`);
        }
        if (type === S_IFREG) {
          node.size = content.length;
          if (content.length > 0) node.inline = new Uint8Array(content);
        }
      }
    }
    if (digestField !== undefined && type === S_IFREG) {
      const hex = digestField.toString('latin1');
      if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error(`invalid digest ${JSON.stringify(hex)}`);
      node.digest = new Uint8Array(Buffer.from(hex, 'hex'));
    }

    if (rest.length > 0xffff) throw new Error('too many xattrs');
    const budget: XattrBudget = { size: 0 };
    while (rest.length > 0) {
      const sp = rest.indexOf(0x20);
      const item = sp < 0 ? rest : rest.subarray(0, sp);
      rest = sp < 0 ? Buffer.alloc(0) : rest.subarray(sp + 1);
      const eq = item.indexOf(0x3d);
      if (eq < 0) throw new Error('missing = in xattr');
      const key = text(unescape(item.subarray(0, eq)));
      const value = unescape(item.subarray(eq + 1));
      setXattrChecked(node, budget, key, new Uint8Array(value));
    }
  }
}

// --- printing ---

const NOESCAPE_SPACE = 1;
const ESCAPE_EQUAL = 2;
const ESCAPE_LONE_DASH = 4;

const PLAIN = /^[\x21-\x5b\x5d-\x7e]*$/; // graphic ASCII except backslash

function escape(bytes: Uint8Array, flags: number): string {
  if (flags & ESCAPE_LONE_DASH && bytes.length === 1 && bytes[0] === 0x2d) return '\\x2d';
  const fast = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  if (PLAIN.test(fast) && !(flags & ESCAPE_EQUAL && fast.includes('='))) return fast;
  let s = '';
  for (const c of bytes) {
    if (c === 0x5c) s += '\\\\';
    else if (c === 0x0a) s += '\\n';
    else if (c === 0x0d) s += '\\r';
    else if (c === 0x09) s += '\\t';
    else if (c === 0x3d && flags & ESCAPE_EQUAL) s += '\\x3d';
    else if (c === 0x3d) s += '=';
    else if (flags & NOESCAPE_SPACE ? c >= 0x20 && c < 0x7f : c > 0x20 && c < 0x7f) s += String.fromCharCode(c);
    else s += '\\x' + c.toString(16).padStart(2, '0');
  }
  return s;
}

const esc = (s: string, flags = 0): string => escape(Buffer.from(s, 'latin1'), flags);

/** Print the tree in the dump format, entries depth-first in name order; a file's later names are `@` hardlinks. */
export function printDump(root: FsNode): string {
  const out: string[] = [];
  const seen = new Map<FsNode, string>();
  const visit = (node: FsNode, path: string): void => {
    const first = seen.get(node);
    const type = node.mode & S_IFMT;
    const shown = path === '' ? '/' : path;
    let size: number | bigint = type === S_IFREG ? node.size : 0;
    if (type === S_IFLNK) size = (node.target ?? '').length;
    const payload = first !== undefined ? first : type === S_IFLNK ? node.target : node.payload;
    const content = type === S_IFREG && node.inline ? escape(node.inline, ESCAPE_LONE_DASH) : '-';
    const digest = type === S_IFREG && node.digest ? Buffer.from(node.digest).toString('hex') : '-';
    let line = `${esc(shown)} ${size} ${first !== undefined ? '@' : ''}${node.mode.toString(8)} ${node.nlink} ` +
      `${node.uid} ${node.gid} ${node.rdev} ${node.mtimeSec}.${node.mtimeNsec} ` +
      `${payload === undefined ? '-' : esc(payload, ESCAPE_LONE_DASH)} ${content} ${digest}`;
    const keys = [...node.xattrs.keys()].sort(compareNames);
    for (const k of keys) line += ` ${esc(k, ESCAPE_EQUAL)}=${escape(node.xattrs.get(k)!, ESCAPE_EQUAL)}`;
    out.push(line + '\n');
    if (first === undefined) seen.set(node, shown);
    if (type === S_IFDIR && node.children && first === undefined) {
      for (const name of [...node.children.keys()].sort(compareNames)) visit(node.children.get(name)!, `${path}/${name}`);
    }
  };
  visit(root, '');
  return out.join('');
}
