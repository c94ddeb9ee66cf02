// zstd:chunked, as containers/storage (pkg/chunked) writes it today:
//
//   [frame: tar headers][frames: file 1, one per chunk][frame: headers]...
//   [frame: padding, end-of-archive blocks, trailing bytes]
//   [skippable: zstd(TOC JSON)][skippable: zstd(tar-split JSON lines)]
//   [skippable: 64-byte footer]
//
// Skippable frames are 50 2A 4D 18 + le32 length + data. The footer is seven
// le64 (TOC offset, compressed length, uncompressed length, manifest type 1,
// tar-split offset, compressed length, uncompressed length) and "GNUlInUx";
// offsets point just past the skippable-frame headers. The layer carries
// the TOC digest (sha256 of the compressed TOC) and both positions as
// annotations. Decompressing the whole blob gives back the exact tar.
//
// This module holds the constants and the strict parsers (footer,
// annotations, TOC, tar-split), all of which read hostile input.
//
// Names: the TOC is JSON written by Go, whose encoder replaces each byte
// that is not valid UTF-8 with U+FFFD, so a TOC name is lossy (`caf\xe9`
// and `caf\xe8` are both "caf\ufffd"). The tar-split keeps the bytes
// (`name_raw`, base64, when they are not UTF-8), and so do the tar headers
// it holds. Exact names come only from there: TOC files are paired with
// tar-split files by position, and their names only checked to agree.
import { createHash } from 'node:crypto';
import { zstdDecompressSync } from 'node:zlib';
import { CowshedError } from '../util/errors.ts';
import { bin, escapeName, utf8Of } from '../util/names.ts';

export const SKIPPABLE_MAGIC = Buffer.from([0x50, 0x2a, 0x4d, 0x18]);
export const FOOTER_MAGIC = Buffer.from('GNUlInUx', 'latin1');
export const FOOTER_SIZE = 64;
/** Older containers/storage (1.43, Debian 12): 40-byte footer, this magic, no tar-split. */
export const OLD_FOOTER_MAGIC = Buffer.from('GnUlInUx', 'latin1');
export const MANIFEST_TYPE_CRFS = 1;

export const ANN_TOC_DIGEST = 'io.github.containers.zstd-chunked.manifest-checksum';
export const ANN_TOC_POSITION = 'io.github.containers.zstd-chunked.manifest-position';
export const ANN_TARSPLIT_POSITION = 'io.github.containers.zstd-chunked.tarsplit-position';
export const OLD_ANN_PREFIX = 'io.containers.zstd-chunked.';
export const ESTARGZ_ANN_TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';

/** containers/storage refuses bigger TOCs (and tar-splits). */
export const MAX_TOC_BYTES = 150 << 20;

export interface TocEntry {
  type: 'reg' | 'hardlink' | 'symlink' | 'dir' | 'char' | 'block' | 'fifo' | 'chunk';
  name: string;
  linkName?: string;
  mode?: number;
  size?: number;
  uid?: number;
  gid?: number;
  modtime?: string;
  accesstime?: string;
  changetime?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, string>;
  digest?: string;
  offset?: number;
  endOffset?: number;
  chunkSize?: number;
  chunkOffset?: number;
  chunkDigest?: string;
  chunkType?: string;
}

export interface Toc {
  version: number;
  entries: TocEntry[];
  tarSplitDigest?: string;
}

/** Where TOC and tar-split are in the blob (offsets past the skippable headers). */
export interface ChunkedPositions {
  toc: { offset: number; length: number; uncompressed: number };
  tarSplit: { offset: number; length: number; uncompressed: number };
  tocDigest: string;
}

/** What kind of layer the annotations describe. */
export type ChunkedKind = 'zstd:chunked' | 'zstd:chunked-old' | 'estargz' | undefined;

export function chunkedKind(annotations: Record<string, string> | undefined): ChunkedKind {
  if (!annotations) return undefined;
  if (annotations[ANN_TOC_DIGEST] !== undefined) return 'zstd:chunked';
  if (Object.keys(annotations).some((k) => k.startsWith(OLD_ANN_PREFIX))) return 'zstd:chunked-old';
  if (annotations[ESTARGZ_ANN_TOC_DIGEST] !== undefined) return 'estargz';
  return undefined;
}

const bad = (what: string, detail: string): CowshedError => new CowshedError('EFORMAT', `${what}: ${detail}`);

