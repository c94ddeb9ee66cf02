// Pull and push against Debian's docker-registry on loopback (htpasswd
// auth), judged by skopeo, umoci and podman. A recording proxy in front of
// the registry counts the blobs cowshed fetches.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, removeTree, debianFixture, lastLine, layoutManifest } from '../helpers/cli.ts';
import { listTree, compareTrees, type CompareOptions } from '../helpers/tree-listing.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { OCI_INDEX, OCI_MANIFEST } from '../../src/oci/media-types.ts';
import { cowshedAsync, cowshedAsyncOk, startProxy, startRegistry, type RunningProxy, type RunningRegistry } from './servers.ts';

const execFileP = promisify(execFile);

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const tools = ['docker-registry', 'htpasswd', 'skopeo', 'umoci', 'podman'];
const missing = tools.filter((t) => !have(t));

const USER = 'alice';
const PASS = 'wonderland';

async function assertSameTree(a: string, b: string, opts: CompareOptions = {}): Promise<void> {
  const diffs = compareTrees(await listTree(a, { nsec: true }), await listTree(b, { nsec: true }), opts);
  assert.deepEqual(diffs, [], `trees differ:\n${diffs.join('\n')}`);
}

function umociUnpack(image: string, into: string): string {
  execFileSync('umoci', ['unpack', '--image', image, into], { stdio: 'ignore' });
  return join(into, 'rootfs');
}

