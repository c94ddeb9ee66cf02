// The per-file plan (issue 13): a target pushed as zstd:chunked with a
// delta next to it. When some of the delta's entries are bad (damaged bytes,
// the pack cut short), the pull takes those files as zstd:chunked ranges and
// the rest from the delta: plan 'mixed', bytes well below the layer, the tree
// exactly what umoci unpacks. --no-deltas still pulls only the missing files'
// ranges. Real docker-registry on loopback (no referrers API: tag schema).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { assertMountsAsUmociUnpacks } from '../helpers/umoci-judge.ts';
import { cowshedAsync, cowshedAsyncOk, startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { decodeIndex } from '../../src/delta/format.ts';
import { seriesFixture } from './helpers.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? 'needs root (fixture, mount)' : ['docker-registry', 'umoci'].filter((t) => !have(t)).map((t) => `missing ${t}`)[0] ?? false;

interface Costs { layer: number; deltas: number | null; partial: number | null; mixed: number | null }
interface LayerJson {
  layer: number; digest: string; method: string; plan: string; bytesFetched: number; deltaBytes?: number;
  files?: number; filesFetched?: number; filesFound?: number; filesFromDeltas?: number; costs?: Costs;
}
interface PullJson {
  id: string; bytesFetched: number; plan: string; layers: LayerJson[];
  deltas: { plan: string; deltaBytes: number; layerBytes: number; layers: Array<{ diffId: string; source: string; bytes: number; filesFromDeltas?: number }> } | null;
}

describe('per-file plan: deltas and zstd:chunked ranges', { skip, timeout: 1_200_000 }, () => {
  let work: string;
  let layout: string;
  let reg: RunningRegistry;
  let pub: string;
  let target: string;
  const ref = (v: number): string => `${reg.host}/perfile:v${v}`;
  const blobFile = (digest: string): string => join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7), 'data');
  const json = <T>(digest: string): T => JSON.parse(readFileSync(blobFile(digest), 'utf8')) as T;
  /** A store holding version 1 (imported from the layout, not pulled: objects are what count). */
  const clientAtV1 = async (name: string): Promise<string> => {
    const dir = join(work, name);
    await cowshedAsyncOk(dir, ['import', `oci:${layout}:v1`, 'mine:v1']);
    return dir;
  };
  const pull = async (store: string, ...args: string[]): Promise<PullJson> => {
    const r = await cowshedAsync(store, ['pull', '--tls-verify=false', '--json', ...args, ref(3)]);
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(lastLine(r.stdout)) as PullJson;
    assert.equal(j.id, target);
    return j;
  };

  before(async () => {
    layout = seriesFixture();
    work = tempDir('cowshed-perfile-');
    reg = await startRegistry(join(work, 'registry'));
    pub = join(work, 'publisher');
    for (const v of [1, 3]) await cowshedAsyncOk(pub, ['import', `oci:${layout}:v${v}`, `series:v${v}`]);
    // v1 is only a base for the delta; v3 goes as zstd:chunked with a delta from v1.
    await cowshedAsyncOk(pub, ['push', '-q', '--tls-verify=false', 'series:v1', ref(1)]);
    target = lastLine(await cowshedAsyncOk(pub, ['push', '-q', '--tls-verify=false', '--deltas', '--compression-format', 'zstd:chunked', 'series:v3', ref(3)]));
  });
  after(async () => {
    await reg?.stop();
    if (work) removeTree(work);
  });

  test('--no-deltas: a partial pull of the zstd:chunked layer', async () => {
    const client = await clientAtV1('nodeltas');
    const j = await pull(client, '--no-deltas');
    assert.equal(j.deltas, null);
    assert.equal(j.plan, 'partial');
    const [l] = j.layers;
    assert.equal(l!.method, 'partial');
    assert.equal(l!.plan, 'partial');
    assert.equal(l!.deltaBytes, undefined);
    const layerSize = json<{ layers: Array<{ size: number }> }>(target).layers[0]!.size;
    assert.ok(l!.bytesFetched * 4 < layerSize, `${l!.bytesFetched} of ${layerSize} bytes`);
  });

  test('an intact delta rebuilds the layer: plan deltas, nothing of the layer blob read (text output)', async () => {
    const client = await clientAtV1('deltas');
    const r = await cowshedAsync(client, ['pull', '--tls-verify=false', ref(3)]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(lastLine(r.stdout), target);
    assert.match(r.stderr, /^plan: deltas \(1 delta, /m);
    // The layer's line: the plan, bytes by source (none of the layer blob: its TOC is not even read), the costs compared.
    assert.match(r.stderr, /^layer 1\/1 [0-9a-f]{12}: deltas, [\d.]+ [KM]?B fetched \([\d.]+ [KM]?B deltas, 0 B of the layer\) \[layer [\d.]+ MB, deltas [\d.]+ [KM]?B\]$/m);
  });

  test('bad delta entries: those files come as ranges, the rest from the delta (plan mixed), the tree exact', async (t) => {
    // The delta to v3 (tag schema index), its index and packs as the registry stores them.
    const res = await fetch(`http://${reg.host}/v2/perfile/manifests/sha256-${target.slice(7)}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    assert.equal(res.status, 200);
    const [delta] = ((await res.json()) as { manifests: Array<{ digest: string }> }).manifests;
    const dm = json<{ layers: Array<{ digest: string }> }>(delta!.digest);
    const index = decodeIndex(readFileSync(blobFile(dm.layers[0]!.digest)));
    const objects = index.entries.map((e, i) => ({ e, i })).filter(({ e }) => !e.k.startsWith('split-') && e.len >= 32);
    assert.ok(objects.length >= 20, `${objects.length} object entries`);
    // Damage five entries in the middle of their bytes, and cut the last pack inside its last entry.
    const damaged = new Set<string>();
    for (let n = 1; n <= 5; n++) {
      const { e } = objects[Math.floor((n * objects.length) / 7)]!;
      const file = blobFile(dm.layers[1 + e.p]!.digest);
      const bytes = readFileSync(file);
      bytes[e.off + (e.len >> 1)] ^= 0xff;
      bytes[e.off + (e.len >> 1) + 1] ^= 0x55;
      writeFileSync(file, bytes);
      damaged.add(e.o);
    }
    const lastPack = index.packs.length - 1;
    const last = index.entries.filter((e) => e.p === lastPack).sort((a, b) => b.off - a.off)[0]!;
    assert.ok(!last.k.startsWith('split-'), 'the pack ends with an object entry');
    truncateSync(blobFile(dm.layers[1 + lastPack]!.digest), last.off + (last.len >> 1));
    damaged.add(last.o);

    const client = await clientAtV1('mixed');
    const j = await pull(client);
    assert.equal(j.plan, 'mixed', JSON.stringify(j.deltas));
    assert.equal(j.deltas!.plan, 'mixed');
    assert.equal(j.deltas!.layers[0]!.source, 'mixed');
    const [l] = j.layers;
    t.diagnostic(`${damaged.size} bad entries; total ${j.bytesFetched} bytes; layer ${JSON.stringify(l)}`);
    // The report's shape: the plan taken, bytes per source, files per source, the costs compared.
    assert.equal(l!.method, 'partial');
    assert.equal(l!.plan, 'mixed');
    for (const k of ['bytesFetched', 'deltaBytes', 'files', 'filesFetched', 'filesFound', 'filesFromDeltas'] as const) assert.equal(typeof l![k], 'number', k);
    const c = l!.costs!;
    for (const k of ['layer', 'partial', 'mixed'] as const) assert.equal(typeof c[k], 'number', k);
    // The bad entries' files (and only a few more) were fetched as ranges; the rest came from the delta.
    assert.ok(l!.filesFetched! >= damaged.size && l!.filesFetched! < l!.filesFromDeltas!, `${l!.filesFetched} fetched, ${l!.filesFromDeltas} from the delta, ${damaged.size} bad entries`);
    assert.ok(l!.filesFromDeltas! <= index.entries.length - damaged.size);
    // What was compared, and what it cost: well below the layer and below the ranges alone.
    assert.ok(c.mixed! < c.partial! && c.mixed! < c.layer, JSON.stringify(c));
    assert.equal(c.layer, json<{ layers: Array<{ size: number }> }>(target).layers[0]!.size);
    assert.ok(j.bytesFetched * 4 < c.layer, `${j.bytesFetched} of ${c.layer} bytes fetched`);
    assert.ok(l!.bytesFetched + l!.deltaBytes! <= j.bytesFetched);
    assert.ok(j.deltas!.deltaBytes + l!.bytesFetched <= j.bytesFetched);
    assert.equal(cowshed(client, 'fsck').status, 0);

    // The judge: umoci unpack of v3 as the publisher exports it.
    await assertMountsAsUmociUnpacks({ source: pub, exported: 'series:v3', store: client, image: ref(3), work, tag: 'v3' });
  });

  test('the layer\'s tar-split record in the delta is bad too: files paired by size, still mixed', async (t) => {
    const res = await fetch(`http://${reg.host}/v2/perfile/manifests/sha256-${target.slice(7)}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    const [delta] = ((await res.json()) as { manifests: Array<{ digest: string }> }).manifests;
    const dm = json<{ layers: Array<{ digest: string }> }>(delta!.digest);
    const index = decodeIndex(readFileSync(blobFile(dm.layers[0]!.digest)));
    const split = index.entries[index.layers[0]!.split]!;
    const file = blobFile(dm.layers[1 + split.p]!.digest);
    const bytes = readFileSync(file);
    bytes[split.off + (split.len >> 1)] ^= 0xff;
    writeFileSync(file, bytes);

    const client = await clientAtV1('bysize');
    const j = await pull(client);
    const [l] = j.layers;
    t.diagnostic(`total ${j.bytesFetched} bytes; layer ${JSON.stringify(l)}`);
    assert.equal(j.plan, 'mixed', JSON.stringify(j.deltas));
    assert.equal(l!.plan, 'mixed');
    assert.ok(l!.filesFromDeltas! > 0 && l!.costs!.mixed! < l!.costs!.partial!, JSON.stringify(l));
    assert.ok(j.bytesFetched * 4 < l!.costs!.layer);
    assert.equal(cowshed(client, 'fsck').status, 0);
  });
});