function u64(b: Buffer, at: number, what: string, field: string): number {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(what, `footer ${field} ${v} is out of range`);
  return Number(v);
}

/** Parses a current 64-byte footer. */
export function parseFooter(footer: Buffer, what: string): Omit<ChunkedPositions, 'tocDigest'> {
  if (footer.length !== FOOTER_SIZE) throw bad(what, `zstd:chunked footer is ${footer.length} bytes, not ${FOOTER_SIZE}`);
  if (!footer.subarray(56).equals(FOOTER_MAGIC)) throw bad(what, 'no zstd:chunked footer magic');
  const type = u64(footer, 24, what, 'manifest type');
  if (type !== MANIFEST_TYPE_CRFS) throw bad(what, `zstd:chunked manifest type ${type} is not supported`);
  return {
    toc: { offset: u64(footer, 0, what, 'TOC offset'), length: u64(footer, 8, what, 'TOC length'), uncompressed: u64(footer, 16, what, 'TOC size') },
    tarSplit: { offset: u64(footer, 32, what, 'tar-split offset'), length: u64(footer, 40, what, 'tar-split length'), uncompressed: u64(footer, 48, what, 'tar-split size') },
  };
}

function positionNumbers(v: string, n: number, what: string, key: string): number[] {
  const parts = v.split(':');
  if (parts.length !== n || !parts.every((p) => /^\d{1,15}$/.test(p))) throw bad(what, `annotation ${key} is not ${n} numbers: ${JSON.stringify(v.slice(0, 80))}`);
  return parts.map(Number);
}

/**
 * TOC and tar-split positions from a layer's annotations, checked against
 * the blob's size: both inside the blob, before its footer, not overlapping.
 */
export function parseAnnotations(ann: Record<string, string>, blobSize: number, what: string): ChunkedPositions {
  const digest = ann[ANN_TOC_DIGEST];
  if (digest === undefined || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw bad(what, `annotation ${ANN_TOC_DIGEST} is not a sha256 digest`);
  const tp = ann[ANN_TOC_POSITION];
  const sp = ann[ANN_TARSPLIT_POSITION];
  if (tp === undefined) throw bad(what, `annotation ${ANN_TOC_POSITION} is missing`);
  if (sp === undefined) throw bad(what, `annotation ${ANN_TARSPLIT_POSITION} is missing (an older zstd:chunked layer?)`);
  const [to, tl, tu, type] = positionNumbers(tp, 4, what, ANN_TOC_POSITION);
  if (type !== MANIFEST_TYPE_CRFS) throw bad(what, `zstd:chunked manifest type ${type} is not supported`);
  const [so, sl, su] = positionNumbers(sp, 3, what, ANN_TARSPLIT_POSITION);
  const p: ChunkedPositions = { toc: { offset: to, length: tl, uncompressed: tu }, tarSplit: { offset: so, length: sl, uncompressed: su }, tocDigest: digest };
  checkPositions(p, blobSize, what);
  return p;
}

export function checkPositions(p: Omit<ChunkedPositions, 'tocDigest'>, blobSize: number, what: string): void {
  const end = blobSize - FOOTER_SIZE - 8;
  for (const [name, r, min] of [['TOC', p.toc, 8], ['tar-split', p.tarSplit, 8]] as const) {
    if (r.length === 0 || r.offset < min || r.offset + r.length > end) throw bad(what, `the ${name} (${r.offset}+${r.length}) is outside the blob (${blobSize} bytes)`);
    if (r.length > MAX_TOC_BYTES || r.uncompressed > MAX_TOC_BYTES) throw bad(what, `the ${name} is bigger than ${MAX_TOC_BYTES >> 20} MiB`);
  }
  const a = p.toc;
  const b = p.tarSplit;
  if (a.offset < b.offset + b.length && b.offset < a.offset + a.length) throw bad(what, 'the TOC and the tar-split overlap');
}

/** zstd-decompresses a TOC or tar-split, refusing more than it claims. */
export function decompressMeta(data: Buffer, uncompressed: number, what: string, name: string): Buffer {
  let out: Buffer;
  try {
    out = zstdDecompressSync(data, { maxOutputLength: Math.min(MAX_TOC_BYTES, uncompressed) + 1 });
  } catch (e) {
    throw bad(what, `the ${name} does not decompress (${e instanceof Error ? e.message : String(e)})`);
  }
  if (out.length !== uncompressed) throw bad(what, `the ${name} is ${out.length} bytes, the layer says ${uncompressed}`);
  return out;
}

export const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const TYPES = new Set(['reg', 'hardlink', 'symlink', 'dir', 'char', 'block', 'fifo', 'chunk']);
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

function optNum(o: Record<string, unknown>, k: string, where: string): number | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new CowshedError('EFORMAT', `${where}: ${k} is not a non-negative integer`);
  return v;
}

