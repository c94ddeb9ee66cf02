import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { rm } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../helpers/cli.ts';
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

void test('decompress: every zstd frame and skippable frame (zstd:chunked shape, pzstd), by the real tools', async () => {
  const one = execFileSync('zstd', ['-c', '-q'], { input: data.subarray(0, 150_000) });
  const two = execFileSync('zstd', ['-c', '-q', '--no-check'], { input: data.subarray(150_000) });
  const skip = (n: number, nibble = 0): Buffer => Buffer.concat([Buffer.from([0x50 | nibble, 0x2a, 0x4d, 0x18]), Buffer.from(Uint32Array.of(n).buffer), Buffer.alloc(n, 0xee)]);
  // zstd -d is the judge of what the stream means.
  for (const blob of [Buffer.concat([one, skip(9, 0xa), two]), Buffer.concat([skip(0), one, two, skip(64)]), Buffer.concat([one, two])]) {
    assert.deepEqual(execFileSync('zstd', ['-dc', '-q'], { input: blob, maxBuffer: 1 << 24 }), data);
    assert.equal(detectCompression(blob), 'zstd');
    for (const size of [13, 4096, 1 << 20]) assert.deepEqual(await collect(decompress(chunksOf(blob, size))), data);
  }
  // pzstd output starts with a skippable frame (0x184D2A50) and has a frame per worker.
  const big = Buffer.concat([data, data, data, data, data, data, data, data, data, data, data, data, data, data]);
  const p = execFileSync('pzstd', ['-c', '-q', '-p', '2'], { input: big, maxBuffer: 1 << 26 });
  assert.equal(p.readUInt32LE(0), 0x184d2a50);
  assert.equal(detectCompression(p), 'zstd');
  assert.deepEqual(await collect(decompress(chunksOf(p, 65536))), big);
  // Only skippable frames, or junk after a frame: refused, not silently cut short.
  await rejectsWith(collect(decompress(chunksOf(skip(4)))), 'EFORMAT', /no zstd frame/);
  await rejectsWith(collect(decompress(chunksOf(Buffer.concat([one, Buffer.from('junk')])), 'layer 3')), 'EFORMAT', /layer 3: corrupt zstd data: unknown data after frame 1/);
  await rejectsWith(collect(decompress(chunksOf(Buffer.concat([one, two.subarray(0, 20)])))), 'EFORMAT', /truncated/);
  await rejectsWith(collect(decompress(chunksOf(Buffer.concat([one, skip(100).subarray(0, 50)])))), 'EFORMAT', /truncated skippable/);
});

void test('decompress: libarchive\'s compressed archives (multi-member gzip, zstd with a skippable frame, pzstd) as gzip -d / zstd -d read them', async (t) => {
  const dir = join(REPO, '..', 'shared', 'corpus', 'libarchive-tar', 'compressed');
  if (!existsSync(dir)) { t.skip(`${dir} is absent (the shared corpus is not beside this clone)`); return; }
  const files = readdirSync(dir);
  assert.ok(files.length >= 3);
  for (const f of files) {
    const blob = readFileSync(join(dir, f));
    const tool = f.endsWith('.zst') ? 'zstd' : 'gzip';
    const expected = execFileSync(tool, ['-dc', '-q'], { input: blob, maxBuffer: 1 << 26 });
    assert.deepEqual(await collect(decompress(chunksOf(blob, 100), f)), expected, f);
  }
});
