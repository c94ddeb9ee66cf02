import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, readFileSync, mkdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { hash } from 'node:crypto';
import { join } from 'node:path';
import { readTar } from '../../src/tar/reader.ts';
import { TarSplitWriter, rebuildTar } from '../../src/tar/split.ts';
import { FsVerityHasher } from '../../src/composefs/fsverity.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { makeFixture, gnuTar, chunksOf, entryFields, run, isRoot, pattern, type Fixture, type TarFormat } from './fixture.ts';

let fx: Fixture;
before(() => {
  if (isRoot) fx = makeFixture();
});
let scratch: string | undefined;
/** A temp dir for tests that do not need the root-made fixture. */
const dir2 = (): string => (scratch ??= mkdtempSync(join(tmpdir(), 'cowshed-split-')));
after(() => {
  fx?.cleanup();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});
const skip = isRoot ? false : 'needs root (devices, chown, security.capability)';

const sha256 = (b: Uint8Array): string => hash('sha256', b);

/** A tiny object store: content by fs-verity digest (hex). */
type Objects = Map<string, Buffer>;

/**
 * Reads an archive with a split writer, storing contents like the importer
 * would; `skipEvery` leaves some bodies unread so the reader hashes them.
 */
async function splitArchive(source: AsyncIterable<Uint8Array>, objects: Objects, skipEvery = 0): Promise<Buffer> {
  const split = new TarSplitWriter();
  let n = 0;
  for await (const e of readTar(source, { split })) {
    if (e.type !== 'file' || (skipEvery > 0 && n++ % skipEvery === 0)) continue;
    const hasher = new FsVerityHasher();
    const chunks: Buffer[] = [];
    for await (const c of e.body()) {
      hasher.update(c);
      chunks.push(Buffer.from(c));
    }
    const digest = hasher.digest();
    objects.set(digest.toString('hex'), Buffer.concat(chunks));
    e.setContentDigest(digest);
  }
  return split.finish();
}

async function rebuild(split: Buffer, objects: Objects, fromDisk?: Map<string, Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  const open = async function* (digest: Buffer, size: number): AsyncGenerator<Uint8Array> {
    const hex = digest.toString('hex');
    const data = objects.get(hex) ?? fromDisk?.get(hex);
    assert.ok(data, `object ${hex} (${size} bytes) missing`);
    yield* chunksOf(data, 7000);
  };
  for await (const c of rebuildTar(split, open)) out.push(Buffer.from(c));
  return Buffer.concat(out);
}

for (const format of ['pax', 'gnu', 'ustar'] as TarFormat[]) {
  void test(`tar-split rebuilds a GNU tar --format=${format} archive byte for byte`, { skip }, async () => {
    const archive = join(fx.dir, `split-${format}.tar`);
    gnuTar(fx, format, archive);
    const original = readFileSync(archive);
    const objects: Objects = new Map();
    const split = await splitArchive(createReadStream(archive, { highWaterMark: 1000 }), objects);
    // The record keeps no file content: it is far smaller than the archive.
    assert.ok(split.length < original.length / 10, `split ${split.length} bytes for a ${original.length}-byte archive`);
    const rebuilt = await rebuild(split, objects);
    assert.equal(rebuilt.length, original.length);
    assert.equal(sha256(rebuilt), sha256(original));

    // Bodies left unread: the reader hashes them itself.
    const hashedByReader: Objects = new Map();
    const split2 = await splitArchive(chunksOf(original, 4096), hashedByReader, 2);
    const all = new Map<string, Buffer>();
    await splitArchive(chunksOf(original, 4096), all);
    assert.equal(sha256(await rebuild(split2, hashedByReader, all)), sha256(original));
  });
}

/** A small archive made by GNU tar, in memory. */
function smallArchive(): Buffer {
  const archive = join(fx.dir, 'small.tar');
  gnuTar(fx, 'ustar', archive);
  return readFileSync(archive);
}

void test('tar-split keeps a missing end, trailing bytes and zero padding exactly', { skip }, async () => {
  const full = smallArchive();
  // Where the entries end (the first zero block).
  let end = 0;
  for await (const e of readTar(chunksOf(full, 65536))) end = e.dataOffset + Math.ceil(e.size / 512) * 512;
  const variants = {
    'no end blocks': full.subarray(0, end),
    'one end block': full.subarray(0, end + 512),
    'trailing garbage': Buffer.concat([full, Buffer.from('garbage after the end\n'), pattern(5000, 9)]),
    'long zero tail': Buffer.concat([full, Buffer.alloc(10 * 1024 * 1024)]),
  };
  for (const [what, data] of Object.entries(variants)) {
    const objects: Objects = new Map();
    const split = await splitArchive(chunksOf(data, 3333), objects);
    const rebuilt = await rebuild(split, objects);
    assert.equal(sha256(rebuilt), sha256(data), what);
    if (what === 'long zero tail') assert.ok(split.length < 200_000, `zero runs are stored compactly (${split.length} bytes)`);
  }
});

