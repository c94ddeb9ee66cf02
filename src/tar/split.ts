// tar-split: everything needed to rebuild an uncompressed layer byte for byte
// (its sha256 is the OCI diff ID) without keeping the layer. File contents
// live in the object store under their fs-verity digest; this record keeps
// every other byte (headers, PAX and GNU long-name blocks, padding, the end
// blocks, trailing bytes) and, in order, a reference to each file's content.
//
// Encoding (version 1). The record is gzip: one or more concatenated gzip
// members (a new member every ~1 MiB of input, so the writer never holds much
// uncompressed data), which decompress to one byte stream:
//
//   "CWTS" 0x01                      magic and version
//   then segments, each a tag byte and fields:
//   'R' len bytes[len]               raw bytes of the archive
//   'Z' len                          `len` zero bytes (padding, end blocks)
//   'C' size digest[32]              `size` bytes of file content, named by
//                                    its fs-verity SHA-256 digest
//   'E' total                        end; `total` is the archive's length
//
// Numbers (len, size, total) are unsigned LEB128 varints (at most 2^53 - 1).
import { createGunzip, gzipSync } from 'node:zlib';
import { CowshedError } from '../util/errors.ts';
import { StreamInput } from './input.ts';

const MAGIC = Buffer.from('CWTS\x01', 'latin1');
const TAG_RAW = 0x52; // 'R'
const TAG_ZEROS = 0x5a; // 'Z'
const TAG_CONTENT = 0x43; // 'C'
const TAG_END = 0x45; // 'E'
const DIGEST_LEN = 32;
/** Zero runs shorter than this stay inside raw segments (gzip handles them). */
const MIN_ZERO_RUN = 64;
/** Uncompressed bytes per gzip member. */
const MEMBER_INPUT = 1 << 20;

function varint(n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`tar-split: bad number ${n}`);
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/**
 * Collects a tar-split record while `readTar` reads an archive. The reader
 * feeds it; the consumer only supplies each regular file's content digest
 * (`entry.setContentDigest`) and calls `finish()` once the archive is read.
 */
export class TarSplitWriter {
  private readonly members: Buffer[] = [];
  private pending: Buffer[] = [MAGIC];
  private pendingLen = MAGIC.length;
  /** Literal bytes not yet written as an 'R' segment. */
  private literal: Buffer[] = [];
  private literalLen = 0;
  /** Zero bytes that follow `literal`, not yet written. */
  private zeros = 0;
  private total = 0;
  private ended = false;
  private finished = false;

  /** Records bytes of the archive that are kept as they are. */
  raw(bytes: Uint8Array): void {
    this.checkOpen();
    this.total += bytes.length;
    const n = bytes.length;
    let literalStart = 0;
    let i = 0;
    while (i < n) {
      if (bytes[i] !== 0) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < n && bytes[j] === 0) j++;
      // Long runs become 'Z' segments; a run at the end of the chunk may go on in the next one.
      if (j - i >= MIN_ZERO_RUN || j === n) {
        this.addLiteral(bytes.subarray(literalStart, i));
        this.zeros += j - i;
        literalStart = j;
      }
      i = j;
    }
    this.addLiteral(bytes.subarray(literalStart, n));
  }

  private addLiteral(b: Uint8Array): void {
    if (b.length === 0) return;
    this.settleZeros();
    this.literal.push(Buffer.from(b)); // a copy: the caller's buffer may be reused
    this.literalLen += b.length;
  }

  /** Records `size` bytes of regular-file content by their fs-verity digest. */
  content(size: number, digest: Uint8Array): void {
    this.checkOpen();
    if (digest.length !== DIGEST_LEN) throw new Error(`tar-split: content digest must be ${DIGEST_LEN} bytes, got ${digest.length}`);
    this.flushLiteral();
    this.total += size;
    this.emit(Buffer.concat([Buffer.of(TAG_CONTENT), varint(size), digest]));
  }

  /** Called by the reader once every byte of the archive has been recorded. */
  end(): void {
    this.checkOpen();
    this.flushLiteral();
    this.emit(Buffer.concat([Buffer.of(TAG_END), varint(this.total)]));
    this.ended = true;
  }

  /** Bytes of the archive recorded so far. */
  get archiveBytes(): number {
    return this.total;
  }

  /** The encoded record (see the top of this file). Only after the archive was read to its end. */
  finish(): Buffer {
    if (!this.ended) throw new Error('tar-split: the archive was not read to its end');
    if (!this.finished) {
      this.finished = true;
      this.compressPending();
    }
    return Buffer.concat(this.members);
  }

  private checkOpen(): void {
    if (this.ended) throw new Error('tar-split: record already ended');
  }

  /** Zeros followed by more literal bytes: a segment of their own if long, else part of the literal. */
  private settleZeros(): void {
    if (this.zeros === 0) return;
    if (this.zeros >= MIN_ZERO_RUN) {
      this.flushLiteral();
    } else {
      this.literal.push(Buffer.alloc(this.zeros));
      this.literalLen += this.zeros;
      this.zeros = 0;
    }
  }

  /** Writes pending literal bytes, then pending zeros. */
  private flushLiteral(): void {
    if (this.zeros > 0 && this.zeros < MIN_ZERO_RUN) this.settleZeros();
    if (this.literalLen > 0) {
      this.emit(Buffer.concat([Buffer.of(TAG_RAW), varint(this.literalLen), ...this.literal]));
      this.literal = [];
      this.literalLen = 0;
    }
    if (this.zeros > 0) {
      this.emit(Buffer.concat([Buffer.of(TAG_ZEROS), varint(this.zeros)]));
      this.zeros = 0;
    }
  }

  private emit(segment: Buffer): void {
    this.pending.push(segment);
    this.pendingLen += segment.length;
    if (this.pendingLen >= MEMBER_INPUT) this.compressPending();
  }

  private compressPending(): void {
    if (this.pendingLen === 0) return;
    this.members.push(gzipSync(Buffer.concat(this.pending)));
    this.pending = [];
    this.pendingLen = 0;
  }
}

