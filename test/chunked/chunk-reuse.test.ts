// Chunk-level reuse in partial pulls: a large file that differs from a
// stored one only in a few bytes is assembled from the stored object's
// chunks and the few chunks that changed, fetched from a real registry.
// A stored object that is damaged or gone is not trusted: the chunk (or the
// file) is fetched instead, and the image is still exactly the one pushed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { assertMountsAsUmociUnpacks } from '../helpers/umoci-judge.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { cowshedAsync, cowshedAsyncOk, startRegistry, type RunningRegistry } from '../registry/servers.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const missing = ['docker-registry', 'umoci'].filter((t) => !have(t));

/** Incompressible, so its chunks are many (about 64 KiB each) and cost what they weigh. */
const BIG = 6 << 20;

interface LayerJson {
  method: string; bytesFetched: number; files?: number; filesFetched?: number; filesFound?: number;
  filesPartial?: number; filesPartialBytes?: number; filesPartialSize?: number; fallback?: string;
}

/** Every object file in a store, with its size. */
function objectFiles(store: string): Array<{ path: string; size: number }> {
  const out: Array<{ path: string; size: number }> = [];
  const root = join(store, 'objects');
  for (const d of readdirSync(root)) {
    const dir = join(root, d);
    if (!statSync(dir).isDirectory()) continue;
    for (const f of readdirSync(dir)) out.push({ path: join(dir, f), size: statSync(join(dir, f)).size });
  }
  return out;
}

