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
/** Largest PAX or GNU long-name record we accept; real ones are a few KiB. */
export const MAX_META_SIZE = 1 << 20;
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

const text = (b: Buffer): string => cstring(b).toString('utf8');

/**
 * A numeric header field: octal text, or base-256 (GNU) when the top bit of
 * the first byte is set (two's complement, big-endian, for big values).
 */
export function parseNumber(field: Buffer, what: string, offset: number): number {
  if (field.length > 0 && (field[0] & 0x80) !== 0) {
    const negative = (field[0] & 0x40) !== 0;
    let v = 0n;
    for (let i = 0; i < field.length; i++) {
      let c = negative ? field[i] ^ 0xff : field[i];
      if (i === 0) c &= 0x7f;
      v = (v << 8n) | BigInt(c);
    }
    if (negative) v = -v - 1n;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw formatError(`tar header field ${what} out of range (offset ${offset})`);
    }
    return Number(v);
  }
  // Octal: fields may be padded with spaces or NULs on either side.
  let s = 0;
  let e = field.length;
  while (s < e && (field[s] === 0x20 || field[s] === 0)) s++;
  while (e > s && (field[e - 1] === 0x20 || field[e - 1] === 0)) e--;
  const z = field.indexOf(0, s);
  if (z >= 0 && z < e) e = z;
  let v = 0;
  for (let i = s; i < e; i++) {
    const c = field[i] - 0x30;
    if (c < 0 || c > 7) throw formatError(`tar header field ${what} is not a number (offset ${offset})`);
    v = v * 8 + c;
  }
  if (!Number.isSafeInteger(v)) throw formatError(`tar header field ${what} out of range (offset ${offset})`);
  return v;
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
    devmajor: extended ? num(329, 8, 'devmajor') : 0,
    devminor: extended ? num(337, 8, 'devminor') : 0,
  };
}

// ---- PAX -------------------------------------------------------------------

/**
 * PAX extended header records, "LEN KEY=VALUE\n", as raw bytes: values stay
 * bytes (xattr values are binary), keys are UTF-8 text.
 */
export function parsePaxRecords(data: Buffer, offset: number): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
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
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1, rec.length - 1)));
    p += len;
  }
  return out;
}

