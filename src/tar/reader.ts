// Streaming tar reader: ustar, PAX (local and global headers), GNU (long
// names 'L'/'K', base-256 numbers) and old v7 archives, in bounded memory.
//
// Why our own: PAX `SCHILY.xattr.*` values are binary (security.capability),
// so PAX records are parsed as bytes and never decoded as UTF-8; common npm
// tar packages corrupt or drop them. Paths are returned as written (the
// importer normalises them and rejects hostile ones).
//
// Which bytes form a body follows Go's archive/tar (what containers/storage
// and podman use), so a layer means the same thing to us as to them: hard
// links, symlinks, devices, fifos and directories never have one, whatever
// their size field says.
import { CowshedError } from '../util/errors.ts';
import { FsVerityHasher } from '../composefs/fsverity.ts';
import { StreamInput, type ByteInput } from './input.ts';
import type { TarSplitWriter } from './split.ts';
import { bin, escapeName } from '../util/names.ts';
import { ZERO_CHUNK } from '../util/zeros.ts';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarEntry {
  /** Path as written in the archive (after PAX `path` / GNU 'L'), e.g. "./usr/bin/x" or "usr/bin/". */
  path: string;
  /** Hard link or symlink target (after PAX `linkpath` / GNU 'K'); "" for other types. */
  linkname: string;
  type: TarEntryType;
  /** Permission bits, setuid/setgid/sticky included (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Body length: the file's size for 'file'; 0 for the header-only types (all but 'file' and GNU dumpdirs). */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes, full name ("user.x", "security.capability") to raw bytes. */
  xattrs: Map<string, Uint8Array>;
  /** Offset in the archive of this entry's first header block (PAX and GNU long-name headers included). */
  headerOffset: number;
  /** Offset in the archive of the first body byte. */
  dataOffset: number;
  /** The body: exactly `size` bytes. Once only, and before asking for the next entry. */
  body(): AsyncIterable<Uint8Array>;
  /**
   * When reading with a tar-split writer: the fs-verity digest (32 bytes) of
   * this file's body, which the record refers to. Call it before asking for
   * the next entry for every 'file' with size > 0 whose body you read. If
   * you skip the body the reader hashes it for you.
   */
  setContentDigest(digest: Uint8Array): void;
}

export interface ReadTarOptions {
  /** Records every byte of the archive except file contents, for a byte-exact rebuild. */
  split?: TarSplitWriter;
}

const BLOCK = 512;
/** Largest PAX or GNU long-name record we accept; real ones are a few KiB (libarchive's tests have one of 8 MB). */
export const MAX_META_SIZE = 64 << 20;
/** Most bytes of non-zero data we keep after the end of the archive. */
const MAX_TRAILING_DATA = 1 << 20;
const BODY_CHUNK = 1 << 20;

const formatError = (msg: string): CowshedError => new CowshedError('EFORMAT', msg);
const truncated = (where: string, offset: number): CowshedError =>
  formatError(`truncated tar archive: input ends ${where} (offset ${offset})`);

// ---- header fields -------------------------------------------------------

/** Bytes up to the first NUL. */
function cstring(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}


/** Largest value a field may hold, by field (GNU tar: uid_t, gid_t, off_t, mode_t, time_t, major_t, minor_t). */
const MAXVAL: Record<string, number> = {
  mode: 0o7777777, uid: 0xffffffff, gid: 0xffffffff, size: Number.MAX_SAFE_INTEGER, mtime: Number.MAX_SAFE_INTEGER,
  devmajor: 0xffffffff, devminor: 0xffffffff, chksum: 0xffffffff, offset: Number.MAX_SAFE_INTEGER, numbytes: Number.MAX_SAFE_INTEGER,
  realsize: Number.MAX_SAFE_INTEGER,
};
/** Fields that may be negative (GNU tar: time_t). */
const SIGNED = new Set(['mtime']);

const isSpace = (c: number): boolean => c === 0x20 || (c >= 0x09 && c <= 0x0d);

/**
 * A numeric header field, read as GNU tar's from_header reads it: one
 * leading NUL skipped (old tars overflowed into it), leading blanks, octal
 * digits ended by the field's end, a NUL or a blank (whatever follows is
 * ignored); or base-256 when the first byte is 0x80 (positive) or 0xff
 * (negative, two's complement). A value out of the field's range is
 * refused, never wrapped.
 */
