// The composefs dump text format (man composefs-dump): one line per file,
// 11 space-separated fields, then `key=value` xattrs, with `\xHH` escapes.
// The parser follows mkcomposefs 1.0.x's rules and limits so that whatever
// it accepts the EROFS writer can also write; printDump writes what
// `composefs-info dump` prints.
import {
  type FsNode, S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK,
  compareNames, newNode, hardlinkPrimary, isKnownType,
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


/** Paths, link targets and xattr names are bytes, kept as binary strings (util/names.ts). */
const text = (b: Buffer): string => b.toString('latin1');

function parseUintBig(f: Buffer, base: 8 | 10, what: string): bigint {
  const s = f.toString('latin1');
  const re = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(s)) throw new Error(`invalid ${what} ${JSON.stringify(s)}`);
  const v = base === 8 ? BigInt('0o' + s) : BigInt(s);
  if (v > 0xffffffffffffffffn) throw new Error(`${what} out of range`);
  return v;
}

/**
 * An unsigned number field: a Number while it is surely exact (15 digits),
 * else a BigInt; anything unusual (a bad digit, an empty field) takes the
 * BigInt path, which gives the error.
 */
function parseUint(data: Buffer, s: number, e: number, base: 8 | 10, what: string): number | bigint {
  if (e > s && e - s <= 15) {
    let v = 0;
    let i = s;
    for (; i < e; i++) {
      const d = data[i]! - 0x30;
      if (d < 0 || d >= base) break;
      v = v * base + d;
    }
    if (i === e) return v;
  }
  return parseUintBig(data.subarray(s, e), base, what);
}
const low32 = (v: number | bigint): number => (typeof v === 'number' ? v % 2 ** 32 : Number(v & 0xffffffffn));
const int64 = (v: number | bigint): number => (typeof v === 'number' ? v : Number(BigInt.asIntN(64, v)));