const paxDecimal = (v: Buffer, key: string, offset: number): number => {
  const s = v.toString('latin1');
  if (!/^[0-9]{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) {
    throw formatError(`bad PAX ${key} value "${s.slice(0, 40)}" at offset ${offset}`);
  }
  return Number(s);
};

/** PAX time "SECONDS[.FRACTION]", possibly negative, to seconds and nanoseconds (floor). */
function paxTime(v: Buffer, offset: number): [number, number] {
  const s = v.toString('latin1');
  const m = /^(-?)([0-9]{1,16})(?:\.([0-9]*))?$/.exec(s);
  if (!m) throw formatError(`bad PAX mtime value "${s.slice(0, 40)}" at offset ${offset}`);
  let sec = Number(m[2]);
  let nsec = Number((m[3] ?? '').slice(0, 9).padEnd(9, '0'));
  if (m[1] === '-') {
    sec = -sec;
    if (nsec > 0) {
      sec -= 1;
      nsec = 1e9 - nsec;
    }
  }
  if (!Number.isSafeInteger(sec)) throw formatError(`PAX mtime out of range at offset ${offset}`);
  return [sec, nsec];
}

/** "%41%42" style escapes used by libarchive in xattr names. */
function percentDecode(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && /^[0-9a-fA-F]{2}$/.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(s[i], 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

const SCHILY_XATTR = 'SCHILY.xattr.';
const LIBARCHIVE_XATTR = 'LIBARCHIVE.xattr.';

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

// ---- the reader --------------------------------------------------------------

const TYPES: Record<string, TarEntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink',
  '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
  'D': 'dir', // GNU dumpdir: a directory whose body lists its names
};
const UNSUPPORTED: Record<string, string> = {
  'S': 'GNU sparse file',
  'M': 'GNU multi-volume continuation',
  'N': 'old GNU long name',
};

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

  /** Body bytes not yet read. */
  remaining = 0;
  bodyStarted = false;
  /** The reader moved on: the body can no longer be read. */
  closed = false;
  digest: Buffer | null = null;
  /** Body bytes go to the split record as raw bytes (not content). */
  bodyIsRaw = false;
  input!: ByteInput;
  split: TarSplitWriter | undefined;

  body(): AsyncIterable<Uint8Array> {
    if (this.bodyStarted) throw new Error(`tar: body of ${this.path} read twice`);
    if (this.closed) throw new Error(`tar: body of ${this.path} read after moving to the next entry`);
    this.bodyStarted = true;
    return this.streamBody();
  }

  private async *streamBody(): AsyncGenerator<Uint8Array> {
    while (this.remaining > 0) {
      if (this.closed) throw new Error(`tar: body of ${this.path} read after moving to the next entry`);
      const chunk = await this.input.readChunk(Math.min(this.remaining, BODY_CHUNK));
      if (chunk.length === 0) throw truncated(`inside the body of ${this.path}`, this.input.position);
      this.remaining -= chunk.length;
      if (this.bodyIsRaw) this.split?.raw(chunk);
      yield chunk;
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

/** The reader over any ByteInput (archive-index uses a file, where skipping bodies is free). */
export async function* readTarFrom(input: ByteInput, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry> {
  const split = opts.split;
  const raw = (b: Buffer): void => split?.raw(b);
  const globalPax = new Map<string, Buffer>();
  let localPax: Map<string, Buffer> | null = null;
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
      if (e.remaining > 0) {
        if (split) {
          while (e.remaining > 0) {
            const c = await input.readChunk(Math.min(e.remaining, BODY_CHUNK));
            if (c.length === 0) throw truncated(`inside the body of ${e.path}`, input.position);
            e.remaining -= c.length;
            raw(c);
          }
        } else {
          const n = await input.skip(e.remaining);
          e.remaining -= n;
          if (e.remaining > 0) throw truncated(`inside the body of ${e.path}`, input.position);
        }
      }
    } else if (e.size > 0) {
      // A regular file's content: recorded by digest.
      if (e.remaining > 0 && e.digest === null) {
        if (e.bodyStarted) throw new Error(`tar: body of ${e.path} only partly read and no content digest set`);
        const hasher = new FsVerityHasher();
        while (e.remaining > 0) {
          const c = await input.readChunk(Math.min(e.remaining, BODY_CHUNK));
          if (c.length === 0) throw truncated(`inside the body of ${e.path}`, input.position);
          e.remaining -= c.length;
          hasher.update(c);
        }
        e.digest = hasher.digest();
      } else if (e.remaining > 0) {
        const n = await input.skip(e.remaining);
        e.remaining -= n;
        if (e.remaining > 0) throw truncated(`inside the body of ${e.path}`, input.position);
      }
      if (e.digest === null) throw new Error(`tar: no content digest set for ${e.path} (call entry.setContentDigest)`);
      split.content(e.size, e.digest);
    }
    await skipPadding(e.size);
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
      localPax ??= new Map();
      for (const [k, v] of recs) localPax.set(k, v);
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
    let type = TYPES[flag];
    if (!type) {
      const shown = h.typeflag >= 0x21 && h.typeflag < 0x7f ? `'${flag}'` : `0x${h.typeflag.toString(16)}`;
      throw new CowshedError('EUNSUPPORTED', `unsupported tar entry type ${shown} for ${text(h.name)} at offset ${offset}`);
    }

    const pax = new Map(globalPax);
    if (localPax) for (const [k, v] of localPax) pax.set(k, v);
    for (const k of pax.keys()) {
      if (k.startsWith('GNU.sparse.')) throw new CowshedError('EUNSUPPORTED', `unsupported tar entry (PAX sparse file) at offset ${offset}`);
    }
    // An empty PAX value means "use the header field".
    const paxValue = (k: string): Buffer | undefined => {
      const v = pax.get(k);
      return v && v.length > 0 ? v : undefined;
    };

    const e = new Entry();
    e.input = input;
    e.split = split;
    e.headerOffset = firstHeader;
    const nameBytes = paxValue('path') ?? longName ?? h.name;
    e.path = nameBytes.toString('utf8');
    // Old tars mark directories only by a trailing slash.
    if (flag === '\0' && e.path.endsWith('/')) type = 'dir';
    e.type = type;
    e.linkname = (paxValue('linkpath') ?? longLink ?? h.linkname).toString('utf8');
    e.mode = h.mode & 0o7777;
    const v = paxValue;
    let size = v('size') ? paxDecimal(v('size')!, 'size', offset) : h.size;
    e.uid = v('uid') ? paxDecimal(v('uid')!, 'uid', offset) : h.uid;
    e.gid = v('gid') ? paxDecimal(v('gid')!, 'gid', offset) : h.gid;
    e.uname = (v('uname') ?? h.uname).toString('utf8');
    e.gname = (v('gname') ?? h.gname).toString('utf8');
    if (v('mtime')) [e.mtimeSec, e.mtimeNsec] = paxTime(v('mtime')!, offset);
    else e.mtimeSec = h.mtime;
    e.devmajor = v('SCHILY.devmajor') ? paxDecimal(v('SCHILY.devmajor')!, 'devmajor', offset) : h.devmajor;
    e.devminor = v('SCHILY.devminor') ? paxDecimal(v('SCHILY.devminor')!, 'devminor', offset) : h.devminor;
    e.xattrs = paxXattrs(pax);
    if (size < 0) throw formatError(`negative size in tar header at offset ${offset}`);
    // Header-only types carry no body, whatever the size field says (as Go's archive/tar).
    const hasBody = type === 'file' || flag === 'D';
    if (!hasBody) size = 0;
    // A dumpdir body is a list of names, kept raw in the split: bound it like other metadata.
    if (flag === 'D' && size > MAX_META_SIZE) throw formatError(`GNU dumpdir of ${size} bytes at offset ${offset} exceeds the ${MAX_META_SIZE}-byte limit`);
    e.size = size;
    e.remaining = size;
    e.bodyIsRaw = type !== 'file';
    e.dataOffset = input.position;
    localPax = longName = longLink = null;
    firstHeader = -1;

    yield e;
    await finishEntry(e);
  }
  split?.end();
}
