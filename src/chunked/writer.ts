// Writing a layer as zstd:chunked (see format.ts), as containers/storage's
// compressor does: the tar is read entry by entry; headers and padding go
// into ordinary frames; each regular file's content starts a new frame and
// is cut into chunks at rolling-checksum boundaries (bup rollsum, 16 bits:
// ~64 KiB) and at runs of 1 KiB or more of zeros ("zeros" chunks), one frame
// per chunk; the end-of-archive blocks and any trailing bytes are kept, so
// `zstd -d` of the blob is the exact tar. Then TOC, tar-split and footer.
//
// One difference: a chunk is also cut at 8 MiB (containers/storage never
// cuts without a checksum boundary), which bounds memory; readers go by the
// TOC, so the format is the same.
import { createHash, type Hash } from 'node:crypto';
import { constants, zstdCompressSync } from 'node:zlib';
import { readTar } from '../tar/reader.ts';
import type { TarSplitWriter } from '../tar/split.ts';
import type { TarEntry } from '../tar/reader.ts';
import { bytesOf, utf8Of } from '../util/names.ts';
import {
  ANN_TARSPLIT_POSITION, ANN_TOC_DIGEST, ANN_TOC_POSITION, FOOTER_MAGIC, FOOTER_SIZE, MANIFEST_TYPE_CRFS, SKIPPABLE_MAGIC,
  goText, type TocEntry,
} from './format.ts';

const ROLLSUM_BITS = 16;
const SPLIT_MASK = (1 << ROLLSUM_BITS) - 1;
const HOLE_THRESHOLD = 1024;
const MAX_CHUNK = 8 << 20;
const WINDOW = 64;
const CHAR_OFFSET = 31;
const SEGMENT_MAX = 1 << 20;

/** bup's rolling checksum, as containers/storage's compressor/rollsum.go. */
export class RollSum {
  s1 = WINDOW * CHAR_OFFSET;
  s2 = WINDOW * (WINDOW - 1) * CHAR_OFFSET;
  private readonly window = new Uint8Array(WINDOW);
  private wofs = 0;

  roll(ch: number): void {
    const drop = this.window[this.wofs]!;
    this.s1 = (this.s1 + ch - drop) >>> 0;
    this.s2 = (this.s2 + this.s1 - WINDOW * (drop + CHAR_OFFSET)) >>> 0;
    this.window[this.wofs] = ch;
    this.wofs = (this.wofs + 1) & (WINDOW - 1);
  }

  onSplit(): boolean {
    return (this.s2 & SPLIT_MASK) === SPLIT_MASK;
  }
}

/** CRC-64 (ISO polynomial, Go's hash/crc64), as tar-split records file payloads. */
const CRC_LO = new Uint32Array(256);
const CRC_HI = new Uint32Array(256);
{
  const poly = 0xd800000000000000n;
  for (let i = 0; i < 256; i++) {
    let c = BigInt(i);
    for (let k = 0; k < 8; k++) c = (c & 1n) ? (c >> 1n) ^ poly : c >> 1n;
    CRC_LO[i] = Number(c & 0xffffffffn);
    CRC_HI[i] = Number(c >> 32n);
  }
}