const corrupt = (what: string, cause?: unknown): CowshedError =>
  new CowshedError('ECORRUPT', `tar-split record is damaged: ${what}`, { cause });

const OUT_CHUNK = 64 * 1024;

/**
 * Rebuilds the archive a tar-split record was made from. `openContent` gives
 * the bytes of a file by its fs-verity digest (from the object store); they
 * must be exactly `size` bytes. Memory stays bounded: segments and contents
 * are streamed.
 */
export async function* rebuildTar(
  split: Uint8Array,
  openContent: (digest: Buffer, size: number) => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>,
): AsyncGenerator<Uint8Array> {
  const gunzip = createGunzip();
  gunzip.end(split);
  const input = new StreamInput(gunzip);
  try {
    yield* rebuildSegments(input, openContent);
  } catch (e) {
    if (e instanceof CowshedError) throw e;
    if (typeof e === 'object' && e !== null && 'code' in e && String((e as { code: unknown }).code).startsWith('Z_')) {
      throw corrupt('not valid gzip', e);
    }
    throw e;
  } finally {
    gunzip.destroy();
  }
}

async function* rebuildSegments(
  input: StreamInput,
  openContent: (digest: Buffer, size: number) => AsyncIterable<Uint8Array> | Promise<AsyncIterable<Uint8Array>>,
): AsyncGenerator<Uint8Array> {
  const exact = async (n: number, what: string): Promise<Buffer> => {
    const b = await input.read(n);
    if (b.length !== n) throw corrupt(`truncated in ${what}`);
    return b;
  };
  const readVarint = async (what: string): Promise<number> => {
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = (await exact(1, what))[0];
      n += (b & 0x7f) * scale;
      if (!Number.isSafeInteger(n)) break;
      if ((b & 0x80) === 0) return n;
      scale *= 128;
    }
    throw corrupt(`bad number in ${what}`);
  };

  if (!(await exact(MAGIC.length, 'header')).equals(MAGIC)) throw corrupt('unknown format or version');

  // Raw bytes are gathered into chunks of up to OUT_CHUNK so that a layer of
  // many small headers is not handed out 512 bytes at a time.
  let out: Buffer[] = [];
  let outLen = 0;
  let produced = 0;
  const take = (b: Buffer): void => {
    out.push(b); // gunzip hands out fresh buffers: keeping views is safe
    outLen += b.length;
    produced += b.length;
  };
  const drain = (): Buffer => {
    const b = Buffer.concat(out, outLen);
    out = [];
    outLen = 0;
    return b;
  };

  for (;;) {
    const tag = (await exact(1, 'segment tag'))[0];
    if (tag === TAG_RAW) {
      let left = await readVarint('raw segment');
      while (left > 0) {
        const c = await input.readChunk(Math.min(left, OUT_CHUNK));
        if (c.length === 0) throw corrupt('truncated raw segment');
        take(c);
        left -= c.length;
        if (outLen >= OUT_CHUNK) yield drain();
      }
    } else if (tag === TAG_ZEROS) {
      let left = await readVarint('zero segment');
      while (left > 0) {
        const n = Math.min(left, OUT_CHUNK - outLen);
        out.push(Buffer.alloc(n));
        outLen += n;
        produced += n;
        left -= n;
        if (outLen >= OUT_CHUNK) yield drain();
      }
    } else if (tag === TAG_CONTENT) {
      const size = await readVarint('content segment');
      const digest = Buffer.from(await exact(DIGEST_LEN, 'content digest'));
      if (outLen > 0) yield drain();
      let got = 0;
      for await (const chunk of await openContent(digest, size)) {
        got += chunk.length;
        if (got > size) break;
        if (chunk.length > 0) yield chunk;
      }
      if (got !== size) {
        throw new CowshedError('ECORRUPT', `object ${digest.toString('hex')} does not hold the ${size} bytes the tar-split record expects`);
      }
      produced += size;
    } else if (tag === TAG_END) {
      const total = await readVarint('end segment');
      if (total !== produced) throw corrupt(`it describes ${total} bytes but holds ${produced}`);
      if ((await input.read(1)).length !== 0) throw corrupt('bytes after the end segment');
      if (outLen > 0) yield drain();
      return;
    } else {
      throw corrupt(`unknown segment tag 0x${tag.toString(16)}`);
    }
  }
}