/** A 64-digit hex field (bytes s..e of b) as 32 bytes, or undefined if it is not one. */
function hexDigest(b: Uint8Array, s = 0, e = b.length): Uint8Array | undefined {
  if (e - s !== 64) return undefined;
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    const hi = hexValue(b[s + 2 * i]!), lo = hexValue(b[s + 2 * i + 1]!);
    if (hi < 0 || lo < 0) return undefined;
    out[i] = (hi << 4) | lo;
  }
  return out;
}
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

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
  // The same directories by their path as the dump spells it: an entry's
  // parent is then one lookup (a dump lists a directory before its
  // contents); other spellings ("a//b", relative) walk the components.
  const dirsByPath = new Map<string, Map<string, Slot>>();
  const links: Slot[] = [];
  // Where the current line's 11 fields start and end in `data` (the xattrs
  // follow), and whether the line has any escape; read by the helpers below.
  const fieldAt = new Int32Array(22);
  let escaped = false;
  const raw = (f: number): Buffer => data.subarray(fieldAt[2 * f]!, fieldAt[2 * f + 1]!);
  const isDashField = (f: number): boolean => fieldAt[2 * f + 1]! - fieldAt[2 * f]! === 1 && data[fieldAt[2 * f]!] === 0x2d;
  /** A field as a binary string, unescaped; most lines have no escape and are sliced directly. */
  const str = (s: number, e: number): string => (escaped ? text(unescape(data.subarray(s, e))) : data.toString('latin1', s, e));
  const field = (f: number): string => str(fieldAt[2 * f]!, fieldAt[2 * f + 1]!);
  const optional = (f: number): string | undefined => (isDashField(f) ? undefined : field(f));
  const num = (f: number, base: 8 | 10, what: string, from = fieldAt[2 * f]!, to = fieldAt[2 * f + 1]!): number | bigint =>
    parseUint(data, from, to, base, what);

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
    const lineStart = start;
    start = end + 1;
    try {
      parseLine(lineStart, end, lineNo);
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
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
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

  function parseLine(ls: number, le: number, no: number): void {
    // One pass over the line: field boundaries, NULs, and whether anything is escaped.
    let nf = 0, fs = ls;
    escaped = false;
    for (let i = ls; i < le; i++) {
      const c = data[i]!;
      if (c === 0x20) {
        if (nf < 11) { fieldAt[2 * nf] = fs; fieldAt[2 * nf + 1] = i; nf++; fs = i + 1; }
      } else if (c === 0) {
        throw new Error(`embedded NUL at position ${i - ls}`);
      } else if (c === 0x5c) {
        escaped = true;
      }
    }
    let restStart = fs;
    for (; nf < 11; nf++) { fieldAt[2 * nf] = fs; fieldAt[2 * nf + 1] = le; fs = le; restStart = le; }

    const path = field(0);
    if (path === '') throw new Error('invalid empty path');
    let modeStart = fieldAt[4]!;
    const isLink = modeStart < fieldAt[5]! && data[modeStart] === 0x40;
    if (isLink) modeStart++;
    const modeNum = num(2, 8, 'mode', modeStart);
    if (modeNum > 0xffffffff) throw new Error('mode out of range');
    const mode = Number(modeNum);
    if (!isKnownType(mode)) throw new Error(`invalid mode ${mode.toString(8)}`);
    const type = mode & S_IFMT;
    const node = newNode(mode);
    const slot: Slot = { node, lineNo: no, isLink };

    // Place the entry in the tree.
    if (path === '/') {
      if (type !== S_IFDIR) throw new Error('root must be a directory');
      if (root) throw new Error("can't have multiple roots");
      if (isLink) throw new Error('root cannot be a hardlink');
      root = node;
    } else {
      let siblings: Map<string, Slot> | undefined;
      let name = '';
      const slash = path.lastIndexOf('/');
      if (slash >= 0 && slash < path.length - 1 && path.charCodeAt(0) === 0x2f && !path.includes('//')) {
        siblings = dirsByPath.get(slash === 0 ? '/' : path.slice(0, slash));
        name = path.slice(slash + 1);
      }
      if (!siblings) {
        if (!root) throw new Error('root node not present');
        const parts = splitComponents(path);
        name = path.endsWith('/') ? '' : (parts.pop() ?? '');
        let parent: Slot = { node: root, lineNo: 0, isLink: false };
        for (const p of parts) {
          const next = dirSlots.get(parent.node)?.get(p);
          if (!next) throw new Error(`parent directory missing for ${escapeName(path)}`);
          parent = next;
        }
        siblings = dirSlots.get(parent.node);
        if (!siblings || parent.isLink) throw new Error(`parent must be a directory for ${escapeName(path)}`);
      }
      if (name === '.' || name === '..') throw new Error(`invalid . or .. in path: ${escapeName(path)}`);
      if (name === '') throw new Error(`invalid empty name in path: ${escapeName(path)}`);
      if (name.length > NAME_MAX) throw new Error(`name too long in path: ${escapeName(path)}`);
      if (siblings.has(name)) throw new Error(`path ${escapeName(path)} already exists`);
      siblings.set(name, slot);
    }

    if (isLink) {
      if (type === S_IFDIR) throw new Error("directories can't be hardlinked");
      const target = optional(8);
      if (target !== undefined) slot.linkTarget = target;
      links.push(slot);
      return;
    }
    if (type === S_IFDIR) {
      const slots = new Map<string, Slot>();
      dirSlots.set(node, slots);
      dirsByPath.set(path, slots);
    }

    const size = num(1, 10, 'size');
    const nlink = num(3, 10, 'nlink');
    const uid = num(4, 10, 'uid');
    const gid = num(5, 10, 'gid');
    const rdev = num(6, 10, 'rdev');
    let dot = fieldAt[14]!;
    while (dot < fieldAt[15]! && data[dot] !== 0x2e) dot++;
    if (dot === fieldAt[15]!) throw new Error('invalid mtime (want SECONDS.NANOSECONDS)');
    const mtimeSec = num(7, 10, 'mtime', fieldAt[14]!, dot);
    const mtimeNsec = num(7, 10, 'mtime nanoseconds', dot + 1);
    const payload = optional(8);
    const content = isDashField(9) ? undefined : unescape(raw(9));
    if (content !== undefined && Number(size) !== content.length) {
      throw new Error(`invalid content size ${content.length}, must match size ${size}`);
    }
    // Most lines have no escape: the digest is then read in place.
    const digestField = isDashField(10) || !escaped ? undefined : unescape(raw(10));

    node.nlink = low32(nlink);
    node.uid = low32(uid);
    node.gid = low32(gid);
    node.mtimeSec = int64(mtimeSec);
    node.mtimeNsec = low32(mtimeNsec);
    if (type === S_IFCHR || type === S_IFBLK) {
      if (rdev > 0xffffffff) throw new Error('rdev out of range');
      node.rdev = Number(rdev);
    } else if (!lenient && Number(rdev) !== 0) {
      throw new Error('non-zero devnum on non-device');
    }
    if (type === S_IFLNK) {
      if (payload === undefined || payload.length === 0) throw new Error('invalid symlink: empty target');
      if (payload.length >= PATH_MAX) throw new Error(`symlink target too long (${payload.length} bytes)`);
      if (!lenient) {
        if (Number(size) !== payload.length) {
          throw new Error(`invalid symlink size ${size}, must match target length ${payload.length}`);
        }
        if (content !== undefined && content.length > 0) throw new Error('symlink cannot have content');
      }
      node.target = payload;
    } else {
      if (payload !== undefined) {
        if (payload.length >= PATH_MAX) throw new Error(`payload too long (${payload.length} bytes)`);
        // Only regular files use a payload (the backing file path).
        if (type === S_IFREG) node.payload = payload;
      }
      if (type === S_IFREG) {
        if (size > Number.MAX_SAFE_INTEGER + 1) throw new Error(`file size ${size} too large`);
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
    if (!isDashField(10) && type === S_IFREG) {
      const digest = digestField ? hexDigest(digestField) : hexDigest(data, fieldAt[20]!, fieldAt[21]!);
      if (!digest) throw new Error(`invalid digest ${JSON.stringify(digestField?.toString('latin1') ?? field(10))}`);
      node.digest = digest;
    }

    if (le - restStart > 0xffff) throw new Error('too many xattrs');
    const budget: XattrBudget = { size: 0 };
    let p = restStart;
    while (p < le) {
      let sp = p;
      while (sp < le && data[sp] !== 0x20) sp++;
      let eq = p;
      while (eq < sp && data[eq] !== 0x3d) eq++;
      if (eq === sp) throw new Error('missing = in xattr');
      const key = str(p, eq);
      // A copy either way: the node must not keep the whole input alive.
      const value = new Uint8Array(escaped ? unescape(data.subarray(eq + 1, sp)) : data.subarray(eq + 1, sp));
      setXattrChecked(node, budget, key, value);
      p = sp + 1;
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
