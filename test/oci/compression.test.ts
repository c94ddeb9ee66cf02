import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { rm } from 'node:fs/promises';
import { compress, decompress, detectCompression } from '../../src/oci/compression.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { chunksOf, collect, rejectsWith, tempDir, throwsWith } from './tools.ts';

const data = Buffer.concat([pseudoRandomBytes(200_000, 7), Buffer.alloc(100_000, 'a')]);
let gz: Buffer;
let zst: Buffer;
let dir: string;

before(async () => {
  dir = await tempDir('compression');
  // Compressed by the real tools, not by us.
  gz = execFileSync('gzip', ['-c', '-6'], { input: data });
  zst = execFileSync('zstd', ['-c', '-q', '-3'], { input: data });
});
after(async () => { await rm(dir, { recursive: true, force: true }); });

void test('detectCompression looks at magic bytes', () => {
  assert.equal(detectCompression(gz), 'gzip');
  assert.equal(detectCompression(zst), 'zstd');
  assert.equal(detectCompression(Buffer.from('./etc/passwd\0\0\0')), 'none');
  assert.equal(detectCompression(new Uint8Array(0)), 'none');
  assert.equal(detectCompression(Buffer.from([0x1f])), 'none');
  const xz = execFileSync('xz', ['-c'], { input: data });
  throwsWith(() => detectCompression(xz, 'layer 2'), 'EUNSUPPORTED', /layer 2: xz/);
  const bz = execFileSync('bzip2', ['-c'], { input: data });
  throwsWith(() => detectCompression(bz), 'EUNSUPPORTED', /bzip2/);
  // A tar whose first member is named "BZh..." is still a tar.
  assert.equal(detectCompression(Buffer.from('BZh9 is a file name\0')), 'none');
});

void test('decompress: gzip and zstd from the real tools, in small and odd-sized chunks', async () => {
  // The magic split over several 1-byte chunks.
  async function* trickle(b: Buffer): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < 5; i++) yield b.subarray(i, i + 1);
    yield b.subarray(5);
  }
  assert.deepEqual(await collect(decompress(trickle(gz))), data);
  assert.deepEqual(await collect(decompress(trickle(zst))), data);
  assert.deepEqual(await collect(decompress(chunksOf(gz, 4093))), data);
  assert.deepEqual(await collect(decompress(chunksOf(zst, 61))), data);
  assert.deepEqual(await collect(decompress(chunksOf(zst, 65536))), data);
});

void test('decompress: plain data passes through unchanged, even tiny or empty', async () => {
  assert.deepEqual(await collect(decompress(chunksOf(data, 777))), data);
  assert.deepEqual(await collect(decompress(chunksOf(Buffer.from('ab')))), Buffer.from('ab'));
  assert.deepEqual(await collect(decompress(chunksOf(Buffer.alloc(0)))), Buffer.alloc(0));
});

void test('decompress: concatenated gzip members (pigz, appended layers)', async () => {
  const two = Buffer.concat([execFileSync('gzip', ['-c'], { input: 'one\n' }), execFileSync('gzip', ['-c'], { input: 'two\n' })]);
  assert.equal((await collect(decompress(chunksOf(two, 5)))).toString(), 'one\ntwo\n');
});

void test('decompress: truncated or corrupt data is EFORMAT', async () => {
  await rejectsWith(collect(decompress(chunksOf(gz.subarray(0, gz.length - 10)), 'layer 1')), 'EFORMAT', /layer 1: corrupt gzip data/);
  await rejectsWith(collect(decompress(chunksOf(gz.subarray(0, 5)))), 'EFORMAT');
  await rejectsWith(collect(decompress(chunksOf(zst.subarray(0, zst.length - 10)), 'layer 2')), 'EFORMAT', /layer 2: corrupt zstd data/);
  const badGz = Buffer.from(gz); badGz[gz.length - 6] ^= 0xff; // CRC32 trailer
  await rejectsWith(collect(decompress(chunksOf(badGz))), 'EFORMAT');
  const badZst = Buffer.from(zst); badZst[5] ^= 0xff; // frame header
  await rejectsWith(collect(decompress(chunksOf(badZst))), 'EFORMAT');
});

void test('decompress: errors of the source stream come through unchanged', async () => {
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield gz.subarray(0, 1000);
    throw new Error('source broke');
  }
  await assert.rejects(collect(decompress(failing())), /source broke/);
});

void test('decompress: stopping early releases the source', async () => {
  let finished = false;
  async function* src(): AsyncGenerator<Uint8Array> {
    try { yield* chunksOf(gz, 100); } finally { finished = true; }
  }
  for await (const chunk of decompress(src())) { assert.ok(chunk.length > 0); break; }
  assert.ok(finished);
});

void test('compress: output is read by gzip -d and zstd -d', async () => {
  const g = await collect(compress(chunksOf(data, 10000), 'gzip'));
  assert.deepEqual(execFileSync('gzip', ['-dc'], { input: g }), data);
  const z = await collect(compress(chunksOf(data, 10000), 'zstd', 5));
  assert.deepEqual(execFileSync('zstd', ['-dc'], { input: z, maxBuffer: 1 << 24 }), data);
});

void test('decompress: a 1 GiB zstd bomb streams in bounded memory', async () => {
  // 1 GiB of zeros compresses to ~32 KiB.
  const bomb = execFileSync('sh', ['-c', 'head -c 1073741824 /dev/zero | zstd -q -c -3'], { maxBuffer: 1 << 24 });
  const rssBefore = process.memoryUsage().rss;
  let total = 0;
  let peak = 0;
  for await (const chunk of decompress(chunksOf(bomb, 4096))) {
    total += chunk.length;
    if ((total & 0xffffff) < chunk.length) peak = Math.max(peak, process.memoryUsage().rss);
  }
  assert.equal(total, 1 << 30);
  assert.ok(peak - rssBefore < 256 << 20, `rss grew by ${(peak - rssBefore) >> 20} MiB`);
});
