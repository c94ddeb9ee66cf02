// Layer (de)compression. The format is detected by magic bytes, not by the
// media type: registries and tools mislabel layers often enough. Everything
// streams, so a decompression bomb costs time and disk, never memory.

import { Readable, type Transform } from 'node:stream';
import { constants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { CowshedError, isCowshedError } from '../util/errors.ts';
import type { Compression } from './media-types.ts';

export type { Compression } from './media-types.ts';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const BZIP2_MAGIC = [0x42, 0x5a, 0x68]; // "BZh": only trusted with a valid block-size digit and block magic

// zlib's default 16 KiB output chunks cost a thread-pool round trip each:
// 256 KiB halves gunzip time for a 200 MB layer (990 ms -> 480 ms here).
const DECOMPRESS_OPTS = { chunkSize: 256 << 10 };

/** Longest prefix detectCompression looks at. */
export const MAGIC_BYTES = 10;

function startsWith(head: Uint8Array, magic: number[]): boolean {
  return head.length >= magic.length && magic.every((b, i) => head[i] === b);
}

/**
 * Detects the compression of a layer from its first bytes ('none' = plain
 * tar). xz and bzip2 (legal in Docker v1 layers, not in OCI) are refused
 * by name rather than mistaken for a tar.
 */
export function detectCompression(head: Uint8Array, what = 'layer'): Compression {
  if (startsWith(head, GZIP_MAGIC)) return 'gzip';
  if (startsWith(head, ZSTD_MAGIC)) return 'zstd';
  if (startsWith(head, XZ_MAGIC)) throw new CowshedError('EUNSUPPORTED', `${what}: xz-compressed layers are not supported`);
  // bzip2: "BZh" + block size '1'..'9' + block magic 0x314159265359.
  if (startsWith(head, BZIP2_MAGIC) && head.length >= 10 && head[3] >= 0x31 && head[3] <= 0x39
    && head[4] === 0x31 && head[5] === 0x41 && head[6] === 0x59 && head[7] === 0x26 && head[8] === 0x53 && head[9] === 0x59) {
    throw new CowshedError('EUNSUPPORTED', `${what}: bzip2-compressed layers are not supported`);
  }
  return 'none';
}

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Streams `source` through a zlib transform; zlib failures become EFORMAT. */
async function* pipeThrough(
  source: AsyncIterable<Uint8Array>,
  transform: Transform,
  failure: string,
): AsyncGenerator<Uint8Array> {
  const input = Readable.from(source);
  // Errors of the source (EDIGEST from a verifier, I/O) reach the reader unchanged.
  input.on('error', (e) => transform.destroy(e));
  input.pipe(transform);
  try {
    for await (const chunk of transform as AsyncIterable<Buffer>) yield chunk;
  } catch (e) {
    if (isCowshedError(e)) throw e;
    const code = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
    if (code.startsWith('Z_') || code.startsWith('ZSTD_') || code.startsWith('ERR_ZLIB') || code === 'ERR_BUFFER_TOO_LARGE') {
      throw new CowshedError('EFORMAT', `${failure}: ${describeError(e)}`, { cause: e });
    }
    throw e;
  } finally {
    // Early exit by the consumer: stop reading the source.
    input.unpipe(transform);
    input.destroy();
    transform.destroy();
  }
}

/** Reads at least `n` bytes (or everything, if shorter) from the front of an iterator. */
async function peek(it: AsyncIterator<Uint8Array>, n: number): Promise<{ head: Uint8Array[]; length: number; done: boolean }> {
  const head: Uint8Array[] = [];
  let length = 0;
  while (length < n) {
    const r = await it.next();
    if (r.done) return { head, length, done: true };
    if (r.value.length === 0) continue;
    head.push(r.value);
    length += r.value.length;
  }
  return { head, length, done: false };
}

function concat(chunks: Uint8Array[], max: number): Uint8Array {
  const out = new Uint8Array(Math.min(max, chunks.reduce((s, c) => s + c.length, 0)));
  let at = 0;
  for (const c of chunks) {
    if (at >= out.length) break;
    const part = c.subarray(0, out.length - at);
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Decompresses a gzip or zstd stream (detected by magic); anything else is
 * passed through as a plain tar. Corrupt or truncated compressed data
 * throws EFORMAT.
 */
export async function* decompress(source: AsyncIterable<Uint8Array>, what = 'layer'): AsyncGenerator<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    const { head, done } = await peek(it, MAGIC_BYTES);
    finished = done;
    const kind = detectCompression(concat(head, MAGIC_BYTES), what);
    const whole = (async function* () {
      yield* head;
      while (!finished) {
        const r = await it.next();
        if (r.done) { finished = true; break; }
        yield r.value;
      }
    })();
    if (kind === 'none') {
      yield* whole;
    } else if (kind === 'gzip') {
      yield* pipeThrough(whole, createGunzip(DECOMPRESS_OPTS), `${what}: corrupt gzip data`);
    } else {
      yield* pipeThrough(whole, createZstdDecompress(DECOMPRESS_OPTS), `${what}: corrupt zstd data`);
    }
  } finally {
    if (!finished) await it.return?.();
  }
}

/** Compresses a stream (for export). Level: gzip 1-9 (default 6), zstd 1-19 (default 3). */
export async function* compress(
  source: AsyncIterable<Uint8Array>,
  kind: 'gzip' | 'zstd',
  level?: number,
): AsyncGenerator<Uint8Array> {
  const transform = kind === 'gzip'
    ? createGzip(level === undefined ? {} : { level })
    : createZstdCompress(level === undefined ? {} : { params: { [constants.ZSTD_c_compressionLevel]: level } });
  yield* pipeThrough(source, transform, `${kind} compression failed`);
}