describe('registry pull and push', { skip: missing.length ? `missing ${missing.join(', ')}` : false }, () => {
  let work: string;
  let store: string;
  let fx: { layout: string };
  let registry: RunningRegistry;
  let proxy: RunningProxy;
  let env: Record<string, string>;
  let unpackedV1: string;
  const blobGets = (from = 0): string[] => proxy.requests.slice(from).filter((r) => r.method === 'GET' && r.url.includes('/blobs/sha256:')).map((r) => r.url);
  const cli = (...args: string[]) => cowshedAsyncOk(store, args, env);

  before(async () => {
    fx = debianFixture();
    work = tempDir('cowshed-registry-');
    store = join(work, 'store');
    env = { REGISTRY_AUTH_FILE: join(work, 'auth.json'), XDG_RUNTIME_DIR: join(work, 'run'), HOME: work };
    registry = await startRegistry(join(work, 'registry'), { htpasswd: { user: USER, password: PASS } });
    proxy = await startProxy(registry.port);
    for (const tag of ['v1', 'v2']) {
      execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `${USER}:${PASS}`,
        `oci:${fx.layout}:${tag}`, `docker://${registry.host}/debian:${tag}`], { stdio: 'ignore' });
    }
    unpackedV1 = umociUnpack(`${fx.layout}:v1`, join(work, 'umoci-v1'));
  });

  after(async () => {
    await proxy?.stop();
    await registry?.stop();
    if (work) removeTree(work);
  });

  test('a wrong password fails with one line; login checks and stores credentials, logout removes them', async () => {
    const bad = await cowshedAsync(store, ['pull', '--tls-verify=false', '--creds', `${USER}:nope`, `${proxy.host}/debian:v1`], env);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^cowshed: .*authentication failed.*wrong username or password/);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);

    const noCreds = await cowshedAsync(store, ['pull', '--tls-verify=false', `${proxy.host}/debian:v1`], env);
    assert.match(noCreds.stderr, /^cowshed: .*requires authentication.*cowshed login/);

    const badLogin = await cowshedAsync(store, ['login', '--tls-verify=false', '-u', USER, '-p', 'nope', proxy.host], env);
    assert.equal(badLogin.status, 1);
    assert.equal(existsSync(env.REGISTRY_AUTH_FILE), false, 'nothing written for a failed login');

    await cli('login', '--tls-verify=false', '-u', USER, '-p', PASS, proxy.host);
    const file = JSON.parse(readFileSync(env.REGISTRY_AUTH_FILE, 'utf8')) as { auths: Record<string, { auth: string }> };
    assert.equal(Buffer.from(file.auths[proxy.host].auth, 'base64').toString(), `${USER}:${PASS}`);
    // skopeo (and podman) read the same file.
    await execFileP('skopeo', ['inspect', '--tls-verify=false', '--authfile', env.REGISTRY_AUTH_FILE, `docker://${proxy.host}/debian:v1`]);
    await cli('logout', proxy.host);
    assert.deepEqual((JSON.parse(readFileSync(env.REGISTRY_AUTH_FILE, 'utf8')) as { auths: object }).auths, {});
    await cli('login', '--tls-verify=false', '-u', USER, '-p', PASS, proxy.host);
  });

  test('pull of an image pushed by skopeo gives exactly the tree umoci unpacks', async () => {
    const id = lastLine(await cli('pull', '-q', '--tls-verify=false', `${proxy.host}/debian:v1`));
    assert.equal(id, `sha256:${JSON.parse(readFileSync(join(fx.layout, 'index.json'), 'utf8')).manifests[0].digest.slice(7)}`);
    const images = JSON.parse(await cli('images', '--json')) as Array<{ names: string[] }>;
    assert.deepEqual(images[0].names, [`${proxy.host}/debian:v1`]);
    const mnt = lastLine(await cli('mount', `${proxy.host}/debian:v1`));
    try {
      await assertSameTree(mnt, unpackedV1);
    } finally {
      await cli('umount', `${proxy.host}/debian:v1`);
    }
  });

  test('re-pull after rmi fetches no blob at all', async () => {
    await cli('rmi', `${proxy.host}/debian:v1`);
    const from = proxy.requests.length;
    const out = await cowshedAsync(store, ['pull', '--tls-verify=false', `${proxy.host}/debian:v1`], env);
    assert.equal(out.status, 0, out.stderr);
    assert.deepEqual(blobGets(from), []);
    assert.match(out.stderr, /already built, no layer fetched/);
  });

  test('pull of v2 with v1 present fetches only the new layer', async () => {
    // The fixture is built from the live mirror: its digests are read from the layout, never written here.
    const manifest = layoutManifest(fx.layout, 'v2');
    const from = proxy.requests.length;
    await cli('pull', '-q', '--tls-verify=false', `${proxy.host}/debian:v2`);
    const gets = blobGets(from);
    assert.deepEqual(gets.sort(), [manifest.config.digest, manifest.layers[1]!.digest].map((d) => `/v2/debian/blobs/${d}`).sort());
    const mnt = lastLine(await cli('mount', `${proxy.host}/debian:v2`));
    try {
      // See tree-listing.ts: umoci and erofs keep lower-layer mtimes for parents the v2 layer omits.
      await assertSameTree(mnt, umociUnpack(`${fx.layout}:v2`, join(work, 'umoci-v2')));
    } finally {
      await cli('umount', `${proxy.host}/debian:v2`);
    }
    const fsck = await cowshedAsync(store, ['fsck'], env);
    assert.equal(fsck.status, 0, fsck.stdout);
  });

  test('an index: linux/amd64 by default, --platform picks another, an absent platform is named', async () => {
    const index = JSON.parse(readFileSync(join(fx.layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; size: number }> };
    const [v1, v2] = index.manifests;
    const client = new RegistryClient(registry.host, registry.host, { tlsVerify: false, credentials: { username: USER, password: PASS } });
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_INDEX, manifests: [
        { mediaType: OCI_MANIFEST, digest: v2.digest, size: v2.size, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: OCI_MANIFEST, digest: v1.digest, size: v1.size, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    }));
    await client.putManifest('debian', 'multi', body, OCI_INDEX);
    const from = proxy.requests.length;
    assert.equal(lastLine(await cli('pull', '-q', '--tls-verify=false', `${proxy.host}/debian:multi`)), v1.digest);
    assert.equal(lastLine(await cli('pull', '-q', '--tls-verify=false', '--platform', 'linux/arm64', `${proxy.host}/debian:multi`)), v2.digest);
    assert.deepEqual(blobGets(from), [], 'both images were built before: no blob fetched');
    const r = await cowshedAsync(store, ['pull', '--tls-verify=false', '--platform', 'linux/s390x', `${proxy.host}/debian:multi`], env);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^cowshed: .*no image for platform linux\/s390x \(available: linux\/arm64\/v8, linux\/amd64\)/);
    await cli('rmi', `${proxy.host}/debian:multi`);
  });

  test('push by cowshed reads back with skopeo + umoci and with podman as the same tree', async () => {
    // A new repository: the layers are mounted from debian, not uploaded.
    const out = await cowshedAsync(store, ['push', '--tls-verify=false', `${proxy.host}/debian:v1`, `${proxy.host}/copy:v1`], env);
    assert.equal(out.status, 0, out.stderr);
    assert.match(out.stderr, /mounted from another repository/);
    // zstd forces a fresh upload of every layer: the rebuilt tars are what is checked.
    const from = proxy.requests.length;
    const z = await cowshedAsync(store, ['push', '--tls-verify=false', '--compression-format', 'zstd', `${proxy.host}/debian:v1`, `${proxy.host}/fresh:v1`], env);
    assert.equal(z.status, 0, z.stderr);
    assert.match(z.stderr, /uploaded/);
    // The 80 MB layer goes up in 8 MiB PATCH chunks; the config in one PUT.
    const uploads = proxy.requests.slice(from).filter((r) => r.method === 'PATCH' || r.method === 'PUT');
    assert.ok(uploads.filter((r) => r.method === 'PATCH').length >= 5, JSON.stringify(uploads.map((r) => r.method)));
    assert.ok(uploads.every((r) => r.status === 201 || r.status === 202));
    // Without the record of pushed blobs, the gzip layers are compressed and uploaded again.
    rmSync(join(store, 'registry-blobs.json'));
    const g = await cowshedAsync(store, ['push', '--tls-verify=false', '--compression-format', 'gzip', `${proxy.host}/debian:v2`, `${proxy.host}/fresh-gz:v2`], env);
    assert.equal(g.status, 0, g.stderr);
    assert.equal(g.stderr.match(/uploaded/g)?.length, 2, g.stderr);

    // skopeo copies the gzip push to a layout (umoci cannot read zstd), umoci unpacks it.
    const layout = join(work, 'readback');
    execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', `${USER}:${PASS}`, `docker://${registry.host}/fresh-gz:v2`, `oci:${layout}:v2`], { stdio: 'ignore' });
    await assertSameTree(umociUnpack(`${layout}:v2`, join(work, 'readback-v2')), umociUnpack(`${fx.layout}:v2`, join(work, 'umoci-v2b')));

    // podman pulls the zstd push.
    const root = join(work, 'podman');
    const podman = (...args: string[]) => execFileSync('podman', ['--root', join(root, 'root'), '--runroot', join(root, 'run'), '--storage-driver', 'vfs', ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
    try {
      podman('pull', '-q', '--tls-verify=false', '--creds', `${USER}:${PASS}`, `${registry.host}/fresh:v1`);
      const mnt = podman('image', 'mount', `${registry.host}/fresh:v1`).trim();
      await assertSameTree(mnt, unpackedV1, { ignoreRoot: true });
    } finally {
      try { podman('image', 'unmount', '--all'); } catch { /* nothing mounted */ }
    }
  });

  test('a committed image pushes only its new layer', async () => {
    const ctr = lastLine(await cli('create', '--name', 'builder', `${proxy.host}/debian:v1`));
    const root = lastLine(await cli('mount', ctr));
    execFileSync('sh', ['-c', 'cd "$1" && echo hello > hello.txt', 'sh', root]);
    await cli('commit', 'builder', 'hello:v1');
    const from = proxy.requests.length;
    const out = await cowshedAsync(store, ['push', '--tls-verify=false', 'hello:v1', `${proxy.host}/debian:hello`], env);
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stderr.match(/uploaded/g)?.length, 1, out.stderr);
    assert.match(out.stderr, /layer 1\/2 .*already there/);
    assert.match(out.stderr, /pushed .*: [\d.]+ (B|KB) sent/, 'kilobytes, not the base layer');
    const patches = proxy.requests.slice(from).filter((r) => r.method === 'PUT' || r.method === 'PATCH');
    assert.equal(patches.length, 3, 'one layer, the config, the manifest');
    const readBack = join(work, 'hello-layout');
    execFileSync('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', `${USER}:${PASS}`, `docker://${registry.host}/debian:hello`, `oci:${readBack}:hello`], { stdio: 'ignore' });
    const unpacked = umociUnpack(`${readBack}:hello`, join(work, 'hello-unpacked'));
    assert.equal(readFileSync(join(unpacked, 'hello.txt'), 'utf8'), 'hello\n');
    await cli('rm', '-f', 'builder');
  });
});
