// Done-when of the partial-pull issue: a store holding version 1 of a
// rebuilt image (one full layer) pulls version 2 (one full layer, ~1% of the
// files changed by small edits) fetching at most 10% of the v2 layer's
// bytes, and the mounted tree is exactly what umoci unpack gives.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { debianFixture, removeTree, tempDir } from '../helpers/cli.ts';
import { assertMountsAsUmociUnpacks } from '../helpers/umoci-judge.ts';
import { rebuiltVersions } from '../helpers/rebuilt-image.ts';
import { cowshedAsyncOk, startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { slowOnly } from '../helpers/slow.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const missing = ['docker-registry', 'umoci'].filter((t) => !have(t));

// A Debian-sized case under npm run test:slow (and npm run bench zstd-chunked); partial.test.ts covers
// the same path in npm test on a smaller image.
describe('update pull of a rebuilt image (zstd:chunked)', { skip: missing.length ? `missing ${missing.join(', ')}` : slowOnly }, () => {
  let work: string;
  let registry: RunningRegistry;
  before(async () => {
    work = tempDir('cowshed-update-');
    registry = await startRegistry(join(work, 'registry'));
  });
  after(async () => {
    await registry?.stop();
    if (work) removeTree(work);
  });

  test('v1 in the store: v2 fetches at most 10% of its layer, and mounts as umoci unpacks it', async () => {
    const fx = debianFixture();
    const rb = rebuiltVersions(fx.rootfsTar, work);
    assert.ok(rb.changed.length >= rb.files / 200 && rb.changed.length <= rb.files / 50, `${rb.changed.length} of ${rb.files} files changed`);
    const src = join(work, 'src');
    await cowshedAsyncOk(src, ['import', `tar:${rb.v2}`, 'rebuilt:v2']);
    await cowshedAsyncOk(src, ['push', '--tls-verify=false', '--compression-format', 'zstd:chunked', 'rebuilt:v2', `${registry.host}/rebuilt:v2`]);
    const manifest = await (await fetch(`http://${registry.host}/v2/rebuilt/manifests/v2`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as { layers: Array<{ size: number }> };
    assert.equal(manifest.layers.length, 1);
    const layerSize = manifest.layers[0].size;

    // The store holds v1 (how it got there does not matter: objects are looked up by content); pulling
    // it from the registry as well would only add a whole zstd:chunked push and pull to the suite's time.
    const store = join(work, 'store');
    await cowshedAsyncOk(store, ['import', `tar:${rb.v1}`, 'rebuilt:v1']);
    const r = JSON.parse(await cowshedAsyncOk(store, ['pull', '--json', '--tls-verify=false', `${registry.host}/rebuilt:v2`])) as {
      bytesFetched: number; layers: Array<{ method: string; bytesFetched: number; filesFetched: number; filesFound: number }>;
    };
    const [l] = r.layers;
    assert.equal(l.method, 'partial');
    assert.ok(l.bytesFetched <= layerSize * 0.1, `fetched ${l.bytesFetched} of ${layerSize} bytes`);
    // Edited files that were hardlinks of one another are fetched once; none is found in the store.
    assert.ok(l.filesFetched <= rb.changed.length && l.filesFetched >= rb.changed.length * 0.9, `${l.filesFetched} fetched, ${rb.changed.length} changed`);

    // The judge: umoci unpack of v2 as the source store exports it (gzip, from its own import).
    await assertMountsAsUmociUnpacks({ source: src, exported: 'rebuilt:v2', store, image: `${registry.host}/rebuilt:v2`, work, tag: 'v2' });
  });
});
