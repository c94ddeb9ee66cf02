// Partial pulls of zstd:chunked layers against Debian's docker-registry,
// directly (multipart/byteranges) and through a proxy answering range
// requests the other ways registries do. A store holding v1 pulls v2; only
// the files it lacks come over the wire, and the image is exactly the one
// pushed (same manifest id, same composefs image).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, appendFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { cowshedAsync, cowshedAsyncOk, startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { startRangeProxy, type RangeProxy } from './range-proxy.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};

/** ~300 files of mixed sizes (deterministic), the shape of an application layer. */
export function makeTree(root: string): void {
  for (let d = 0; d < 10; d++) {
    mkdirSync(join(root, `dir${d}`), { recursive: true });
    for (let f = 0; f < 30; f++) {
      const i = d * 30 + f;
      const size = i % 29 === 0 ? 300_000 + i * 1000 : i % 7 === 0 ? 20_000 + i * 37 : 200 + ((i * 7919) % 4000);
      writeFileSync(join(root, `dir${d}`, `file${f}.bin`), pseudoRandomBytes(size, i + 1));
    }
  }
  writeFileSync(join(root, 'empty'), '');
}

interface PullJson {
  id: string; bytesFetched: number;
  layers: Array<{ method: string; bytesFetched: number; files?: number; filesFetched?: number; filesFound?: number; fallback?: string }>;
}

