// A faulty network between cowshed and the registry: a proxy that answers
// 500, drops connections and ends bodies halfway, and flips a byte. Pulls
// get through by retrying and resuming with Range; a damaged byte never
// reaches the store.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, removeTree, debianFixture } from '../helpers/cli.ts';
import { Store } from '../../src/store/store.ts';
import { fsck } from '../../src/store/fsck.ts';
import { pullImage } from '../../src/registry/pull.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { startProxy, startRegistryWithDebian, type Fault, type RunningProxy, type RunningRegistry } from './servers.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const missing = ['docker-registry', 'skopeo'].filter((t) => !have(t));
const FAST = { maxAttempts: 4, retryDelayMs: 20, idleTimeoutMs: 5000 };

describe('pull through a faulty network', { skip: missing.length ? `missing ${missing.join(', ')}` : false }, () => {
  let work: string;
  let registry: RunningRegistry;
  let proxy: RunningProxy;
  let layerDigest: string;
  let stores = 0;

  before(async () => {
    const fx = debianFixture();
    work = tempDir('cowshed-faults-');
    registry = await startRegistryWithDebian(join(work, 'registry'), fx.layout, ['v1']);
    proxy = await startProxy(registry.port);
    const index = JSON.parse(execFileSync('cat', [join(fx.layout, 'index.json')], { encoding: 'utf8' })) as { manifests: Array<{ digest: string }> };
    const manifest = JSON.parse(execFileSync('cat', [join(fx.layout, 'blobs', 'sha256', index.manifests[0].digest.slice(7))], { encoding: 'utf8' })) as { layers: Array<{ digest: string }> };
    layerDigest = manifest.layers[0].digest;
  });

  after(async () => {
    await proxy?.stop();
    await registry?.stop();
    if (work) removeTree(work);
  });

  /** Faults for GETs of the layer blob, in order; later GETs pass. */
  function faultsForLayer(faults: Fault[]): void {
    let n = 0;
    proxy.fault = (req) => (req.method === 'GET' && req.url?.endsWith(layerDigest) ? faults[n++] ?? 'none' : 'none');
  }

  async function withStore<T>(fn: (s: Store) => Promise<T>): Promise<T> {
    const s = await Store.open(join(work, `store-${++stores}`));
    try { return await fn(s); } finally { s.close(); }
  }

  async function assertClean(s: Store): Promise<void> {
    const r = await fsck(s);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(readdirSync(s.paths.tmp), [], 'nothing left staged');
  }

  test('500s, a dropped connection and a truncated body: retried and resumed with Range', async () => {
    faultsForLayer(['error500', 'error500', 'drop', 'truncate']);
    const from = proxy.requests.length;
    await withStore(async (s) => {
      const r = await pullImage(s, `${proxy.host}/debian:v1`, { tlsVerify: false, client: FAST });
      assert.equal(r.reused, false);
      assert.equal(r.resumed, 2, 'resumed twice');
      const gets = proxy.requests.slice(from).filter((q) => q.url.endsWith(layerDigest));
      assert.deepEqual(gets.map((q) => q.fault), ['error500', 'error500', 'drop', 'truncate', 'none']);
      assert.equal(gets[3].range !== undefined, true, 'the request after the drop asks for a range');
      assert.match(gets[4].range ?? '', /^bytes=\d+-$/);
      assert.equal(gets[4].status, 206);
      assert.deepEqual(s.images().map((i) => i.names), [[`${proxy.host}/debian:v1`]]);
      await assertClean(s);
    });
  });

  test('a flipped byte is refused; the pull starts again and the store stays clean', async () => {
    faultsForLayer(['corrupt']);
    await withStore(async (s) => {
      const r = await pullImage(s, `${proxy.host}/debian:v1`, { tlsVerify: false, client: FAST });
      assert.equal(r.id.startsWith('sha256:'), true);
      await assertClean(s);
    });
  });

  test('a byte flipped every time fails with EDIGEST and leaves nothing in the store', async () => {
    faultsForLayer(['corrupt', 'corrupt', 'corrupt', 'corrupt']);
    await withStore(async (s) => {
      await assert.rejects(pullImage(s, `${proxy.host}/debian:v1`, { tlsVerify: false, client: FAST }), (e: unknown) => {
        assert.ok(isCowshedError(e), String(e));
        assert.equal(e.code, 'EDIGEST');
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
      assert.deepEqual(s.images(), []);
      await assertClean(s);
    });
  });

  test('a registry that keeps failing is given up on, with a bounded number of tries', async () => {
    proxy.fault = () => 'error500';
    const from = proxy.requests.length;
    const t0 = Date.now();
    await withStore(async (s) => {
      await assert.rejects(pullImage(s, `${proxy.host}/debian:v1`, { tlsVerify: false, client: FAST }), /HTTP 500/);
    });
    assert.equal(proxy.requests.length - from, FAST.maxAttempts);
    assert.ok(Date.now() - t0 < 5000);
    proxy.fault = () => 'none';
  });
});