describe('zstd:chunked chunk-level reuse', { skip: missing.length ? `missing ${missing.join(', ')}` : false }, () => {
  let work: string;
  let registry: RunningRegistry;
  let src: string;
  let v2Composefs: string;
  let v1Big: Buffer;

  before(async () => {
    work = tempDir('cowshed-chunk-reuse-');
    registry = await startRegistry(join(work, 'registry'));
    src = join(work, 'src-store');
    const root = join(work, 'root');
    mkdirSync(join(root, 'data'), { recursive: true });
    v1Big = pseudoRandomBytes(BIG, 7);
    writeFileSync(join(root, 'data', 'big.bin'), v1Big);
    for (let i = 0; i < 20; i++) writeFileSync(join(root, 'data', `small${i}.txt`), `small file ${i}\n`.repeat(i + 1));
    const tar = (name: string): string => {
      const f = join(work, name);
      execFileSync('tar', ['--format=pax', '--sort=name', '--mtime=@1700000000', '-C', root, '-cf', f, '.']);
      return f;
    };
    await cowshedAsyncOk(src, ['import', `tar:${tar('v1.tar')}`, 'big:v1']);
    // v2: a few bytes edited in the middle of the big file; its size stays.
    const v2Big = Buffer.from(v1Big);
    for (let k = 0; k < 5; k++) v2Big[(BIG >> 1) + k * 3] ^= 0xff;
    writeFileSync(join(root, 'data', 'big.bin'), v2Big);
    await cowshedAsyncOk(src, ['import', `tar:${tar('v2.tar')}`, 'big:v2']);
    for (const t of ['v1', 'v2']) {
      await cowshedAsyncOk(src, ['push', '--tls-verify=false', '--compression-format', 'zstd:chunked', `big:${t}`, `${registry.host}/big:${t}`]);
    }
    v2Composefs = (JSON.parse(await cowshedAsyncOk(src, ['inspect', 'big:v2'])) as { composefs: string }).composefs;
  });

  after(async () => {
    await registry?.stop();
    if (work) removeTree(work);
  });

  /** A store holding v1 (pulled: a cold pull reads the layer whole and learns its chunks). */
  async function storeWithV1(name: string): Promise<string> {
    const store = join(work, name);
    const r = JSON.parse(await cowshedAsyncOk(store, ['pull', '--json', '--tls-verify=false', `${registry.host}/big:v1`])) as { layers: LayerJson[] };
    assert.equal(r.layers[0].method, 'whole');
    return store;
  }

  async function pullV2(store: string): Promise<{ id: string; layer: LayerJson }> {
    const r = JSON.parse(await cowshedAsyncOk(store, ['pull', '--json', '--tls-verify=false', `${registry.host}/big:v2`])) as { id: string; layers: LayerJson[] };
    assert.equal(r.layers.length, 1);
    return { id: r.id, layer: r.layers[0] };
  }

  const composefsOf = async (store: string): Promise<string> =>
    (JSON.parse(await cowshedAsyncOk(store, ['inspect', `${registry.host}/big:v2`])) as { composefs: string }).composefs;

  test('v1 in the store: v2 fetches only the changed chunks of the big file, and mounts as umoci unpacks it', async () => {
    const store = await storeWithV1('store');
    const { layer: l } = await pullV2(store);
    assert.equal(l.method, 'partial');
    assert.equal(l.filesFetched, 1, 'only the big file changed');
    assert.equal(l.filesPartial, 1, 'the big file is fetched in part');
    assert.equal(l.filesPartialSize, BIG);
    assert.ok(l.filesPartialBytes! > 0, 'the edited chunks are fetched');
    // Far less than the file: a few chunks, TOC and tar-split.
    assert.ok(l.filesPartialBytes! < BIG / 20, `${l.filesPartialBytes} bytes of the big file fetched`);
    assert.ok(l.bytesFetched < BIG / 10, `${l.bytesFetched} bytes fetched for a layer holding a ${BIG}-byte file`);
    assert.equal(await composefsOf(store), v2Composefs);

    // The judge: umoci unpack of v2 as the source store exports it (gzip).
    await assertMountsAsUmociUnpacks({ source: src, exported: 'big:v2', store, image: `${registry.host}/big:v2`, work, tag: 'v2' });
  });

  test('the text output says how much of a file fetched in part came over', async () => {
    const store = await storeWithV1('store-text');
    const r = await cowshedAsync(store, ['pull', '--tls-verify=false', `${registry.host}/big:v2`]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /: partial, .* fetched, 1 files fetched \(1 in part: .* of .*\), \d+ found in the store/);
  });

  /**
   * A store whose indexes know v1's big file as a stored object (a partial
   * pull of v2 looked it up), with v2 pulled, removed and collected again.
   * Returns the partial pull's report and the object's path.
   */
  async function storeThatKnowsV1(name: string): Promise<{ store: string; first: LayerJson; object: string }> {
    const store = await storeWithV1(name);
    const { layer: first } = await pullV2(store);
    assert.equal(first.filesPartial, 1);
    await cowshedAsyncOk(store, ['rmi', `${registry.host}/big:v2`]);
    await cowshedAsyncOk(store, ['gc']);
    const objs = objectFiles(store).filter((o) => o.size === BIG);
    assert.equal(objs.length, 1, 'only v1\'s big file is left');
    assert.deepEqual(readFileSync(objs[0].path).subarray(0, 64), v1Big.subarray(0, 64));
    return { store, first, object: objs[0].path };
  }

  test('a stored object damaged in one chunk: that chunk is fetched, the image is still exact', async () => {
    const { store, first, object } = await storeThatKnowsV1('store-damaged');
    // Damage a byte far from the edit (in a chunk v2 shares with v1).
    const fd = openSync(object, 'r+');
    try { writeSync(fd, Buffer.from([v1Big[1000]! ^ 0xff]), 0, 1, 1000); } finally { closeSync(fd); }
    const { layer: l } = await pullV2(store);
    assert.equal(l.method, 'partial');
    assert.equal(l.filesPartial, 1);
    assert.ok(l.filesPartialBytes! > first.filesPartialBytes!, `the damaged chunk is fetched too (${l.filesPartialBytes} bytes, ${first.filesPartialBytes} with the object intact)`);
    assert.equal(await composefsOf(store), v2Composefs);
  });

  test('a stored object gone (removed under the store): the file is fetched whole, the image is still exact', async () => {
    const { store, object } = await storeThatKnowsV1('store-gone');
    rmSync(object);
    const { layer: l } = await pullV2(store);
    assert.ok(!l.filesPartial, 'nothing to reuse');
    assert.ok(l.bytesFetched >= BIG, `${l.bytesFetched} bytes fetched: the big file whole`);
    assert.equal(await composefsOf(store), v2Composefs);
  });
});