void test('tar-split of a layer with many entries stays small and rebuilds', async () => {
  // Our own writer's archive of 1500 files, each with a PAX header: over 1 MiB of raw
  // bytes, so the record holds several gzip members.
  const { writeTar } = await import('../../src/tar/writer.ts');
  const entries = [];
  for (let i = 0; i < 1500; i++) {
    const body = pattern(i % 700, i);
    entries.push({ header: { path: `d${i % 10}/file-${i}-${'n'.repeat(i % 120)}`, type: 'file' as const, mode: 0o644, size: body.length, mtimeSec: 1e9 + i, mtimeNsec: i }, body: chunksOf(body, 4096) });
  }
  const chunks: Buffer[] = [];
  for await (const c of writeTar(entries)) chunks.push(Buffer.from(c));
  const data = Buffer.concat(chunks);
  const objects: Objects = new Map();
  const split = await splitArchive(chunksOf(data, 65536), objects);
  assert.equal(sha256(await rebuild(split, objects)), sha256(data));
});

void test('a damaged split or a wrong object gives a typed error', { skip }, async () => {
  const data = smallArchive();
  const objects: Objects = new Map();
  const split = await splitArchive(chunksOf(data, 65536), objects);
  const isCode = (code: string) => (e: unknown): boolean => isCowshedError(e) && e.code === code;
  await assert.rejects(rebuild(Buffer.from('not gzip at all'), objects), isCode('ECORRUPT'));
  await assert.rejects(rebuild(split.subarray(0, split.length - 20), objects), isCode('ECORRUPT'));
  // An object shorter than the record says.
  const short: Objects = new Map([...objects].map(([k, v]) => [k, v.subarray(0, Math.max(0, v.length - 1))]));
  await assert.rejects(rebuild(split, short), isCode('ECORRUPT'));
});

void test('finish() refuses a record of an archive not read to its end', { skip }, async () => {
  const split = new TarSplitWriter();
  for await (const e of readTar(chunksOf(smallArchive(), 65536), { split })) {
    assert.ok(e);
    break;
  }
  assert.throws(() => split.finish(), /not read to its end/);
});

void test('other GNU tar flavours read and rebuild: v7, incremental dumpdirs, PAX global headers', async () => {
  const src = join(dir2(), 'flavours');
  mkdirSync(join(src, 's/d'), { recursive: true });
  writeFileSync(join(src, 's/d/a'), 'a\n');
  writeFileSync(join(src, 's/b'), pattern(1500, 5));
  const flavours: Record<string, string[]> = {
    v7: ['--format=v7'],
    incremental: ['--format=gnu', `--listed-incremental=${join(src, 'snar')}`],
    global: ['--format=posix', '--pax-option=comment=hello,globexthdr.name=glob'],
  };
  for (const [what, args] of Object.entries(flavours)) {
    const archive = join(src, `${what}.tar`);
    run('tar', [...args, '-C', src, '-cf', archive, 's']);
    const data = readFileSync(archive);
    const entries = [];
    for await (const e of readTar(chunksOf(data, 700))) entries.push({ path: e.path, type: e.type, data: (await entryFields(e)).data.toString('latin1') });
    entries.sort((a, b) => (a.path < b.path ? -1 : 1));
    assert.deepEqual(entries.map((e) => [e.path, e.type]), [['s/', 'dir'], ['s/b', 'file'], ['s/d/', 'dir'], ['s/d/a', 'file']], what);
    assert.equal(entries[3].data, 'a\n');
    if (what === 'incremental') assert.match(entries[0].data, /[YN]b\0Dd\0/, 'a dumpdir body lists the names');
    const objects: Objects = new Map();
    const split = await splitArchive(chunksOf(data, 4096), objects);
    assert.equal(sha256(await rebuild(split, objects)), sha256(data), what);
  }
});

void test('a record larger than one gzip member rebuilds (raw, zero and content segments)', async () => {
  const split = new TarSplitWriter();
  const raw1 = pattern(3 * 1024 * 1024 + 7, 11); // more than one member's worth of literal bytes
  const content = pattern(10_000, 12);
  const digest = new FsVerityHasher().update(content).digest();
  split.raw(raw1);
  split.raw(Buffer.alloc(63)); // short zero run, kept literal
  split.content(content.length, digest);
  split.raw(Buffer.concat([Buffer.from('x'), Buffer.alloc(5000), Buffer.from('y')]));
  split.raw(Buffer.alloc(40)); // a zero run spanning calls
  split.raw(Buffer.alloc(40));
  split.end();
  const record = split.finish();
  const expected = Buffer.concat([raw1, Buffer.alloc(63), content, Buffer.from('x'), Buffer.alloc(5000), Buffer.from('y'), Buffer.alloc(80)]);
  assert.equal(sha256(await rebuild(record, new Map([[digest.toString('hex'), content]]))), sha256(expected));
});