export function parseNumber(field: Buffer, what: string, offset: number): number {
  const lim = field.length;
  const outOfRange = (): CowshedError => formatError(`tar header field ${what} out of range (offset ${offset})`);
  const max = MAXVAL[what] ?? Number.MAX_SAFE_INTEGER;
  let p = 0;
  if (p < lim && field[p] === 0) p++;
  for (;;) {
    if (p === lim) {
      // GNU tar: "Blanks in header where numeric value expected" (an all-blank field).
      if (lim > 0 && field[0] !== 0) throw formatError(`tar header field ${what} is blank (offset ${offset})`);
      return 0;
    }
    if (!isSpace(field[p])) break;
    p++;
  }
  const c0 = field[p];
  let value: number;
  if (c0 >= 0x30 && c0 <= 0x37) {
    value = 0;
    while (p < lim && field[p] >= 0x30 && field[p] <= 0x37) {
      value = value * 8 + (field[p] - 0x30);
      p++;
    }
    if (!Number.isSafeInteger(value)) throw outOfRange();
  } else if (c0 === 0x80 || c0 === 0xff) {
    const negative = c0 === 0xff;
    let v = 0n;
    for (let i = p; i < lim; i++) {
      let c = negative ? field[i] ^ 0xff : field[i];
      if (i === p) c &= 0x3f;
      v = (v << 8n) | BigInt(c);
    }
    if (negative) v = -v - 1n;
    if (v > BigInt(max) || (v < 0n && !SIGNED.has(what)) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw outOfRange();
    return Number(v);
  } else if (c0 === 0) {
    return 0;
  } else {
    throw formatError(`tar header field ${what} is not a number (offset ${offset})`);
  }
  if (p < lim && field[p] !== 0 && !isSpace(field[p])) throw formatError(`tar header field ${what} is not a number (offset ${offset})`);
  if (value > max) throw outOfRange();
  return value;
}

/** Header checksum: the sum of its bytes with the checksum field as spaces, unsigned or (old tars) signed. */
function checksumMatches(block: Buffer, offset: number): boolean {
  let stored: number;
  try {
    stored = parseNumber(block.subarray(148, 156), 'chksum', offset);
  } catch {
    return false;
  }
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += b;
    signed += b >= 0x80 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

const isZeroBlock = (b: Buffer): boolean => {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
};

type HeaderFormat = 'v7' | 'ustar' | 'star' | 'gnu';

/** The fields of one 512-byte header block, before PAX / GNU overrides. */
interface RawHeader {
  format: HeaderFormat;
  typeflag: number;
  name: Buffer;
  linkname: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  uname: Buffer;
  gname: Buffer;
  devmajor: number;
  devminor: number;
}

/** Parses a header block whose checksum was verified. */
export function parseHeaderBlock(block: Buffer, offset: number): RawHeader {
  const magic = block.toString('latin1', 257, 263);
  const version = block.toString('latin1', 263, 265);
  let format: HeaderFormat = 'v7';
  if (magic === 'ustar ' && version === ' \0') format = 'gnu';
  else if (magic === 'ustar\0') format = block.toString('latin1', 508, 512) === 'tar\0' ? 'star' : 'ustar';
  const num = (start: number, len: number, what: string): number => parseNumber(block.subarray(start, start + len), what, offset);

  let name = cstring(block.subarray(0, 100));
  const prefix = format === 'ustar' ? cstring(block.subarray(345, 500)) : format === 'star' ? cstring(block.subarray(345, 476)) : null;
  if (prefix && prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
  const extended = format !== 'v7';
  return {
    format,
    typeflag: block[156],
    name,
    linkname: cstring(block.subarray(157, 257)),
    mode: num(100, 8, 'mode'),
    uid: num(108, 8, 'uid'),
    gid: num(116, 8, 'gid'),
    size: num(124, 12, 'size'),
    mtime: num(136, 12, 'mtime'),
    uname: extended ? cstring(block.subarray(265, 297)) : Buffer.alloc(0),
    gname: extended ? cstring(block.subarray(297, 329)) : Buffer.alloc(0),
    // GNU tar reads the device fields of devices only (other writers leave them blank).
    devmajor: extended && (block[156] === 0x33 || block[156] === 0x34) ? num(329, 8, 'devmajor') : 0,
    devminor: extended && (block[156] === 0x33 || block[156] === 0x34) ? num(337, 8, 'devminor') : 0,
  };
}

// ---- PAX -------------------------------------------------------------------

/**
 * PAX extended header records, "LEN KEY=VALUE\n", as raw bytes, in order
 * (GNU sparse 0.0 repeats keys): values stay bytes (xattr values are
 * binary), keys are binary strings.
 */
export function parsePaxRecords(data: Buffer, offset: number): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  const bad = (why: string): CowshedError => formatError(`malformed PAX extended header (${why}) at offset ${offset}`);
  let p = 0;
  while (p < data.length) {
    // Some writers pad the record area with NULs; nothing follows them.
    if (data[p] === 0) {
      if (!isZeroBlock(data.subarray(p))) throw bad('data after NUL padding');
      break;
    }
    let len = 0;
    let q = p;
    while (q < data.length && data[q] >= 0x30 && data[q] <= 0x39 && q - p < 16) len = len * 10 + (data[q++] - 0x30);
    if (q === p || q >= data.length || data[q] !== 0x20) throw bad('bad record length');
    if (len <= q - p + 1 || p + len > data.length) throw bad('record length out of range');
    const rec = data.subarray(q + 1, p + len);
    if (rec[rec.length - 1] !== 0x0a) throw bad('record not ended by a newline');
    const eq = rec.indexOf(0x3d);
    if (eq <= 0 || eq > rec.length - 1) throw bad('record without key');
    out.push([rec.toString('latin1', 0, eq), Buffer.from(rec.subarray(eq + 1, rec.length - 1))]);
    p += len;
  }
  return out;
}

const paxDecimal = (v: Buffer, key: string, offset: number, max = Number.MAX_SAFE_INTEGER): number => {
  const s = v.toString('latin1');
  if (!/^[0-9]+$/.test(s)) throw formatError(`bad PAX ${key} value "${escapeName(s.slice(0, 40))}" at offset ${offset}`);
  const n = Number(s);
  // Refused, never wrapped (GNU tar: "Extended header uid=4294967301 is out of range").
  if (!Number.isSafeInteger(n) || n > max) throw formatError(`PAX ${key}=${s.slice(0, 40)} is out of range 0..${max} at offset ${offset}`);
  return n;
};

/** PAX time "SECONDS[.FRACTION]", possibly negative, to seconds and nanoseconds (floor). */
function paxTime(v: Buffer, offset: number): [number, number] {
  const s = v.toString('latin1');
  // GNU tar (decode_time: strtoul / timespec parsing) reads the number and
  // ignores what follows the fraction's digits; so do we.
  const m = /^(-?)([0-9]{1,16})(?:\.([0-9]*))?/.exec(s);
  if (!m) throw formatError(`bad PAX mtime value "${escapeName(s.slice(0, 40))}" at offset ${offset}`);
  let sec = Number(m[2]);
  let nsec = Number((m[3] ?? '').slice(0, 9).padEnd(9, '0'));
  if (m[1] === '-') {
    // As GNU tar: digits past the ninth still count when rounding a negative time down.
    const trailing = /[1-9]/.test((m[3] ?? '').slice(9)) ? 1 : 0;
    sec = -sec;
    if (nsec > 0 || trailing) {
      sec -= 1;
      nsec = 1e9 - nsec - trailing;
    }
  }
  if (!Number.isSafeInteger(sec)) throw formatError(`PAX mtime out of range at offset ${offset}`);
  return [sec, nsec];
}

/** "%41%42" style escapes used by libarchive in xattr names (binary string in, binary string out). */
function percentDecode(s: string): string {
  return s.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

const SCHILY_XATTR = 'SCHILY.xattr.';
const LIBARCHIVE_XATTR = 'LIBARCHIVE.xattr.';

/** Xattrs from PAX records: names are binary strings (exact bytes), values raw bytes. */
function paxXattrs(pax: Map<string, Buffer>): Map<string, Uint8Array> {
  const xattrs = new Map<string, Uint8Array>();
  // libarchive writes both forms; the SCHILY one is exact bytes and wins.
  for (const [k, v] of pax) {
    if (k.startsWith(LIBARCHIVE_XATTR) && k.length > LIBARCHIVE_XATTR.length) {
      xattrs.set(percentDecode(k.slice(LIBARCHIVE_XATTR.length)), Buffer.from(v.toString('latin1'), 'base64'));
    } else if (k === 'RHT.security.selinux') {
      xattrs.set('security.selinux', v);
    }
  }
  for (const [k, v] of pax) {
    if (k.startsWith(SCHILY_XATTR) && k.length > SCHILY_XATTR.length) xattrs.set(k.slice(SCHILY_XATTR.length), v);
  }
  return xattrs;
}

// ---- sparse files ------------------------------------------------------------

/** A sparse file's layout: data segments (offset, length) of a file of `realSize` bytes. */
interface SparseInfo {
  realSize: number;
  /** Known from the headers (old GNU, PAX 0.0 and 0.1); null for PAX 1.0, whose map starts the body. */
  map: Array<[number, number]> | null;
}


/** Old GNU sparse map entries (offset 12 bytes, numbytes 12 bytes each); false at the first empty one. */
function oldGnuSparse(b: Buffer, count: number, into: Array<[number, number]>, offset: number): boolean {
  for (let i = 0; i < count; i++) {
    const e = b.subarray(i * 24, i * 24 + 24);
    if (e[12] === 0) return false;
    into.push([parseNumber(e.subarray(0, 12), 'offset', offset), parseNumber(e.subarray(12, 24), 'numbytes', offset)]);
  }
  return true;
}

// ---- the reader --------------------------------------------------------------

const TYPES: Record<string, TarEntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink',
  '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
  'D': 'dir', // GNU dumpdir: a directory whose body lists its names
  'S': 'file', // old GNU sparse file
};
const UNSUPPORTED: Record<string, string> = {
  'M': 'GNU multi-volume continuation',
  'N': 'old GNU long name',
};

/** Largest path GNU tar or Linux takes (PATH_MAX, with its NUL) and largest name (NAME_MAX). */
const PATH_MAX = 4096;
const NAME_MAX = 255;

class Entry implements TarEntry {
  path = '';
  linkname = '';
  type: TarEntryType = 'file';
  mode = 0;
  uid = 0;
  gid = 0;
  uname = '';
  gname = '';
  size = 0;
  mtimeSec = 0;
  mtimeNsec = 0;
  devmajor = 0;
  devminor = 0;
  xattrs = new Map<string, Uint8Array>();
  headerOffset = 0;
  dataOffset = 0;

  /** Archive body bytes not yet read. */
  remaining = 0;
  bodyStarted = false;
  /** The reader moved on: the body can no longer be read. */
  closed = false;
  digest: Buffer | null = null;
  /** Body bytes go to the split record as raw bytes (not content). */
  bodyIsRaw = false;
  sparse: SparseInfo | null = null;
  /** Body bytes in the archive (a sparse file's map and data; otherwise size). */
  storedSize = 0;
  input!: ByteInput;
  split: TarSplitWriter | undefined;

  body(): AsyncIterable<Uint8Array> {
    if (this.bodyStarted) throw new Error(`tar: body of ${escapeName(this.path)} read twice`);
    if (this.closed) throw new Error(`tar: body of ${escapeName(this.path)} read after moving to the next entry`);
    this.bodyStarted = true;
    return this.sparse ? this.streamSparse(this.sparse) : this.streamBody();
  }

  /** Up to `max` archive bytes of the body. */
  private async take(max: number): Promise<Buffer> {
    if (this.closed) throw new Error(`tar: body of ${escapeName(this.path)} read after moving to the next entry`);
    const chunk = await this.input.readChunk(Math.min(this.remaining, max));
    if (chunk.length === 0) throw truncated(`inside the body of ${escapeName(this.path)}`, this.input.position);
    this.remaining -= chunk.length;
    if (this.bodyIsRaw) this.split?.raw(chunk);
    return chunk;
  }

  private async *streamBody(): AsyncGenerator<Uint8Array> {
    while (this.remaining > 0) yield await this.take(BODY_CHUNK);
  }

  /** A PAX 1.0 map: decimal numbers one a line (count, then offset/length pairs), padded to a block. */
  async readSparseMap(): Promise<Array<[number, number]>> {
    const malformed = (): CowshedError => formatError(`${escapeName(this.path)}: malformed sparse archive member`);
    let text = '';
    let used = 0;
    const line = async (): Promise<number> => {
      for (;;) {
        const nl = text.indexOf('\n');
        if (nl >= 0) {
          const l = text.slice(0, nl);
          text = text.slice(nl + 1);
          if (!/^[0-9]{1,17}$/.test(l) || !Number.isSafeInteger(Number(l))) throw malformed();
          return Number(l);
        }
        if (text.length > 64 || this.remaining === 0 || used > MAX_META_SIZE) throw malformed();
        const c = await this.take(BLOCK);
        used += c.length;
        text += c.toString('latin1');
      }
    };
    const n = await line();
    const map: Array<[number, number]> = [];
    for (let i = 0; i < n; i++) map.push([await line(), await line()]);
    // The map's blocks end where a block ends: drop the rest of its last block.
    const pad = (BLOCK - (used % BLOCK)) % BLOCK;
    if (pad > 0) {
      let left = pad;
      while (left > 0) left -= (await this.take(left)).length;
    }
    return map;
  }

  /** The full content of a sparse file: zeros where the map has holes. */
  async *streamSparse(sp: SparseInfo): AsyncGenerator<Uint8Array> {
    const malformed = (): CowshedError => formatError(`${escapeName(this.path)}: malformed sparse archive member`);
    const map = sp.map ?? (await this.readSparseMap());
    let pos = 0;
    let data = 0;
    for (const [, len] of map) data += len;
    // GNU tar reads the segments and skips whatever the member has beyond them.
    if (data > this.remaining) throw malformed();
    for (const [off, len] of map) {
      if (off < pos || off + len > this.size) throw malformed();
      while (pos < off) {
        const n = Math.min(off - pos, BODY_CHUNK);
        pos += n;
        yield ZERO_CHUNK.subarray(0, n);
      }
      let left = len;
      while (left > 0) {
        const c = await this.take(Math.min(left, BODY_CHUNK));
        left -= c.length;
        pos += c.length;
        yield c;
      }
    }
    while (pos < this.size) {
      const n = Math.min(this.size - pos, BODY_CHUNK);
      pos += n;
      yield ZERO_CHUNK.subarray(0, n);
    }
  }

  setContentDigest(digest: Uint8Array): void {
    if (digest.length !== 32) throw new Error('tar: content digest must be 32 bytes');
    this.digest = Buffer.from(digest);
  }
}

/** Reads a tar archive as a stream of entries. See TarEntry for the rules of use. */
export async function* readTar(source: AsyncIterable<Uint8Array>, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry> {
  const input = new StreamInput(source);
  try {
    yield* readTarFrom(input, opts);
  } finally {
    await input.close();
  }
}

/** A path or link name as the reader hands it out: checked as GNU tar and Linux would take it. */
function checkName(name: string, what: string, offset: number, emptyOk: boolean): void {
  if (name.includes('\0')) throw formatError(`${what} "${escapeName(name)}" holds a NUL byte (offset ${offset})`);
  if (name === '' && !emptyOk) throw formatError(`empty ${what} (offset ${offset})`);
  if (name.length >= PATH_MAX) throw formatError(`${what} "${escapeName(name.slice(0, 64))}…" is longer than ${PATH_MAX - 1} bytes (offset ${offset})`);
  for (const part of name.split('/')) {
    if (part.length > NAME_MAX) throw formatError(`${what} "${escapeName(name)}" has a name longer than ${NAME_MAX} bytes (offset ${offset})`);
  }
}

/** The reader over any ByteInput (archive-index uses a file, where skipping bodies is free). */
export async function* readTarFrom(input: ByteInput, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry> {
  const split = opts.split;
  const raw = (b: Buffer): void => split?.raw(b);
  const globalPax = new Map<string, Buffer>();
  let localPax: Array<[string, Buffer]> | null = null;
  let longName: Buffer | null = null;
  let longLink: Buffer | null = null;
  let firstHeader = -1;

  /** A metadata body (PAX, GNU long name) with its padding; kept raw in the split. */
  const readMeta = async (size: number, what: string, offset: number): Promise<Buffer> => {
    if (size > MAX_META_SIZE) throw formatError(`${what} of ${size} bytes at offset ${offset} exceeds the ${MAX_META_SIZE}-byte limit`);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    const data = await input.read(padded);
    if (data.length < padded) throw truncated(`inside a ${what}`, input.position);
    raw(data);
    return Buffer.from(data.subarray(0, size));
  };

  const skipPadding = async (size: number): Promise<void> => {
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad === 0) return;
    const p = await input.read(pad);
    if (p.length < pad) throw truncated('inside padding', input.position);
    raw(p);
  };

  /** Moves past what the consumer left of an entry's body, recording it in the split. */
  const finishEntry = async (e: Entry): Promise<void> => {
    e.closed = true;
    if (e.bodyIsRaw || !split) {
      if (e.sparse && !e.bodyStarted && split && e.remaining > 0) {
        // Nobody read the sparse body: still check it is well formed (as extraction would).
        e.closed = false;
        e.bodyStarted = true;
        for await (const c of e.streamSparse(e.sparse)) void c;
        e.closed = true;
      }
      if (e.remaining > 0) {
        if (split) {
          while (e.remaining > 0) {
            const c = await input.readChunk(Math.min(e.remaining, BODY_CHUNK));
            if (c.length === 0) throw truncated(`inside the body of ${escapeName(e.path)}`, input.position);
            e.remaining -= c.length;
            raw(c);
          }
        } else {
          const n = await input.skip(e.remaining);
          e.remaining -= n;
          if (e.remaining > 0) throw truncated(`inside the body of ${escapeName(e.path)}`, input.position);
        }
      }
    } else if (e.size > 0) {
      // A regular file's content: recorded by digest.
      if (e.remaining > 0 && e.digest === null) {
        if (e.bodyStarted) throw new Error(`tar: body of ${escapeName(e.path)} only partly read and no content digest set`);
        const hasher = new FsVerityHasher();
        while (e.remaining > 0) {
          const c = await input.readChunk(Math.min(e.remaining, BODY_CHUNK));
          if (c.length === 0) throw truncated(`inside the body of ${escapeName(e.path)}`, input.position);
          e.remaining -= c.length;
          hasher.update(c);
        }
        e.digest = hasher.digest();
      } else if (e.remaining > 0) {
        const n = await input.skip(e.remaining);
        e.remaining -= n;
        if (e.remaining > 0) throw truncated(`inside the body of ${escapeName(e.path)}`, input.position);
      }
      if (e.digest === null) throw new Error(`tar: no content digest set for ${escapeName(e.path)} (call entry.setContentDigest)`);
      split.content(e.size, e.digest);
    }
    await skipPadding(e.storedSize);
  };

  /** After the end-of-archive block: whatever follows (usually zero padding to a record size). */
  const readTrailing = async (): Promise<void> => {
    if (!split) {
      await input.skip(Number.MAX_SAFE_INTEGER);
      return;
    }
    let nonZero = 0;
    for (;;) {
      const c = await input.readChunk(BODY_CHUNK);
      if (c.length === 0) break;
      if (!isZeroBlock(c)) {
        nonZero += c.length;
        if (nonZero > MAX_TRAILING_DATA) throw formatError(`more than ${MAX_TRAILING_DATA} bytes of data after the end of the tar archive`);
      }
      raw(c);
    }
  };

  for (;;) {
    const offset = input.position;
    const block = await input.read(BLOCK);
    if (block.length === 0) {
      // No end-of-archive blocks: GNU tar accepts that, and so do we.
      if (localPax || longName || longLink) throw truncated('after an extended header', offset);
      // An empty input is an empty archive (Go's archive/tar, and so podman, agree; GNU tar does not).
      break;
    }
    if (block.length < BLOCK) throw truncated(`inside a header (${block.length} of 512 bytes)`, offset);
    if (isZeroBlock(block)) {
      // GNU tar stops at the first zero block; the second one and anything after it are trailing bytes.
      if (localPax || longName || longLink) throw formatError(`tar archive ends after an extended header with no entry (offset ${offset})`);
      raw(block);
      await readTrailing();
      break;
    }
    if (!checksumMatches(block, offset)) {
      throw formatError(offset === 0 ? 'not a tar archive (bad header checksum at offset 0)' : `corrupt tar archive: bad header checksum at offset ${offset}`);
    }
    const h = parseHeaderBlock(block, offset);
    raw(block);
    if (firstHeader < 0) firstHeader = offset;
    const flag = String.fromCharCode(h.typeflag);

    // Metadata headers apply to the next entry.
    if (flag === 'x' || flag === 'X') {
      const recs = parsePaxRecords(await readMeta(h.size, 'PAX extended header', offset), offset);
      localPax ??= [];
      localPax.push(...recs);
      continue;
    }
    if (flag === 'g') {
      for (const [k, v] of parsePaxRecords(await readMeta(h.size, 'PAX global header', offset), offset)) {
        if (v.length === 0) globalPax.delete(k);
        else globalPax.set(k, v);
      }
      let total = 0;
      for (const [k, v] of globalPax) total += k.length + v.length;
      if (total > MAX_META_SIZE) throw formatError(`PAX global headers exceed ${MAX_META_SIZE} bytes (offset ${offset})`);
      continue;
    }
    if (flag === 'L') {
      longName = cstring(await readMeta(h.size, 'GNU long name', offset));
      continue;
    }
    if (flag === 'K') {
      longLink = cstring(await readMeta(h.size, 'GNU long link name', offset));
      continue;
    }
    if (flag === 'V') {
      // GNU volume label: names the archive, not a file.
      await readMeta(h.size, 'GNU volume label', offset);
      localPax = longName = longLink = null;
      firstHeader = -1;
      continue;
    }
    if (UNSUPPORTED[flag]) throw new CowshedError('EUNSUPPORTED', `unsupported tar entry (${UNSUPPORTED[flag]}) at offset ${offset}`);
    // Types nobody defined (Solaris ACLs 'A', star's 'I', …) are regular files, as POSIX says and GNU tar does.
    let type = TYPES[flag] ?? 'file';

    const pax = new Map(globalPax);
    const sparseMap00: Array<[number, number]> = [];
    let pendingOffset: number | null = null;
    if (localPax) {
      for (const [k, v] of localPax) {
        // PAX sparse 0.0 repeats offset/numbytes pairs.
        if (k === 'GNU.sparse.offset') pendingOffset = paxDecimal(v, k, offset);
        else if (k === 'GNU.sparse.numbytes') {
          if (pendingOffset === null) throw formatError(`malformed PAX sparse map (numbytes without offset) at offset ${offset}`);
          sparseMap00.push([pendingOffset, paxDecimal(v, k, offset)]);
          pendingOffset = null;
        } else pax.set(k, v);
      }
    }
    // An empty PAX value means "use the header field".
    const paxValue = (k: string): Buffer | undefined => {
      const v = pax.get(k);
      return v && v.length > 0 ? v : undefined;
    };
    // PAX names are UTF-8 unless hdrcharset=BINARY says they are bytes. Either
    // way they are kept as the bytes they are: GNU tar and Go's archive/tar
    // (umoci, podman) take a path that is not valid UTF-8 verbatim too
    // (libarchive's pax_filename_encoding test has one). A charset nobody
    // defined is refused rather than guessed.
    const charset = paxValue('hdrcharset')?.toString('latin1');
    if (charset !== undefined && charset !== 'BINARY' && charset !== 'ISO-IR 10646 2000 UTF-8') {
      throw formatError(`unknown PAX hdrcharset "${escapeName(charset)}" at offset ${offset}`);
    }
    const paxName = (k: string): string | undefined => {
      const v = paxValue(k);
      return v === undefined ? undefined : bin(v);
    };

    const e = new Entry();
    e.input = input;
    e.split = split;
    e.headerOffset = firstHeader;

    // Old GNU sparse: the map is in the header and in extension blocks after it.
    let sparse: SparseInfo | null = null;
    if (flag === 'S') {
      const map: Array<[number, number]> = [];
      oldGnuSparse(block.subarray(386, 482), 4, map, offset);
      let more = block[482] !== 0;
      while (more) {
        const ext = await input.read(BLOCK);
        if (ext.length < BLOCK) throw truncated('inside a GNU sparse header', input.position);
        raw(ext);
        oldGnuSparse(ext, 21, map, offset);
        more = ext[504] !== 0;
      }
      sparse = { realSize: parseNumber(block.subarray(483, 495), 'realsize', offset), map };
    }
    const major = paxValue('GNU.sparse.major')?.toString('latin1');
    if (major !== undefined || paxValue('GNU.sparse.map') || paxValue('GNU.sparse.size') || paxValue('GNU.sparse.realsize') || sparseMap00.length > 0) {
      const real = paxValue('GNU.sparse.realsize') ?? paxValue('GNU.sparse.size');
      if (!real) throw formatError(`PAX sparse file without its size at offset ${offset}`);
      const realSize = paxDecimal(real, 'GNU.sparse.realsize', offset);
      if (major === '1') {
        sparse = { realSize, map: null };
      } else if (major !== undefined && major !== '0') {
        throw new CowshedError('EUNSUPPORTED', `unsupported tar entry (PAX sparse format ${escapeName(major)}) at offset ${offset}`);
      } else if (paxValue('GNU.sparse.map')) {
        const nums = paxValue('GNU.sparse.map')!.toString('latin1').split(',').map((x) => paxDecimal(Buffer.from(x, 'latin1'), 'GNU.sparse.map', offset));
        if (nums.length % 2 !== 0) throw formatError(`malformed PAX sparse map at offset ${offset}`);
        const map: Array<[number, number]> = [];
        for (let i = 0; i < nums.length; i += 2) map.push([nums[i]!, nums[i + 1]!]);
        sparse = { realSize, map };
      } else {
        sparse = { realSize, map: sparseMap00 };
      }
    }

    const nameBytes = sparse && paxValue('GNU.sparse.name') ? paxName('GNU.sparse.name') : paxName('path');
    let path = nameBytes ?? bin(longName ?? h.name);
    // Old tars mark directories only by a trailing slash.
    if (flag === '\0' && path.endsWith('/')) type = 'dir';
    // GNU tar: "Substituting `.' for empty member name".
    if (path === '') path = '.';
    checkName(path, 'member name', offset, false);
    e.path = path;
    e.type = type;
    const linkname = paxName('linkpath') ?? bin(longLink ?? h.linkname);
    if (type === 'hardlink' || type === 'symlink') checkName(linkname, `link target of "${escapeName(path)}"`, offset, false);
    e.linkname = type === 'hardlink' || type === 'symlink' ? linkname : '';
    // A symlink's own mode is always 0777 on Linux, whatever the header says.
    e.mode = type === 'symlink' ? 0o777 : h.mode & 0o7777;
    const v = paxValue;
    let size = v('size') ? paxDecimal(v('size')!, 'size', offset) : h.size;
    e.uid = v('uid') ? paxDecimal(v('uid')!, 'uid', offset, 0xffffffff) : h.uid;
    e.gid = v('gid') ? paxDecimal(v('gid')!, 'gid', offset, 0xffffffff) : h.gid;
    e.uname = bin(v('uname') ?? h.uname);
    e.gname = bin(v('gname') ?? h.gname);
    if (v('mtime')) [e.mtimeSec, e.mtimeNsec] = paxTime(v('mtime')!, offset);
    else e.mtimeSec = h.mtime;
    e.devmajor = v('SCHILY.devmajor') ? paxDecimal(v('SCHILY.devmajor')!, 'devmajor', offset, 0xffffffff) : h.devmajor;
    e.devminor = v('SCHILY.devminor') ? paxDecimal(v('SCHILY.devminor')!, 'devminor', offset, 0xffffffff) : h.devminor;
    e.xattrs = paxXattrs(pax);
    for (const k of e.xattrs.keys()) {
      if (k.length === 0 || k.length > NAME_MAX || k.includes('\0')) throw formatError(`${escapeName(path)}: bad xattr name "${escapeName(k)}" (offset ${offset})`);
    }
    if (size < 0) throw formatError(`negative size in tar header at offset ${offset}`);
    // Header-only types carry no body, whatever the size field says (as Go's archive/tar).
    const hasBody = type === 'file' || flag === 'D';
    if (!hasBody) size = 0;
    // A dumpdir body is a list of names, kept raw in the split: bound it like other metadata.
    if (flag === 'D' && size > MAX_META_SIZE) throw formatError(`GNU dumpdir of ${size} bytes at offset ${offset} exceeds the ${MAX_META_SIZE}-byte limit`);
    e.storedSize = size;
    e.remaining = size;
    if (sparse) {
      // Imported as its full content; the archive's bytes (map and data) stay raw in the split record.
      e.sparse = sparse;
      e.bodyIsRaw = true;
      // PAX 1.0 keeps the map at the start of the body: read it now, the size depends on it.
      sparse.map ??= await e.readSparseMap();
      // As GNU tar: the file ends where its last segment ends (writers end
      // the map with a zero-length segment at the real size; one that does
      // not gets a shorter file, libarchive's sparse_skip_entry test).
      const last = sparse.map[sparse.map.length - 1];
      e.size = last ? last[0] + last[1] : 0;
    } else {
      e.size = size;
      e.bodyIsRaw = type !== 'file';
    }
    e.dataOffset = input.position;
    localPax = longName = longLink = null;
    firstHeader = -1;

    yield e;
    await finishEntry(e);
  }
  split?.end();
}
