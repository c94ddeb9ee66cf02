import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, mkdirSync, writeFileSync, readFileSync, linkSync, symlinkSync, mkdtempSync, rmSync, copyFileSync } from 'node:fs';
import { createHash, hash } from 'node:crypto';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { indexTarArchive, normalizeArchivePath } from '../../src/tar/archive-index.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { run, pattern } from './fixture.ts';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'cowshed-tarindex-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const hasSkopeo = ((): boolean => {
  try {
    run('skopeo', ['--version']);
    return true;
  } catch {
    return false;
  }
})();

/** Reads a member in place, as callers do, and returns its sha256. */
async function memberSha256(file: string, m: { offset: number; size: number }): Promise<string> {
  const h = createHash('sha256');
  if (m.size > 0) for await (const c of createReadStream(file, { start: m.offset, end: m.offset + m.size - 1 })) h.update(c);
  return h.digest('hex');
}

async function readMember(file: string, m: { offset: number; size: number }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  if (m.size > 0) for await (const c of createReadStream(file, { start: m.offset, end: m.offset + m.size - 1 })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A one-layer OCI image layout written by hand (skopeo needs a source). */
function makeOciLayout(): string {
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const rootfs = join(dir, 'rootfs');
  mkdirSync(join(rootfs, 'etc'), { recursive: true });
  writeFileSync(join(rootfs, 'etc/hello'), 'hello\n');
  writeFileSync(join(rootfs, 'big'), pattern(200_000, 3));
  const layerTar = join(dir, 'layer.tar');
  run('tar', ['--sort=name', '-C', rootfs, '-cf', layerTar, '.']);
  const put = (data: Buffer): { digest: string; size: number } => {
    const hex = hash('sha256', data);
    writeFileSync(join(blobs, hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layer = put(readFileSync(layerTar));
  const config = put(Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] },
  })));
  const manifest = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
  })));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }],
  }));
  return layout;
}

void test('indexes a skopeo oci-archive: every blob reads back in place with its digest', { skip: hasSkopeo ? false : 'needs skopeo' }, async () => {
  const layout = makeOciLayout();
  const archive = join(dir, 'image-oci.tar');
  run('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${layout}:v1`, `oci-archive:${archive}:v1`]);
  const index = await indexTarArchive(archive);
  assert.ok(index.has('oci-layout'));
  const indexJson = JSON.parse((await readMember(archive, index.get('index.json')!)).toString());
  const manifestDesc = indexJson.manifests[0];
  const blob = (digest: string) => {
    const m = index.get(`blobs/sha256/${digest.slice('sha256:'.length)}`);
    assert.ok(m, `blob ${digest} indexed`);
    return m;
  };
  const manifestMember = blob(manifestDesc.digest);
  assert.equal(manifestMember.size, manifestDesc.size);
  assert.equal(`sha256:${await memberSha256(archive, manifestMember)}`, manifestDesc.digest);
  const manifest = JSON.parse((await readMember(archive, manifestMember)).toString());
  for (const d of [manifest.config, ...manifest.layers]) {
    const m = blob(d.digest);
    assert.equal(m.size, d.size);
    assert.equal(`sha256:${await memberSha256(archive, m)}`, d.digest);
  }
});

void test('indexes a skopeo docker-archive, following its layer symlinks', { skip: hasSkopeo ? false : 'needs skopeo' }, async () => {
  const layout = join(dir, 'layout');
  const archive = join(dir, 'image-docker.tar');
  run('skopeo', ['--insecure-policy', 'copy', '-q', `oci:${layout}:v1`, `docker-archive:${archive}:test/img:v1`]);
  const listing = run('tar', ['-tvf', archive]);
  assert.match(listing, /layer\.tar -> \.\.\//, 'skopeo writes legacy layer.tar symlinks');
  const index = await indexTarArchive(archive);
  const [entry] = JSON.parse((await readMember(archive, index.get('manifest.json')!)).toString());
  const config = index.get(entry.Config)!;
  const configJson = JSON.parse((await readMember(archive, config)).toString());
  assert.equal(`sha256:${await memberSha256(archive, config)}`, `sha256:${entry.Config.replace(/\.json$/, '')}`);
  const diffIds: string[] = configJson.rootfs.diff_ids;
  for (let i = 0; i < entry.Layers.length; i++) {
    const m = index.get(entry.Layers[i])!;
    assert.equal(`sha256:${await memberSha256(archive, m)}`, diffIds[i]);
  }
  // The legacy "<id>/layer.tar" symlinks resolve to the same bytes.
  const links = [...listing.matchAll(/ (\S+\/layer\.tar) -> (\S+)/g)];
  assert.ok(links.length > 0);
  for (const [, link, target] of links) {
    assert.deepEqual(index.get(link), index.get(normalizeArchivePath(`${link}/../${target}`)!), link);
  }
});

void test('follows hard links and symlink chains, ignores escapes and loops, normalises names', async () => {
  const src = join(dir, 'links');
  mkdirSync(join(src, 'a/b'), { recursive: true });
  writeFileSync(join(src, 'a/b/data'), 'the data\n');
  writeFileSync(join(src, 'other'), 'other\n');
  linkSync(join(src, 'a/b/data'), join(src, 'hard'));
  symlinkSync('b/data', join(src, 'a/rel'));
  symlinkSync('/a/rel', join(src, 'abs-chain'));
  symlinkSync('../../outside', join(src, 'escape'));
  symlinkSync('loop2', join(src, 'loop1'));
  symlinkSync('loop1', join(src, 'loop2'));
  symlinkSync('missing', join(src, 'dangling'));
  writeFileSync(join(src, 'outside'), 'not reachable through ../\n');
  symlinkSync('a', join(src, 'dirlink'));
  const archive = join(dir, 'links.tar');
  // "./"-prefixed names, as `tar -C dir .` writes them.
  run('tar', ['--sort=name', '--format=gnu', '-C', src, '-cf', archive, '.']);
  const index = await indexTarArchive(archive);
  const data = index.get('a/b/data')!;
  assert.equal((await readMember(archive, data)).toString(), 'the data\n');
  // GNU tar stores the first name in sorted order; the other is a hard link to it.
  assert.deepEqual(index.get('hard'), data);
  assert.deepEqual(index.get('a/rel'), data);
  assert.deepEqual(index.get('abs-chain'), data);
  for (const name of ['escape', 'loop1', 'loop2', 'dangling', 'dirlink', 'a', 'a/b', '.']) assert.equal(index.has(name), false, name);
  assert.equal((await readMember(archive, index.get('other')!)).toString(), 'other\n');
  assert.equal(normalizeArchivePath('./a//b/./c/'), 'a/b/c');
  assert.equal(normalizeArchivePath('/abs/x'), 'abs/x');
  assert.equal(normalizeArchivePath('../x'), null);
  assert.equal(normalizeArchivePath('a/../../x'), null);
});

void test('a damaged archive gives a typed error', async () => {
  const src = join(dir, 'links.tar');
  const bad = join(dir, 'bad.tar');
  copyFileSync(src, bad);
  const data = readFileSync(bad);
  writeFileSync(bad, data.subarray(0, 700));
  await assert.rejects(indexTarArchive(bad), (e: unknown) => isCowshedError(e) && e.code === 'EFORMAT');
});