export class Crc64 {
  private lo = 0xffffffff;
  private hi = 0xffffffff;
  update(b: Uint8Array): void {
    let lo = this.lo;
    let hi = this.hi;
    for (let i = 0; i < b.length; i++) {
      const idx = (lo ^ b[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ CRC_LO[idx]!;
      hi = (hi >>> 8) ^ CRC_HI[idx]!;
    }
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }
  /** Big-endian 8 bytes, as Go's Sum(nil). */
  sum(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((~this.hi) >>> 0, 0);
    out.writeUInt32BE((~this.lo) >>> 0, 4);
    return out;
  }
}

/** JSON as Go's encoding/json writes it: HTML characters and U+2028/9 escaped. */
export function goJson(v: unknown): string {
  return JSON.stringify(v).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Go's time.Time MarshalJSON (RFC 3339, nanoseconds without trailing zeros), in UTC. */
export function goTime(sec: number, nsec: number): string {
  const d = new Date(sec * 1000);
  const base = d.toISOString().slice(0, 19);
  const frac = nsec > 0 ? `.${String(nsec).padStart(9, '0').replace(/0+$/, '')}` : '';
  return `${base}${frac}Z`;
}

const TOC_TYPES: Record<TarEntry['type'], TocEntry['type']> = {
  file: 'reg', hardlink: 'hardlink', symlink: 'symlink', dir: 'dir', char: 'char', block: 'block', fifo: 'fifo',
};

function skippable(data: Uint8Array): Buffer {
  const h = Buffer.alloc(8);
  SKIPPABLE_MAGIC.copy(h, 0);
  h.writeUInt32LE(data.length, 4);
  return Buffer.concat([h, data]);
}

export interface ChunkedResult {
  /** The layer annotations (TOC digest, TOC and tar-split positions). */
  annotations: Record<string, string>;
  /** sha256 of the uncompressed tar (the diff ID). */
  diffId: string;
  /** Files cut into several chunks, with their chunk digests and offsets (the store's chunk index). */
  files: Array<{ digest: string; size: number; chunks: Array<{ digest: string; offset: number; size: number }> }>;
}

/**
 * Compresses a tar stream as zstd:chunked. The annotations are filled into
 * `result` when the stream ends.
 */
export async function* compressZstdChunked(tar: AsyncIterable<Uint8Array>, result: Partial<ChunkedResult>, level = 3): AsyncGenerator<Uint8Array> {
  const params = { params: { [constants.ZSTD_c_compressionLevel]: level, [constants.ZSTD_c_checksumFlag]: 0 } };
  const frame = (parts: Uint8Array[]): Buffer => zstdCompressSync(parts.length === 1 ? parts[0]! : Buffer.concat(parts), params);
  let offset = 0;
  const diff = createHash('sha256');
  /** Bytes of the current non-content frame (headers, padding). */
  let raw: Buffer[] = [];
  /** The same bytes, not yet written as a tar-split segment. */
  let seg: Buffer[] = [];
  const splitLines: string[] = [];
  const toc: TocEntry[] = [];
  const chunkedFiles: ChunkedResult['files'] = [];
  const capture = {
    raw(b: Uint8Array) { const c = Buffer.from(b); raw.push(c); seg.push(c); diff.update(c); },
    content() { /* contents are handled entry by entry below */ },
    end() { /* nothing: the last frame is written after the loop */ },
  } as unknown as TarSplitWriter;
  const addSplit = (e: Record<string, unknown>): void => { splitLines.push(goJson({ ...e, position: splitLines.length })); };
  const flushSegment = (): void => {
    let all = Buffer.concat(seg);
    seg = [];
    while (all.length > 0) {
      addSplit({ type: 2, payload: all.subarray(0, SEGMENT_MAX).toString('base64') });
      all = all.subarray(SEGMENT_MAX);
    }
  };
  const out: Buffer[] = [];
  const emit = (b: Buffer): void => { out.push(b); offset += b.length; };
  const flushRaw = (): void => {
    if (raw.length > 0) emit(frame(raw));
    raw = [];
  };

  for await (const e of readTar(tar, { split: capture })) {
    flushSegment();
    // Names are bytes: the TOC holds them as Go's JSON encoder would (lossy
    // when not UTF-8); the tar-split keeps them exactly (name_raw).
    const tocName = goText(e.path);
    const entry: TocEntry = { type: TOC_TYPES[e.type], name: tocName };
    if (e.linkname) entry.linkName = goText(e.linkname);
    if (e.mode) entry.mode = e.mode;
    if (e.size) entry.size = e.size;
    if (e.uid) entry.uid = e.uid;
    if (e.gid) entry.gid = e.gid;
    entry.modtime = goTime(e.mtimeSec, e.mtimeNsec);
    if (e.devmajor) entry.devMajor = e.devmajor;
    if (e.devminor) entry.devMinor = e.devminor;
    if (e.xattrs.size > 0) {
      entry.xattrs = {};
      for (const k of [...e.xattrs.keys()].sort()) entry.xattrs[goText(k)] = Buffer.from(e.xattrs.get(k)!).toString('base64');
    }
    let crc: Crc64 | undefined;
    const group: TocEntry[] = [entry];
    if (e.type === 'file' && e.size > 0) {
      flushRaw();
      crc = new Crc64();
      const file = createHash('sha256');
      const chunks: Array<{ chunkOffset: number; offset: number; size: number; digest: string; zeros: boolean }> = [];
      const startOffset = offset;
      // The chunker: data bytes are rolled and cut at checksum boundaries;
      // runs of zeros wait until their length is known.
      const rs = new RollSum();
      let cur: Buffer[] = [];
      let curLen = 0;
      let chunkHash: Hash = createHash('sha256');
      let fileAt = 0;
      let zeros = 0;
      const endChunk = (isZeros: boolean): void => {
        if (curLen === 0) return;
        const at = offset;
        emit(frame(cur));
        chunks.push({ chunkOffset: fileAt, offset: at, size: curLen, digest: `sha256:${chunkHash.digest('hex')}`, zeros: isZeros });
        fileAt += curLen;
        cur = [];
        curLen = 0;
        chunkHash = createHash('sha256');
      };
      const addData = (b: Buffer): void => {
        if (b.length === 0) return;
        cur.push(b);
        curLen += b.length;
        chunkHash.update(b);
      };
      const dataZeros = (n: number): void => {
        let run = 0;
        for (let k = 0; k < n; k++) {
          rs.roll(0);
          run++;
          if (rs.onSplit() || curLen + run >= MAX_CHUNK) {
            addData(Buffer.alloc(run));
            run = 0;
            endChunk(false);
          }
        }
        addData(Buffer.alloc(run));
      };
      const settleZeros = (): void => {
        if (zeros === 0) return;
        if (zeros >= HOLE_THRESHOLD) {
          endChunk(false);
          for (let k = 0; k < Math.min(zeros, WINDOW); k++) rs.roll(0);
          let left = zeros;
          while (left > 0) {
            const n = Math.min(left, MAX_CHUNK);
            addData(Buffer.alloc(n));
            endChunk(true);
            left -= n;
          }
        } else {
          dataZeros(zeros);
        }
        zeros = 0;
      };
      for await (const c of e.body()) {
        const b = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
        file.update(b);
        crc.update(b);
        diff.update(b);
        let segStart = 0;
        for (let i = 0; i < b.length; i++) {
          const ch = b[i]!;
          if (ch === 0) {
            if (zeros === 0) addData(b.subarray(segStart, i));
            zeros++;
            segStart = i + 1;
            continue;
          }
          if (zeros > 0) settleZeros();
          rs.roll(ch);
          if (rs.onSplit() || curLen + (i + 1 - segStart) >= MAX_CHUNK) {
            addData(b.subarray(segStart, i + 1));
            segStart = i + 1;
            endChunk(false);
          }
        }
        if (zeros === 0) addData(b.subarray(segStart));
        if (out.length > 0) { yield* out.splice(0); }
      }
      settleZeros();
      endChunk(false);
      e.setContentDigest(Buffer.alloc(32));
      entry.digest = `sha256:${file.digest('hex')}`;
      entry.offset = startOffset;
      entry.endOffset = offset;
      if (chunks.length > 1) {
        chunkedFiles.push({ digest: entry.digest, size: e.size, chunks: chunks.filter((c) => !c.zeros).map((c) => ({ digest: c.digest, offset: c.chunkOffset, size: c.size })) });
        for (let k = 0; k < chunks.length; k++) {
          const c = chunks[k]!;
          const t: TocEntry = k === 0 ? entry : { type: 'chunk', name: tocName };
          if (k > 0 && c.chunkOffset) t.chunkOffset = c.chunkOffset;
          t.chunkSize = c.size;
          t.offset = c.offset;
          t.chunkDigest = c.digest;
          if (c.zeros) t.chunkType = 'zeros';
          if (k > 0) group.push(t);
        }
      }
    }
    toc.push(...group);
    // vbatts/tar-split's Entry.SetName: `name` when UTF-8, else `name_raw`.
    const text = utf8Of(e.path);
    const line: Record<string, unknown> = text !== undefined ? { type: 1, name: text } : { type: 1, name_raw: bytesOf(e.path).toString('base64') };
    if (e.type === 'file' && e.size > 0) line.size = e.size;
    line.payload = crc ? crc.sum().toString('base64') : null;
    addSplit(line);
    if (out.length > 0) yield* out.splice(0);
  }
  // Padding, end-of-archive blocks and trailing bytes: the last frame.
  flushRaw();
  flushSegment();
  const splitJson = Buffer.from(splitLines.map((l) => `${l}\n`).join(''), 'utf8');
  const splitZ = zstdCompressSync(splitJson, params);
  const tarSplitDigest = `sha256:${createHash('sha256').update(splitZ).digest('hex')}`;
  const tocBytes = Buffer.from(goJson({ version: 1, entries: orderToc(toc), tarSplitDigest }), 'utf8');
  const tocZ = zstdCompressSync(tocBytes, params);
  const tocOffset = offset + 8;
  emit(skippable(tocZ));
  const splitOffset = offset + 8;
  emit(skippable(splitZ));
  const footer = Buffer.alloc(FOOTER_SIZE);
  footer.writeBigUInt64LE(BigInt(tocOffset), 0);
  footer.writeBigUInt64LE(BigInt(tocZ.length), 8);
  footer.writeBigUInt64LE(BigInt(tocBytes.length), 16);
  footer.writeBigUInt64LE(BigInt(MANIFEST_TYPE_CRFS), 24);
  footer.writeBigUInt64LE(BigInt(splitOffset), 32);
  footer.writeBigUInt64LE(BigInt(splitZ.length), 40);
  footer.writeBigUInt64LE(BigInt(splitJson.length), 48);
  FOOTER_MAGIC.copy(footer, 56);
  emit(skippable(footer));
  yield* out.splice(0);
  result.annotations = {
    [ANN_TOC_DIGEST]: `sha256:${createHash('sha256').update(tocZ).digest('hex')}`,
    [ANN_TOC_POSITION]: `${tocOffset}:${tocZ.length}:${tocBytes.length}:${MANIFEST_TYPE_CRFS}`,
    [ANN_TARSPLIT_POSITION]: `${splitOffset}:${splitZ.length}:${splitJson.length}`,
  };
  result.diffId = `sha256:${diff.digest('hex')}`;
  result.files = chunkedFiles;
}

/** TOC entries with their keys in the order Go's struct declares them. */
function orderToc(entries: TocEntry[]): TocEntry[] {
  const keys: Array<keyof TocEntry> = [
    'type', 'name', 'linkName', 'mode', 'size', 'uid', 'gid', 'modtime', 'accesstime', 'changetime', 'devMajor', 'devMinor',
    'xattrs', 'digest', 'offset', 'endOffset', 'chunkSize', 'chunkOffset', 'chunkDigest', 'chunkType',
  ];
  return entries.map((e) => {
    const o: Record<string, unknown> = {};
    for (const k of keys) if (e[k] !== undefined) o[k] = e[k];
    return o as unknown as TocEntry;
  });
}
