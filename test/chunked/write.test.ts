// zstd:chunked out: `export --compression-format zstd:chunked` and `push
// --compression-format zstd:chunked`, judged by an independent parser
// (checker.ts), zstd -d, GNU tar, and podman 4.3 pulling and running it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, symlinkSync, linkSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk, debianFixture, removeTree, tempDir } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { checkZstdChunked } from './checker.ts';
import { cowshedAsyncOk, startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { slowOnly } from '../helpers/slow.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};

interface Layout { manifest: { layers: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>; config: { digest: string } }; blob: (d: string) => Buffer }

function readLayout(dir: string): Layout {
  const blob = (d: string): Buffer => readFileSync(join(dir, 'blobs', 'sha256', d.slice(7)));
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  return { manifest: JSON.parse(blob(index.manifests[0].digest).toString()) as Layout['manifest'], blob };
}

describe('zstd:chunked export', { skip: have('zstd') ? false : 'zstd is not installed' }, () => {
  let work: string;
  let store: string;
  before(() => {
    work = tempDir('cowshed-chunked-w-');
    store = join(work, 'store');
  });
  after(() => { if (work) removeTree(work); });

  test('every file class: chunks, a zeros hole, empty files, links, names Go escapes; tar-split rebuilds the tar', () => {
    const root = join(work, 'root');
    mkdirSync(join(root, 'sub', 'deeper'), { recursive: true });
    // 3 MiB of random data: cut by the rolling checksum into ~64 KiB chunks.
    writeFileSync(join(root, 'big.bin'), pseudoRandomBytes(3 << 20, 1));
    // Data, 64 KiB of zeros (a "zeros" chunk), data.
    writeFileSync(join(root, 'holey.bin'), Buffer.concat([pseudoRandomBytes(5000, 2), Buffer.alloc(65536), pseudoRandomBytes(3000, 3)]));
    writeFileSync(join(root, 'empty'), '');
    writeFileSync(join(root, 'sub', 'a<b>&c.txt'), 'html characters in a name\n');
    writeFileSync(join(root, 'sub', 'deeper', 'small'), 'x');
    writeFileSync(join(root, 'short-zeros'), Buffer.alloc(700));
    symlinkSync('../big.bin', join(root, 'sub', 'link'));
    linkSync(join(root, 'big.bin'), join(root, 'hard'));
    const tarFile = join(work, 'root.tar');
    execFileSync('tar', ['--format=pax', '-C', root, '-cf', tarFile, '.']);
    cowshedOk(store, 'import', `tar:${tarFile}`, 'synth:1');
    const out = join(work, 'out');
    cowshedOk(store, 'export', '--compression-format', 'zstd:chunked', 'synth:1', `oci:${out}`);
    const l = readLayout(out);
    const [layer] = l.manifest.layers;
    assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
    const config = JSON.parse(l.blob(l.manifest.config.digest).toString()) as { rootfs: { diff_ids: string[] } };
    const diffId = `sha256:${createHash('sha256').update(readFileSync(tarFile)).digest('hex')}`;
    assert.equal(config.rootfs.diff_ids[0], diffId, 'the diff ID is the imported tar');
    const blob = l.blob(layer.digest);
    assert.equal(blob.length, layer.size);
    const r = checkZstdChunked(blob, layer.annotations ?? {}, diffId);
    assert.ok(r.chunkEntries >= 10, `big.bin is cut into chunks (${r.chunkEntries} chunk entries)`);
    assert.ok(r.zerosChunks >= 1, 'the 64 KiB hole is a zeros chunk');
    const sha = (f: string): string => `sha256:${createHash('sha256').update(readFileSync(join(root, f))).digest('hex')}`;
    // big.bin and hard are one inode: tar stores whichever it meets first, the other as a link.
    assert.equal(r.files.get('./big.bin') ?? r.files.get('./hard'), sha('big.bin'));
    assert.equal(r.files.get('./holey.bin'), sha('holey.bin'));
    assert.equal(r.files.get('./sub/a<b>&c.txt'), sha('sub/a<b>&c.txt'));
    // Go's encoder escapes <, > and & in the JSON, as containers/storage writes it.
    const [tocOff, tocLen] = layer.annotations!['io.github.containers.zstd-chunked.manifest-position'].split(':').map(Number);
    const tocJson = execFileSync('zstd', ['-d', '-c', '-q'], { input: blob.subarray(tocOff, tocOff + tocLen) }).toString();
    assert.match(tocJson, /a\\u003cb\\u003e\\u0026c\.txt/);
    // GNU tar reads what zstd -d gives.
    const list = execFileSync('tar', ['-tvf', '-'], { input: r.tar }).toString();
    assert.match(list, /link to \.\/(big\.bin|hard)/);
    // And cowshed reads its own blob back as the same image.
    cowshedOk(store, 'import', `oci:${out}`, 'synth:2');
    const inspect = (n: string) => JSON.parse(cowshedOk(store, 'inspect', n)) as { composefs: string; layers: Array<{ diffId: string; mediaType: string }> };
    assert.equal(inspect('synth:2').layers[0].diffId, diffId);
    assert.equal(inspect('synth:2').composefs, inspect('synth:1').composefs, 'the same tree');
  });
});

const podmanTools = ['zstd', 'docker-registry', 'podman', 'umoci'];
const missingPodman = podmanTools.filter((t) => !have(t));

// A Debian-sized case under npm run test:slow; the export test above checks every file class with the
// independent checker in npm test.
describe('zstd:chunked push, pulled and run by podman', { skip: missingPodman.length ? `missing ${missingPodman.join(', ')}` : slowOnly }, () => {
  let work: string;
  let store: string;
  let registry: RunningRegistry;
  let fx: { layout: string };
  before(async () => {
    fx = debianFixture();
    work = tempDir('cowshed-chunked-p-');
    store = join(work, 'store');
    registry = await startRegistry(join(work, 'registry'));
  });
  after(async () => {
    await registry?.stop();
    if (work) removeTree(work);
  });

  test('the Debian image pushed as zstd:chunked: the blob checks out, podman 4.3 pulls and runs it as the same tree', async () => {
    cowshedOk(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1');
    await cowshedAsyncOk(store, ['push', '--tls-verify=false', '--compression-format', 'zstd:chunked', 'debian:v1', `${registry.host}/chunked:v1`]);
    const base = `http://${registry.host}/v2/chunked`;
    const manifest = await (await fetch(`${base}/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json() as Layout['manifest'];
    const config = await (await fetch(`${base}/blobs/${manifest.config.digest}`)).json() as { rootfs: { diff_ids: string[] } };
    for (const [i, layer] of manifest.layers.entries()) {
      assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
      const blob = Buffer.from(await (await fetch(`${base}/blobs/${layer.digest}`)).arrayBuffer());
      checkZstdChunked(blob, layer.annotations ?? {}, config.rootfs.diff_ids[i]);
    }
    const root = join(work, 'podman');
    mkdirSync(join(root, 'xdg'), { recursive: true });
    const podman = (...args: string[]): string => execFileSync('podman', [
      '--root', join(root, 'root'), '--runroot', join(root, 'run'), '--storage-driver', 'vfs', '--events-backend', 'file', '--cgroup-manager', 'cgroupfs', ...args,
    ], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: join(root, 'xdg'), HOME: work } });
    try {
      podman('pull', '-q', '--tls-verify=false', `${registry.host}/chunked:v1`);
      const ran = podman('run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000', `${registry.host}/chunked:v1`, 'cat', '/etc/debian_version');
      const unpacked = join(work, 'umoci');
      execFileSync('umoci', ['unpack', '--image', `${fx.layout}:v1`, unpacked], { stdio: 'ignore' });
      assert.equal(ran, readFileSync(join(unpacked, 'rootfs', 'etc', 'debian_version'), 'utf8'));
      const mnt = podman('image', 'mount', `${registry.host}/chunked:v1`).trim();
      const diffs = compareTrees(await listTree(mnt, { nsec: true }), await listTree(join(unpacked, 'rootfs'), { nsec: true }), { ignoreRoot: true });
      assert.deepEqual(diffs, [], diffs.join('\n'));
    } finally {
      try { podman('image', 'unmount', '--all'); } catch { /* nothing mounted */ }
    }
  });
});