describe('zstd:chunked partial pull', { skip: have('docker-registry') ? false : 'docker-registry is not installed' }, () => {
  let work: string;
  let src: string;
  let registry: RunningRegistry;
  let proxy: RangeProxy;
  let v2: { id: string; composefs: string; size: number; layer: string };

  before(async () => {
    work = tempDir('cowshed-partial-');
    src = join(work, 'src-store');
    registry = await startRegistry(join(work, 'registry'));
    proxy = await startRangeProxy(registry.port);
    const root = join(work, 'root');
    makeTree(root);
    const tar = (name: string): string => {
      const f = join(work, name);
      execFileSync('tar', ['--format=pax', '--sort=name', '--mtime=@1700000000', '-C', root, '-cf', f, '.']);
      return f;
    };
    await cowshedAsyncOk(src, ['import', `tar:${tar('v1.tar')}`, 'app:v1']);
    // v2: small edits to a few files (1%), one new file.
    appendFileSync(join(root, 'dir1', 'file3.bin'), 'edited');
    const f = readFileSync(join(root, 'dir4', 'file2.bin'));
    f[10] ^= 1;
    writeFileSync(join(root, 'dir4', 'file2.bin'), f);
    writeFileSync(join(root, 'dir9', 'new.txt'), 'new in v2\n');
    await cowshedAsyncOk(src, ['import', `tar:${tar('v2.tar')}`, 'app:v2']);
    for (const t of ['v1', 'v2']) {
      await cowshedAsyncOk(src, ['push', '--tls-verify=false', '--compression-format', 'zstd:chunked', `app:${t}`, `${registry.host}/app:${t}`]);
    }
    const inspect = JSON.parse(await cowshedAsyncOk(src, ['inspect', 'app:v2'])) as { composefs: string };
    const manifest = await (await fetch(`http://${registry.host}/v2/app/manifests/v2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { layers: Array<{ size: number; digest: string }> };
    const id = `sha256:${(await (await fetch(`http://${registry.host}/v2/app/manifests/v2`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).headers.get('docker-content-digest'))!.slice(7)}`;
    v2 = { id, composefs: inspect.composefs, size: manifest.layers[0].size, layer: manifest.layers[0].digest };
  });

  after(async () => {
    await proxy?.stop();
    await registry?.stop();
    if (work) removeTree(work);
  });

  /** A store holding v1 (pulled), pulling v2 through the proxy; returns the pull's --json. */
  let n = 0;
  async function pullV2(mode: RangeProxy['mode'], extra: { faults?: number } = {}): Promise<{ r: PullJson; stderr: string; store: string; from: number }> {
    const store = join(work, `store-${n++}`);
    await cowshedAsyncOk(store, ['pull', '-q', '--tls-verify=false', `${registry.host}/app:v1`]);
    proxy.mode = mode;
    proxy.faults = extra.faults ?? 1;
    const from = proxy.requests.length;
    const out = await cowshedAsync(store, ['pull', '--json', '--tls-verify=false', `${proxy.host}/app:v2`]);
    proxy.mode = 'pass';
    assert.equal(out.status, 0, out.stderr);
    const r = JSON.parse(out.stdout) as PullJson;
    assert.equal(r.id, v2.id);
    const inspect = JSON.parse(await cowshedAsyncOk(store, ['inspect', `${proxy.host}/app:v2`])) as { composefs: string };
    assert.equal(inspect.composefs, v2.composefs, 'exactly the tree pushed');
    const fsck = await cowshedAsync(store, ['fsck']);
    assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
    return { r, stderr: out.stderr, store, from };
  }

  test('multipart/byteranges from docker-registry: only the changed files are fetched', async () => {
    const { r, from } = await pullV2('pass');
    const [l] = r.layers;
    assert.equal(l.method, 'partial', JSON.stringify(l));
    assert.equal(l.filesFetched, 3, 'two edited files and a new one');
    assert.equal(l.filesFound, l.files! - 3);
    assert.ok(l.bytesFetched < v2.size * 0.1, `${l.bytesFetched} of ${v2.size} bytes`);
    const ranged = proxy.requests.slice(from).filter((q) => q.range);
    assert.equal(ranged.length, 2, 'TOC + tar-split in one request, the files in another');
    assert.ok(ranged.every((q) => q.status === 206));
    assert.ok(!proxy.requests.slice(from).some((q) => q.url.endsWith(v2.layer) && !q.range), 'the layer is never fetched whole');
  });

  test('a registry that serves only the first range: the rest is asked for again', async () => {
    const { r, from } = await pullV2('first-only');
    assert.equal(r.layers[0].method, 'partial');
    assert.ok(proxy.requests.slice(from).filter((q) => q.range).length >= 3);
  });

  test('a registry that answers a range request with the whole blob: used, not fetched twice', async () => {
    const { r, from } = await pullV2('whole');
    assert.equal(r.layers[0].method, 'whole');
    const blobGets = proxy.requests.slice(from).filter((q) => q.method === 'GET' && q.url.includes('/blobs/sha256:'));
    assert.equal(blobGets.filter((q) => q.range).length, 1, 'one range request, answered whole');
    assert.equal(blobGets.filter((q) => !q.range).length, 1, 'and the config');
    assert.ok(r.layers[0].bytesFetched >= v2.size);
  });

  test('416 above 2 ranges: the batch is halved until it fits', async () => {
    const { r, from } = await pullV2({ maxRanges: 1, status: 416 });
    assert.equal(r.layers[0].method, 'partial');
    const ranged = proxy.requests.slice(from).filter((q) => q.range);
    assert.ok(ranged.some((q) => q.status === 416));
    assert.ok(ranged.filter((q) => q.status === 206).every((q) => q.ranges === 1));
  });

  test('400 for every range request: one line, then a whole-layer pull', async () => {
    const { r, stderr } = await pullV2('refuse-all');
    assert.equal(r.layers[0].method, 'whole');
    assert.match(r.layers[0].fallback ?? '', /refuses range requests \(HTTP 400\)/);
    assert.equal(stderr, '', '--json keeps stderr clean');
  });

  test('a connection dropped in the middle of a part: resumed', async () => {
    const { r, from } = await pullV2('drop-mid', { faults: 2 });
    assert.equal(r.layers[0].method, 'partial');
    assert.ok(proxy.requests.slice(from).filter((q) => q.range).length >= 3);
  });

  test('wrong bytes in a range answer: named in one line, nothing kept, the layer pulled whole', async () => {
    const store = join(work, `store-${n++}`);
    await cowshedAsyncOk(store, ['pull', '-q', '--tls-verify=false', `${registry.host}/app:v1`]);
    proxy.mode = 'corrupt';
    proxy.faults = 2; // the TOC request, and the files'
    const out = await cowshedAsync(store, ['pull', '--tls-verify=false', `${proxy.host}/app:v2`]);
    proxy.mode = 'pass';
    assert.equal(out.status, 0, out.stderr);
    const notice = out.stderr.split('\n').filter((l) => l.startsWith('cowshed: '));
    assert.equal(notice.length, 1, out.stderr);
    assert.match(notice[0], /layer 1 \(sha256:[0-9a-f]{64}\): .*(digest|decode).*; pulling the whole layer instead/);
    assert.match(out.stderr, /layer 1\/1 [0-9a-f]{12}: whole/);
    const inspect = JSON.parse(await cowshedAsyncOk(store, ['inspect', `${proxy.host}/app:v2`])) as { composefs: string };
    assert.equal(inspect.composefs, v2.composefs);
  });

  test('the older format, as Debian 12\'s skopeo writes it (io.containers.zstd-chunked.*, 40-byte GnUlInUx footer): pulled whole and verified', { skip: have('skopeo') ? false : 'skopeo is not installed' }, async () => {
    // Older containers/storage drops the bytes after the end-of-archive
    // blocks: from a tar without record padding (-b 1) its blob is exact.
    const exact = join(work, 'exact.tar');
    execFileSync('tar', ['--format=pax', '-b', '1', '-C', join(work, 'root'), '-cf', exact, '.']);
    await cowshedAsyncOk(src, ['import', `tar:${exact}`, 'exact:v1']);
    const skopeoOld = async (image: string, repo: string): Promise<Buffer> => {
      const layout = join(work, `old-layout-${repo}`);
      await cowshedAsyncOk(src, ['export', image, `oci:${layout}:v1`]);
      execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-compress', '--dest-compress-format', 'zstd:chunked', `oci:${layout}:v1`, `docker://${registry.host}/${repo}:v1`], { stdio: ['ignore', 'ignore', 'pipe'] });
      const manifest = await (await fetch(`http://${registry.host}/v2/${repo}/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { layers: Array<{ digest: string; annotations?: Record<string, string> }> };
      assert.ok(manifest.layers[0].annotations?.['io.containers.zstd-chunked.manifest-checksum'], 'skopeo wrote the older annotations');
      return Buffer.from(await (await fetch(`http://${registry.host}/v2/${repo}/blobs/${manifest.layers[0].digest}`)).arrayBuffer());
    };
    const blob = await skopeoOld('exact:v1', 'old');
    assert.equal(blob.subarray(blob.length - 8).toString('latin1'), 'GnUlInUx');
    assert.equal(blob.readUInt32LE(blob.length - 44), 40, 'a 40-byte footer');
    const store = join(work, `store-${n++}`);
    const r = JSON.parse(await cowshedAsyncOk(store, ['pull', '--json', '--tls-verify=false', `${proxy.host}/old:v1`])) as PullJson;
    assert.equal(r.layers[0].method, 'whole');
    const want = JSON.parse(await cowshedAsyncOk(src, ['inspect', 'exact:v1'])) as { composefs: string };
    const got = JSON.parse(await cowshedAsyncOk(store, ['inspect', `${proxy.host}/old:v1`])) as { composefs: string };
    assert.equal(got.composefs, want.composefs);
    // From a tar with record padding, that blob no longer gives the config's
    // diff ID: refused in one line, nothing stored.
    await skopeoOld('app:v1', 'old-padded');
    const bad = await cowshedAsync(store, ['pull', '-q', '--tls-verify=false', `${proxy.host}/old-padded:v1`]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^cowshed: .*old-padded:v1: layer 1 \(sha256:[0-9a-f]{64}\) diff ID: digest mismatch/);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    const images = JSON.parse(await cowshedAsyncOk(store, ['images', '--json'])) as Array<{ names: string[] }>;
    assert.equal(images.length, 1);
  });

  test('one way in: a zstd:chunked OCI layout imported into a store holding v1 reads only the files it lacks, as the same image', async () => {
    const layout = join(work, 'chunked-layout');
    await cowshedAsyncOk(src, ['export', '--compression-format', 'zstd:chunked', 'app:v2', `oci:${layout}:v2`]);
    const store = join(work, `store-${n++}`);
    await cowshedAsyncOk(store, ['pull', '-q', '--tls-verify=false', `${registry.host}/app:v1`]);
    // The layout's layer blob is read by range: the files the store has are never decompressed.
    const { Store } = await import('../../src/store/store.ts');
    const s = await Store.open(store);
    try {
      const r = await s.importImage(`oci:${layout}:v2`, 'from-layout:v2');
      assert.equal(r.layers[0]?.method, 'partial', JSON.stringify(r.layers));
      assert.equal(r.layers[0]?.filesFetched, 3);
      assert.equal(r.composefs, v2.composefs);
      // tar: and dir: come in the same way: one layer, made on the fly, no ranges, so read whole.
      // (v1.tar's layer is in this store already: a tar of its own.)
      const tarFile = join(work, 'local.tar');
      execFileSync('tar', ['--format=pax', '--sort=name', '--mtime=@1700000001', '-C', join(work, 'root'), '-cf', tarFile, '.']);
      const t = await s.importImage(`tar:${tarFile}`, 'from-tar:v3');
      assert.deepEqual(t.layers.map((l) => [l.method, l.bytesFetched]), [['whole', statSync(tarFile).size]]);
      const d = await s.importImage(`dir:${join(work, 'root')}`, 'from-dir:v2');
      assert.equal(d.layers.length, 1);
      assert.equal(d.layers[0]?.method, 'whole');
      assert.ok(d.layers[0]!.bytesFetched > 0);
    } finally {
      s.close();
    }
  });
});
