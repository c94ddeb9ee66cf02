// Partial pull of a zstd:chunked layer: only the files the store lacks are
// fetched. Steps, all before a byte of the layer is handed on:
//   1. TOC and tar-split: one range request; both digests checked (the TOC
//      against the layer annotation, the tar-split against the TOC), both
//      parsed strictly, and checked to describe the same files.
//   2. Each regular file's content SHA-256 is looked up in the store; for a
//      missing file of several chunks, each chunk's SHA-256 too (chunk
//      index): a chunk a stored object holds is read from it and checked
//      against its chunk digest now (gone or wrong: fetched instead).
//   3. The frames of the missing files (their missing chunks) are fetched
//      with multi-range requests (ranges.ts) into a sparse file at their
//      blob offsets.
//   4. Every fetched file is decoded (stored chunks read again) and checked
//      against its digest (and each chunk against its chunk digest).
// Then the layer's uncompressed tar is rebuilt from the tar-split, stored
// objects and fetched frames; the caller verifies it against the diff ID
// while the import reads it, so nothing is committed unless it holds.
//
// A failure in steps 1-4 is safe to answer with a whole-layer pull (nothing
// was handed on); the caller does so, saying why in one line.
import { closeSync, createReadStream, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { CowshedError } from '../util/errors.ts';
import { escapeName } from '../util/names.ts';
import { decompressZstdFrames } from '../oci/compression.ts';
import { FsVerityHasher, toHex } from '../composefs/fsverity.ts';
import {
  decompressMeta, FOOTER_SIZE, parseFooter, fileFrames, matchTocAndTarSplit, parseAnnotations, parseTarSplit, parseToc, sha256,
  type FileFrames,
} from './format.ts';
import type { Range } from '../registry/ranges.ts';
import type { ChunkedFile, StoredChunk } from './content-index.ts';

export interface PartialSource {
  /** Names the layer in messages. */
  what: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
  /** Fetches ranges into put(); true if the registry sent the whole blob instead. */
  fetch(ranges: Range[], put: (offset: number, bytes: Buffer) => void): Promise<boolean>;
  /** Content digest → stored object (fs-verity hex). */
  lookup(files: Array<{ digest: string; size: number }>): Map<string, string>;
  openObject(hex: string): AsyncIterable<Uint8Array>;
  /** Chunk digest → stored objects holding it (unverified); absent: a missing file is fetched whole. */
  lookupChunks?(digests: string[]): Map<string, StoredChunk[]>;
  /** Bytes of a stored object; undefined when it is gone or shorter. */
  readObject?(hex: string, offset: number, length: number): Buffer | undefined;
  tmpDir: string;
  /**
   * Other per-file sources (deltas: src/delta/mixed.ts), asked once the TOC
   * is read and the store looked up: it may add files the store lacks to
   * `local` (content digest → an object openObject reads), so their frames
   * are not fetched. Whatever it adds is re-verified when the tar is rebuilt.
   */
  provide?(files: FileFrames[], local: Map<string, string>, meta: { bytes: number }): Promise<void>;
}

export interface PartialPlan {
  method: 'partial' | 'whole';
  /** Regular files in the layer (with content), fetched, found in the store. */
  files: number;
  filesFetched: number;
  filesFound: number;
  /** Of the files fetched, those fetched in part (some chunks read from stored objects): how many, compressed bytes fetched for them, their size. */
  filesPartial: number;
  filesPartialBytes: number;
  filesPartialSize: number;
  /** Compressed bytes asked for (TOC and tar-split included). */
  bytesWanted: number;
  /** Uncompressed tar (verify against the diff ID while reading); undefined: pull the blob whole the usual way. */
  tar: (() => AsyncIterable<Uint8Array>) | undefined;
  /** Files fetched: content digest, size and fs-verity digest, for the content index. */
  fetched: Array<{ digest: string; size: number; object: string }>;
  /** The layer's files of several chunks, for the chunk index (also when read whole). */
  chunks: ChunkedFile[];
  close(): void;
}

/** Above this share of the layer's data missing, one whole-blob request is cheaper. */
export const WHOLE_LAYER_SHARE = 0.6;
/** Frames up to this size are decoded in one call; bigger ones are streamed. */
const SYNC_FRAME_OUTPUT = 16 << 20;

/** A sparse file holding fetched bytes at their blob offsets. */
class SparseBlob {
  readonly path: string;
  private fd: number;
  private readonly have: Range[] = [];
  constructor(dir: string, size: number) {
    // Named as the store names temp files of a live process (gc and fsck leave them alone).
    this.path = join(dir, `objects-${process.pid}-partial-${Date.now()}-${Math.random().toString(16).slice(2)}`);
    this.fd = openSync(this.path, 'wx+', 0o600);
    if (size > 0) writeSync(this.fd, Buffer.alloc(1), 0, 1, size - 1);
  }
  put(offset: number, b: Buffer): void {
    let done = 0;
    while (done < b.length) done += writeSync(this.fd, b, done, b.length - done, offset + done);
    this.have.push({ start: offset, end: offset + b.length });
  }
  covers(r: Range): boolean {
    // Pieces may come in any order and more than once.
    const sorted = this.have.filter((h) => h.end > r.start && h.start < r.end).sort((a, b) => a.start - b.start);
    let at = r.start;
    for (const h of sorted) {
      if (h.start > at) return false;
      at = Math.max(at, h.end);
      if (at >= r.end) return true;
    }
    return at >= r.end;
  }
  read(offset: number, length: number): Buffer {
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, b, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return b;
  }
  stream(offset: number, length: number): AsyncIterable<Uint8Array> {
    if (length === 0) return (async function* () { /* empty */ })();
    return createReadStream(this.path, { start: offset, end: offset + length - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>;
  }
  close(): void {
    if (this.fd >= 0) { closeSync(this.fd); this.fd = -1; }
    rmSync(this.path, { force: true });
  }
}

/** A name for a message: exact, escaped, quoted. */
const q = (name: string): string => `"${escapeName(name)}"`;

function refused(what: string, detail: string, code: 'EFORMAT' | 'EDIGEST' = 'EFORMAT'): CowshedError {
  return new CowshedError(code, `${what}: ${detail}`);
}

/** A whole-layer plan fetches no file in part. */
const NOTHING_IN_PART = { filesPartial: 0, filesPartialBytes: 0, filesPartialSize: 0 } as const;

type Chunk = FileFrames['chunks'][number];
/** Chunks of missing files read from stored objects instead of fetched. */
interface LocalChunks {
  at: Map<Chunk, StoredChunk>;
  read(hex: string, offset: number, length: number): Buffer | undefined;
}

/** Decodes one chunk's frames (or reads it from a stored object), at most `size` bytes, checking the length. */
async function* decodeChunk(blob: SparseBlob, c: Chunk, what: string, name: string, local?: LocalChunks): AsyncGenerator<Uint8Array> {
  if (c.zeros) {
    // Known content: no need to fetch or decode.
    for (let left = c.size; left > 0; left -= 1 << 20) yield Buffer.alloc(Math.min(left, 1 << 20));
    return;
  }
  const stored = local?.at.get(c);
  if (stored) {
    const b = local!.read(stored.object, stored.offset, c.size);
    if (!b) throw refused(what, `stored object ${stored.object} no longer holds a chunk of ${q(name)}: run cowshed fsck`, 'EDIGEST');
    yield b;
    return;
  }
  let got = 0;
  if (c.size <= SYNC_FRAME_OUTPUT) {
    let out: Buffer;
    try {
      out = zstdDecompressSync(blob.read(c.offset, c.end - c.offset), { maxOutputLength: c.size + 1 });
    } catch (e) {
      throw refused(what, `the frames of ${q(name)} do not decode (${e instanceof Error ? e.message : String(e)})`, 'EDIGEST');
    }
    got = out.length;
    if (got === c.size) yield out;
  } else {
    for await (const part of decompressZstdFrames(blob.stream(c.offset, c.end - c.offset), `${what}: ${q(name)}`)) {
      got += part.length;
      if (got > c.size) break;
      yield part;
    }
  }
  if (got !== c.size) throw refused(what, `the frames of ${q(name)} hold ${got > c.size ? 'more than' : got} bytes, the TOC says ${c.size}`, 'EDIGEST');
}

async function* decodeFile(blob: SparseBlob, f: FileFrames, what: string, verify: boolean, local?: LocalChunks): AsyncGenerator<Uint8Array> {
  const file = createHash('sha256');
  for (const c of f.chunks) {
    const ch = verify && c.digest ? createHash('sha256') : undefined;
    for await (const part of decodeChunk(blob, c, what, f.name, local)) {
      file.update(part);
      ch?.update(part);
      yield part;
    }
    if (ch && `sha256:${ch.digest('hex')}` !== c.digest) throw refused(what, `a chunk of ${q(f.name)} does not match its chunk digest`, 'EDIGEST');
  }
  if (`sha256:${file.digest('hex')}` !== f.digest) throw refused(what, `${q(f.name)} does not match its digest ${f.digest}`, 'EDIGEST');
}

/**
 * Chunks of `files` that stored objects hold, each read and checked against
 * its chunk digest: an object gc removed or that changed is passed over
 * (the chunk is fetched).
 */
function reusableChunks(src: PartialSource, files: Iterable<FileFrames>): LocalChunks {
  const local: LocalChunks = { at: new Map(), read: (hex, offset, length) => src.readObject?.(hex, offset, length) };
  if (!src.lookupChunks || !src.readObject) return local;
  const wanted: Chunk[] = [];
  for (const f of files) for (const c of f.chunks) if (!c.zeros && c.digest) wanted.push(c);
  if (wanted.length === 0) return local;
  const where = src.lookupChunks(wanted.map((c) => c.digest!));
  for (const c of wanted) {
    for (const s of where.get(c.digest!) ?? []) {
      const b = src.readObject(s.object, s.offset, c.size);
      if (b && sha256(b) === c.digest) { local.at.set(c, s); break; }
    }
  }
  return local;
}

/** The files of several chunks with their chunk digests and offsets in the file, once per content. */
function chunkIndexRows(files: FileFrames[]): ChunkedFile[] {
  const out = new Map<string, ChunkedFile>();
  for (const f of files) {
    if (f.chunks.length < 2 || out.has(f.digest)) continue;
    const chunks: ChunkedFile['chunks'] = [];
    let at = 0;
    for (const c of f.chunks) {
      if (c.digest && !c.zeros) chunks.push({ digest: c.digest, offset: at, size: c.size });
      at += c.size;
    }
    if (chunks.length > 0) out.set(f.digest, { digest: f.digest, size: f.size, chunks });
  }
  return [...out.values()];
}

/**
 * Steps 1-4 above. Returns a plan whose tar() rebuilds the layer; or, when
 * fetching most of the layer anyway (or the registry sent it whole), a plan
 * of method 'whole' reading the blob from what was fetched.
 */
export async function planPartial(src: PartialSource): Promise<PartialPlan> {
  const { what } = src;
  const pos = parseAnnotations(src.annotations, src.size, what);
  const blob = new SparseBlob(src.tmpDir, src.size);
  try {
    const wholeFromFile = (bytesWanted: number, chunks: ChunkedFile[] = []): PartialPlan => ({
      method: 'whole', files: 0, filesFetched: 0, filesFound: 0, ...NOTHING_IN_PART, bytesWanted, fetched: [], chunks,
      tar: () => decompressZstdFrames(verifiedStream(blob.stream(0, src.size), src.digest, src.size, what), what),
      close: () => blob.close(),
    });
    // TOC, tar-split and footer: adjacent, so one range of one request.
    const metaRanges = [
      { start: pos.toc.offset, end: pos.toc.offset + pos.toc.length },
      { start: pos.tarSplit.offset, end: pos.tarSplit.offset + pos.tarSplit.length },
      { start: src.size - FOOTER_SIZE, end: src.size },
    ];
    if (await src.fetch(metaRanges, (o, b) => blob.put(o, b))) return wholeFromFile(src.size);
    for (const r of metaRanges) if (!blob.covers(r)) throw refused(what, 'the registry did not send the TOC and tar-split');
    // The footer must say what the annotations say (containers/storage trusts the annotations; a blob that disagrees is damaged or forged).
    const footer = parseFooter(blob.read(src.size - FOOTER_SIZE, FOOTER_SIZE), what);
    const same = (a: { offset: number; length: number; uncompressed: number }, b: typeof a): boolean => a.offset === b.offset && a.length === b.length && a.uncompressed === b.uncompressed;
    if (!same(footer.toc, pos.toc) || !same(footer.tarSplit, pos.tarSplit)) throw refused(what, 'the zstd:chunked footer disagrees with the layer annotations');
    const tocZ = blob.read(pos.toc.offset, pos.toc.length);
    if (sha256(tocZ) !== pos.tocDigest) throw refused(what, `the TOC does not match its digest ${pos.tocDigest}`, 'EDIGEST');
    const toc = parseToc(decompressMeta(tocZ, pos.toc.uncompressed, what, 'TOC'), Math.min(pos.toc.offset, pos.tarSplit.offset) - 8, what);
    if (!toc.tarSplitDigest) throw refused(what, 'the TOC names no tar-split digest');
    const splitZ = blob.read(pos.tarSplit.offset, pos.tarSplit.length);
    if (sha256(splitZ) !== toc.tarSplitDigest) throw refused(what, `the tar-split does not match its digest ${toc.tarSplitDigest}`, 'EDIGEST');
    const split = parseTarSplit(decompressMeta(splitZ, pos.tarSplit.uncompressed, what, 'tar-split'), what);
    // Each tar-split file with content, under its exact name, with its TOC frames (in tar order).
    const needed = matchTocAndTarSplit(fileFrames(toc, what), split, what);
    const local = src.lookup(needed.map((f) => ({ digest: f.digest, size: f.size })));
    if (src.provide) await src.provide(needed, local, { bytes: pos.toc.length + pos.tarSplit.length });
    const missing = needed.filter((f) => !local.has(f.digest));
    const chunks = chunkIndexRows(needed);
    // Each missing content once, through its first file (a second file of the same content may sit elsewhere in the blob).
    const missingByDigest = new Map<string, FileFrames>();
    for (const f of missing) if (!missingByDigest.has(f.digest)) missingByDigest.set(f.digest, f);
    const stored = reusableChunks(src, missingByDigest.values());
    const ranges: Range[] = [];
    const fetched: PartialPlan['fetched'] = [];
    let filesPartial = 0;
    let filesPartialBytes = 0;
    let filesPartialSize = 0;
    for (const f of missingByDigest.values()) {
      let bytes = 0;
      let reused = false;
      for (const c of f.chunks) {
        if (c.zeros) continue;
        if (stored.at.has(c)) { reused = true; continue; }
        ranges.push({ start: c.offset, end: c.end });
        bytes += c.end - c.offset;
      }
      if (reused) { filesPartial++; filesPartialBytes += bytes; filesPartialSize += f.size; }
    }
    const wanted = ranges.reduce((a, r) => a + r.end - r.start, 0);
    const dataSize = Math.min(pos.toc.offset, pos.tarSplit.offset) - 8;
    const metaBytes = pos.toc.length + pos.tarSplit.length;
    if (wanted > dataSize * WHOLE_LAYER_SHARE) {
      // Most of it is missing: one request for the whole blob costs less.
      blob.close();
      return {
        method: 'whole', files: needed.length, filesFetched: 0, filesFound: needed.length - missing.length, ...NOTHING_IN_PART,
        bytesWanted: metaBytes + src.size, fetched: [], chunks, tar: undefined, close: () => {},
      };
    }
    if (ranges.length > 0 && await src.fetch(ranges, (o, b) => blob.put(o, b))) return wholeFromFile(metaBytes + src.size, chunks);
    for (const r of ranges) if (!blob.covers(r)) throw refused(what, `the registry did not send bytes ${r.start}-${r.end - 1}`);
    // Every fetched file checked before anything is handed on.
    for (const f of missingByDigest.values()) {
      const fv = new FsVerityHasher();
      for await (const part of decodeFile(blob, f, what, true, stored)) fv.update(part);
      fetched.push({ digest: f.digest, size: f.size, object: toHex(fv.digest()) });
    }

    const tar = async function* (): AsyncGenerator<Uint8Array> {
      let k = 0;
      for (const e of split) {
        if (e.type === 2) {
          if (e.payload!.length > 0) yield e.payload!;
          continue;
        }
        if (e.size === 0) continue;
        const f = needed[k++]!;
        const obj = local.get(f.digest);
        if (obj !== undefined) {
          const h = createHash('sha256');
          let n = 0;
          for await (const c of src.openObject(obj)) { h.update(c); n += c.length; yield c; }
          if (n !== f.size || `sha256:${h.digest('hex')}` !== f.digest) throw refused(what, `stored object ${obj} does not hold ${q(f.name)}: run cowshed fsck`, 'EDIGEST');
        } else {
          yield* decodeFile(blob, missingByDigest.get(f.digest)!, what, false, stored);
        }
      }
    };
    return {
      method: 'partial', files: needed.length, filesFetched: missing.length, filesFound: needed.length - missing.length, filesPartial, filesPartialBytes, filesPartialSize,
      bytesWanted: metaBytes + mergedSize(ranges), fetched, chunks, tar, close: () => blob.close(),
    };
  } catch (e) {
    blob.close();
    throw e;
  }
}

/** Bytes fetched for these ranges once gaps under 1 KiB are merged (as the requests do). */
export function mergedSize(ranges: Range[]): number {
  const s = [...ranges].sort((a, b) => a.start - b.start);
  let total = 0;
  let end = -1;
  for (const r of s) {
    if (r.start - end < 1024 && end >= 0) { if (r.end > end) { total += r.end - end; end = r.end; } } else { total += r.end - r.start; end = r.end; }
  }
  return total;
}

async function* verifiedStream(src: AsyncIterable<Uint8Array>, digest: string, size: number, what: string): AsyncGenerator<Uint8Array> {
  const h = createHash('sha256');
  let n = 0;
  for await (const c of src) { h.update(c); n += c.length; yield c; }
  if (n !== size || `sha256:${h.digest('hex')}` !== digest) throw new CowshedError('EDIGEST', `${what}: blob digest mismatch: expected ${digest}`);
}