function optStr(o: Record<string, unknown>, k: string, where: string): string | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new CowshedError('EFORMAT', `${where}: ${k} is not a string`);
  return v;
}

/**
 * Parses and checks a TOC: shapes, digests, and that every file's frames
 * lie inside `dataEnd` (where the metadata starts), in order, without
 * overlapping one another.
 */
export function parseToc(json: Buffer, dataEnd: number, what: string): Toc {
  let raw: unknown;
  try { raw = JSON.parse(json.toString('utf8')); } catch { throw bad(what, 'the TOC is not JSON'); }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(what, 'the TOC is not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.version !== 1) throw bad(what, `TOC version ${JSON.stringify(o.version)} is not supported`);
  if (!Array.isArray(o.entries)) throw bad(what, 'the TOC has no entries');
  const tarSplitDigest = o.tarSplitDigest;
  if (tarSplitDigest !== undefined && (typeof tarSplitDigest !== 'string' || !DIGEST_RE.test(tarSplitDigest))) throw bad(what, 'the TOC tarSplitDigest is not a sha256 digest');
  const entries: TocEntry[] = [];
  let lastEnd = 0;
  let chunkFloor = 0;
  for (const [i, r] of (o.entries as unknown[]).entries()) {
    const where = `${what}: TOC entry ${i}`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new CowshedError('EFORMAT', `${where} is not an object`);
    const e = r as Record<string, unknown>;
    if (typeof e.type !== 'string' || !TYPES.has(e.type)) throw new CowshedError('EFORMAT', `${where}: unknown type ${JSON.stringify(e.type)}`);
    if (typeof e.name !== 'string') throw new CowshedError('EFORMAT', `${where}: no name`);
    const t: TocEntry = { type: e.type as TocEntry['type'], name: e.name };
    for (const k of ['linkName', 'modtime', 'accesstime', 'changetime', 'digest', 'chunkDigest', 'chunkType'] as const) {
      const v = optStr(e, k, where);
      if (v !== undefined) t[k] = v;
    }
    for (const k of ['mode', 'size', 'uid', 'gid', 'devMajor', 'devMinor', 'offset', 'endOffset', 'chunkSize', 'chunkOffset'] as const) {
      const v = optNum(e, k, where);
      if (v !== undefined) t[k] = v;
    }
    if (e.xattrs !== undefined) {
      if (typeof e.xattrs !== 'object' || e.xattrs === null || Array.isArray(e.xattrs)) throw new CowshedError('EFORMAT', `${where}: xattrs is not an object`);
      for (const v of Object.values(e.xattrs)) if (typeof v !== 'string') throw new CowshedError('EFORMAT', `${where}: an xattr value is not a string`);
      t.xattrs = e.xattrs as Record<string, string>;
    }
    for (const k of ['digest', 'chunkDigest'] as const) if (t[k] !== undefined && !DIGEST_RE.test(t[k])) throw new CowshedError('EFORMAT', `${where}: ${k} is not a sha256 digest`);
    if (t.chunkType !== undefined && t.chunkType !== '' && t.chunkType !== 'zeros') throw new CowshedError('EFORMAT', `${where}: unknown chunkType ${JSON.stringify(t.chunkType)}`);
    if (t.type === 'chunk') {
      const prev = entries[entries.length - 1];
      if (!prev || (prev.type !== 'reg' && prev.type !== 'chunk') || prev.name !== t.name) throw new CowshedError('EFORMAT', `${where}: a chunk that follows no file of its name`);
    }
    if (t.type === 'reg' && (t.size ?? 0) > 0 && t.digest === undefined) throw new CowshedError('EFORMAT', `${where}: a file without a digest`);
    if (t.type === 'reg' && (t.size ?? 0) > 0) {
      const start = t.offset ?? 0;
      const end = t.endOffset ?? -1;
      if (start < lastEnd) throw new CowshedError('EFORMAT', `${where}: offset ${start} overlaps the data before it`);
      if (start >= dataEnd || end <= start || end > dataEnd) throw new CowshedError('EFORMAT', `${where}: range ${start}-${end} is outside the data of the blob`);
      lastEnd = end;
      chunkFloor = start;
    } else if (t.type === 'chunk') {
      const start = t.offset ?? 0;
      if (start < chunkFloor || start >= lastEnd) throw new CowshedError('EFORMAT', `${where}: chunk offset ${start} is outside its file's range`);
      chunkFloor = start;
    }
    entries.push(t);
  }
  return { version: 1, entries, tarSplitDigest: tarSplitDigest as string | undefined };
}

/** A file's content as frames of the blob: whole, or chunk by chunk. */
export interface FileFrames {
  name: string;
  size: number;
  digest: string;
  /** Compressed ranges, in order; `zeros` chunks need no bytes. */
  chunks: Array<{ offset: number; end: number; size: number; zeros: boolean; digest?: string }>;
}

/**
 * The regular files of a TOC with their frames, in TOC (tar) order; a name
 * may repeat, as in the tar. Chunk ends are the next chunk's start; the
 * last one ends at the file's endOffset. Checks sizes add up and ranges nest.
 */
export function fileFrames(toc: Toc, what: string): FileFrames[] {
  const out: FileFrames[] = [];
  const es = toc.entries;
  for (let i = 0; i < es.length; i++) {
    const e = es[i]!;
    if (e.type !== 'reg') continue;
    const size = e.size ?? 0;
    let j = i + 1;
    while (j < es.length && es[j]!.type === 'chunk') j++;
    const group = es.slice(i, j);
    const where = `${what}: TOC file ${JSON.stringify(e.name)}`;
    const f: FileFrames = { name: e.name, size, digest: e.digest ?? '', chunks: [] };
    if (size > 0) {
      const end = e.endOffset;
      if (end === undefined) throw new CowshedError('EFORMAT', `${where} has no endOffset`);
      if (group.length === 1) {
        f.chunks.push({ offset: e.offset ?? 0, end, size, zeros: false });
      } else {
        let at = 0;
        for (let k = 0; k < group.length; k++) {
          const c = group[k]!;
          const cEnd = k + 1 < group.length ? (group[k + 1]!.offset ?? 0) : end;
          const cs = c.chunkSize ?? 0;
          if ((c.chunkOffset ?? 0) !== at || cs <= 0) throw new CowshedError('EFORMAT', `${where}: chunks do not cover the file in order`);
          if (cEnd < (c.offset ?? 0)) throw new CowshedError('EFORMAT', `${where}: a chunk ends before it starts`);
          f.chunks.push({ offset: c.offset ?? 0, end: cEnd, size: cs, zeros: c.chunkType === 'zeros', digest: c.chunkDigest });
          at += cs;
        }
        if (at !== size) throw new CowshedError('EFORMAT', `${where}: chunks add up to ${at} bytes, the file has ${size}`);
      }
      for (const c of f.chunks) if (c.end <= c.offset && !c.zeros) throw new CowshedError('EFORMAT', `${where}: an empty range`);
    }
    out.push(f);
    i = j - 1;
  }
  return out;
}

/** One line of a tar-split record (vbatts/tar-split storage.Entry). */
export interface TarSplitEntry {
  type: 1 | 2;
  /** FileType: the name (name_raw decoded as bytes when not UTF-8). */
  name?: Buffer;
  size: number;
  /** SegmentType: the raw bytes. */
  payload?: Buffer;
}

/** Parses tar-split JSON lines, checking shapes and positions. */
export function parseTarSplit(data: Buffer, what: string): TarSplitEntry[] {
  const out: TarSplitEntry[] = [];
  let start = 0;
  let line = 0;
  while (start < data.length) {
    let end = data.indexOf(0x0a, start);
    if (end < 0) end = data.length;
    const text = data.subarray(start, end).toString('utf8');
    start = end + 1;
    if (text.trim() === '') continue;
    const where = `${what}: tar-split line ${line + 1}`;
    let o: Record<string, unknown>;
    try { o = JSON.parse(text) as Record<string, unknown>; } catch { throw new CowshedError('EFORMAT', `${where} is not JSON`); }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new CowshedError('EFORMAT', `${where} is not an object`);
    if (o.position !== line) throw new CowshedError('EFORMAT', `${where}: position ${JSON.stringify(o.position)}, expected ${line}`);
    line++;
    const b64 = (v: unknown, k: string): Buffer | undefined => {
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new CowshedError('EFORMAT', `${where}: ${k} is not base64`);
      return Buffer.from(v, 'base64');
    };
    if (o.type === 2) {
      out.push({ type: 2, size: 0, payload: b64(o.payload, 'payload') ?? Buffer.alloc(0) });
    } else if (o.type === 1) {
      const size = o.size === undefined ? 0 : o.size;
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new CowshedError('EFORMAT', `${where}: size is not a non-negative integer`);
      const raw = b64(o.name_raw, 'name_raw');
      if (o.name !== undefined && typeof o.name !== 'string') throw new CowshedError('EFORMAT', `${where}: name is not a string`);
      const name = raw && raw.length > 0 ? raw : Buffer.from((o.name as string | undefined) ?? '', 'utf8');
      b64(o.payload, 'payload');
      out.push({ type: 1, name, size });
    } else {
      throw new CowshedError('EFORMAT', `${where}: unknown type ${JSON.stringify(o.type)}`);
    }
  }
  return out;
}

/**
 * A name as Go's encoding/json writes it: the bytes as UTF-8 text, each
 * byte that does not start a valid sequence replaced by U+FFFD (what a
 * containers/storage TOC holds for a name that is not UTF-8).
 */
export function goText(name: string): string {
  const u = utf8Of(name);
  if (u !== undefined) return u;
  let out = '';
  let i = 0;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => {
    const c = name.charCodeAt(k);
    return k < name.length && c >= lo && c <= hi;
  };
  while (i < name.length) {
    const c = name.charCodeAt(i);
    let n = 0;
    if (c < 0x80) n = 1;
    else if (c >= 0xc2 && c <= 0xdf) n = cont(i + 1) ? 2 : 0;
    else if (c >= 0xe0 && c <= 0xef) {
      const lo = c === 0xe0 ? 0xa0 : 0x80;
      const hi = c === 0xed ? 0x9f : 0xbf;
      n = cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
    } else if (c >= 0xf0 && c <= 0xf4) {
      const lo = c === 0xf0 ? 0x90 : 0x80;
      const hi = c === 0xf4 ? 0x8f : 0xbf;
      n = cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    }
    if (n === 0) { out += '\ufffd'; i++; continue; }
    out += utf8Of(name.slice(i, i + n))!;
    i += n;
  }
  return out;
}

/** Could a TOC name (JSON text) have been written for these exact bytes? */
export function tocNameMatches(tocName: string, exact: string): boolean {
  const u = utf8Of(exact);
  if (u !== undefined) return tocName === u;
  // Go replaces byte by byte; a WHATWG decoder (a writer in JS) by maximal subpart.
  return tocName === goText(exact) || tocName === Buffer.from(exact, 'latin1').toString('utf8');
}

/** A file of the layer: its exact name (from the tar-split) and its frames (from the TOC). */
export type PairedFile = FileFrames;

/**
 * Pairs the tar-split's files with content with the TOC's, in order, and
 * checks they are the same files: as many, each of the same size, and each
 * TOC name one that Go would write for the tar-split's exact name. Returns,
 * for each tar-split file with content, its frames under its exact name.
 */
export function matchTocAndTarSplit(files: FileFrames[], split: TarSplitEntry[], what: string): PairedFile[] {
  const withContent = files.filter((f) => f.size > 0);
  const out: PairedFile[] = [];
  let k = 0;
  for (const e of split) {
    if (e.type !== 1 || e.size === 0) continue;
    const name = bin(e.name!);
    const f = withContent[k++];
    if (!f || !tocNameMatches(f.name, name)) {
      throw new CowshedError('EFORMAT', `${what}: the tar-split names "${escapeName(name)}", which the TOC does not have${f ? ` (it has ${JSON.stringify(f.name)} there)` : ''}`);
    }
    if (f.size !== e.size) throw new CowshedError('EFORMAT', `${what}: "${escapeName(name)}" is ${e.size} bytes in the tar-split, ${f.size} in the TOC`);
    out.push({ ...f, name });
  }
  if (k < withContent.length) throw new CowshedError('EFORMAT', `${what}: the TOC has ${JSON.stringify(withContent[k]!.name)}, which the tar-split does not`);
  return out;
}
