// Deltas next to the image in a registry: Debian's docker-registry 2.8 (no
// referrers API, so the referrers tag schema `sha256-<hex>` index is used).
// push --deltas publishes them; pull finds them, takes the plan by deltas and
// fetches a few tens of kB instead of the layer; two pulls of the same delta
// at once both finish; a corrupt or missing delta falls back to the layer;
// --no-deltas fetches the layer.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { cowshedAsync, startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { seriesFixture } from './helpers.ts';

const isRoot = process.getuid?.() === 0;

interface PullJson { id: string; bytesFetched: number; plan: string; deltas: { plan: string; referrers?: string; deltaBytes: number; layerBytes: number; reason?: string } | null }

describe('deltas in a registry (push --deltas, pull)', { skip: isRoot ? false : 'needs root (fixture)', timeout: 1_800_000 }, () => {
  let work: string;
  let layout: string;
  let reg: RunningRegistry;
  let pub: string;
  const pushed = new Map<number, string>();
  const ref = (v: number): string => `${reg.host}/series:v${v}`;
  const blobFile = (digest: string): string => join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7), 'data');
  /** Compressed bytes of the layers as pushed (push compresses again: not the fixture's sizes). */
  const layerBytes = (v: number): number => (JSON.parse(readFileSync(blobFile(pushed.get(v)!), 'utf8')) as { layers: Array<{ size: number }> }).layers.reduce((a, l) => a + l.size, 0);
  const deltaTo = async (v: number): Promise<Array<{ digest: string; from: string }>> => {
    const digest = pushed.get(v)!;
    const res = await fetch(`http://${reg.host}/v2/series/manifests/sha256-${digest.slice(7)}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
    assert.equal(res.status, 200, 'the tag-schema index exists');
    const ix = await res.json() as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
    return ix.manifests.map((m) => ({ digest: m.digest, from: m.annotations['io.github.cowshed.delta.from']! }));
  };
  /** A delta's packs: the registry keeps manifests as blobs too. */
  const packsOf = async (deltaDigest: string): Promise<string[]> =>
    (JSON.parse(readFileSync(blobFile(deltaDigest), 'utf8')) as { layers: Array<{ digest: string }> }).layers.slice(1).map((l) => l.digest);

  before(async () => {
    layout = seriesFixture();
    work = tempDir('cowshed-delta-reg-');
    reg = await startRegistry(join(work, 'registry'));
    pub = join(work, 'publisher');
    for (const v of [1, 2, 3]) cowshedOk(pub, 'import', `oci:${layout}:v${v}`, `series:v${v}`);
    for (const v of [1, 2, 3]) {
      const r = cowshed(pub, 'push', '--tls-verify=false', '--deltas', `series:v${v}`, ref(v));
      assert.equal(r.status, 0, r.stderr);
      pushed.set(v, lastLine(r.stdout));
      if (v > 1) assert.match(r.stderr, /delta from v1: .*referrers tag schema/);
    }
  });
  after(async () => {
    await reg?.stop();
    if (work) removeTree(work);
  });

  test('push --deltas on a registry without the referrers API: log-distance deltas in the sha256-<hex> index', async () => {
    assert.deepEqual((await deltaTo(2)).map((d) => d.from), [pushed.get(1)]);
    assert.deepEqual((await deltaTo(3)).map((d) => d.from).sort(), [pushed.get(1), pushed.get(2)].sort(), 'v3: distances 1 and 2');
    const tags = (await (await fetch(`http://${reg.host}/v2/series/tags/list`)).json()) as { tags: string[] };
    assert.ok(tags.tags.includes(`sha256-${pushed.get(3)!.slice(7)}`));
  });

  test('pull by deltas, twice at once into one store: a few tens of kB instead of the layer, the same image', async () => {
    const client = join(work, 'client');
    cowshedOk(client, 'import', `oci:${layout}:v1`, 'mine:v1'); // held under another name and id: objects are what count
    const [a, b] = await Promise.all([1, 2].map(() => cowshedAsync(client, ['pull', '--tls-verify=false', '--json', ref(3)])));
    for (const r of [a!, b!]) {
      assert.equal(r.status, 0, r.stderr);
      const j = JSON.parse(lastLine(r.stdout)) as PullJson;
      assert.equal(j.id, pushed.get(3));
      if (j.plan === 'deltas') {
        assert.equal(j.deltas!.referrers, 'tag-schema');
        assert.ok(j.bytesFetched * 100 < layerBytes(3), `${j.bytesFetched} bytes fetched`);
      } else {
        // The second pull may find the image already there (the first one finished first).
        assert.equal(j.deltas?.reason, 'every layer is in the store', JSON.stringify(j));
      }
    }
    const plans = [a!, b!].map((r) => (JSON.parse(lastLine(r.stdout)) as PullJson).plan);
    assert.ok(plans.includes('deltas'), plans.join(' '));
    const fsck = cowshed(client, 'fsck');
    assert.equal(fsck.status, 0, fsck.stdout);
    const mine = JSON.parse(cowshedOk(client, 'inspect', ref(3))) as { layers: Array<{ diffId: string }> };
    const theirs = JSON.parse(cowshedOk(pub, 'inspect', 'series:v3')) as { layers: Array<{ diffId: string }> };
    assert.deepEqual(mine.layers.map((l) => l.diffId), theirs.layers.map((l) => l.diffId));
  });

  test('--no-deltas fetches the layer; a corrupt or missing delta falls back to it', async () => {
    const client = join(work, 'client2');
    cowshedOk(client, 'import', `oci:${layout}:v1`, 'mine:v1');
    const plain = JSON.parse(lastLine(cowshedOk(client, 'pull', '--tls-verify=false', '--no-deltas', '--json', ref(2)))) as PullJson;
    assert.equal(plain.id, pushed.get(2));
    assert.equal(plain.deltas, null);
    assert.ok(plain.bytesFetched >= layerBytes(2));

    // v3's deltas: one pack damaged in the middle, the other gone.
    const [d1, d2] = await deltaTo(3);
    const damaged = blobFile((await packsOf(d1!.digest))[0]!);
    const bytes = readFileSync(damaged);
    for (let i = 0; i < bytes.length; i += 97) bytes[i] ^= 0x5a;
    writeFileSync(damaged, bytes);
    rmSync(blobFile((await packsOf(d2!.digest))[0]!));
    const r = await cowshedAsync(client, ['pull', '--tls-verify=false', '--json', ref(3)]);
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(lastLine(r.stdout)) as PullJson;
    assert.equal(j.id, pushed.get(3));
    assert.equal(j.plan, 'layers', JSON.stringify(j.deltas));
    assert.ok(j.bytesFetched >= layerBytes(3));
    assert.equal(cowshed(client, 'fsck').status, 0);
  });
});
