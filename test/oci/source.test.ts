// openImageSource against layouts and archives written by the real tools:
// umoci builds the image, skopeo copies it to oci-archive, docker-archive and
// a zstd-compressed layout. What we read is compared with what those files
// say when read plainly (JSON.parse of the blobs, sha256 of the bytes).

import assert from 'node:assert/strict';
import { appendFile, cp, mkdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { writeOciBlob, writeOciLayout } from '../../src/oci/layout-writer.ts';
import {
  DOCKER_CONFIG, DOCKER_LAYER_TAR, DOCKER_LAYER_TAR_GZIP, OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD, OCI_MANIFEST,
  REF_NAME_ANNOTATION,
} from '../../src/oci/media-types.ts';
import { explainLayerFailure, openImageSource, type ImageSource } from '../../src/oci/source.ts';
import { readTar } from '../../src/tar/reader.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { collect, rejectsWith, run, streamDigest, tempDir } from './tools.ts';

let work: string;
let L: string; // umoci layout, tag t, two gzip layers

interface Plain { manifestDigest: string; manifest: { config: { digest: string }; layers: { digest: string; mediaType: string; size: number }[] }; config: { rootfs: { diff_ids: string[] } } }

async function readPlain(dir: string, tag: string): Promise<Plain> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  const entry = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.[REF_NAME_ANNOTATION] === tag);
  const blob = async (d: string) => JSON.parse(await readFile(join(dir, 'blobs/sha256', d.slice(7)), 'utf8'));
  const manifest = await blob(entry.digest);
  return { manifestDigest: entry.digest, manifest, config: await blob(manifest.config.digest) };
}

/** Every layer's blob and tar streams have the digests they claim. */
async function checkLayers(src: ImageSource, diffIds: string[]): Promise<void> {
  assert.equal(src.layers.length, diffIds.length);
  for (const layer of src.layers) {
    assert.equal(layer.diffId, diffIds[layer.index]);
    const blob = await streamDigest(layer.openBlob());
    assert.equal(blob.digest, layer.digest);
    assert.equal(blob.size, layer.size);
    assert.equal((await streamDigest(layer.openTar())).digest, layer.diffId);
  }
}

before(async () => {
  work = await tempDir('oci-source');
  L = join(work, 'L');
  const bundle = join(work, 'bundle');
  await run('umoci', ['init', '--layout', L]);
  await run('umoci', ['new', '--image', `${L}:t`]);
  // Layer 1: a few files. Layer 2: a deletion (whiteout) and a new file.
  await run('umoci', ['unpack', '--image', `${L}:t`, bundle]);
  await writeFile(join(bundle, 'rootfs/hello'), 'hello\n');
  await mkdir(join(bundle, 'rootfs/d'));
  await writeFile(join(bundle, 'rootfs/d/x'), 'x\n');
  await run('umoci', ['repack', '--image', `${L}:t`, bundle]);
  await rm(bundle, { recursive: true });
  await run('umoci', ['unpack', '--image', `${L}:t`, bundle]);
  await rm(join(bundle, 'rootfs/d/x'));
  await writeFile(join(bundle, 'rootfs/y'), 'y\n');
  await run('umoci', ['repack', '--image', `${L}:t`, bundle]);
  await rm(bundle, { recursive: true });
  await run('umoci', ['config', '--image', `${L}:t`, '--config.cmd', '/bin/sh', '--config.env', 'A=1', '--config.workingdir', '/d', '--config.user', '1000']);
  await run('skopeo', ['copy', '-q', `oci:${L}:t`, `oci-archive:${join(work, 'F.tar')}:t`]);
  await run('skopeo', ['copy', '-q', `oci:${L}:t`, `docker-archive:${join(work, 'D.tar')}:repo:t`]);
  await run('skopeo', ['copy', '-q', '--dest-compress', '--dest-compress-format', 'zstd', `oci:${L}:t`, `oci:${join(work, 'Z')}:t`]);
});

after(async () => { await rm(work, { recursive: true, force: true }); });

void describe('oci: layouts from umoci', () => {
  void test('manifest, config and diff IDs as the files say; layer streams verified', async () => {
    const plain = await readPlain(L, 't');
    const src = await openImageSource(`oci:${L}:t`);
    try {
      assert.equal(src.ref, `oci:${L}:t`);
      assert.equal(src.manifest.digest, plain.manifestDigest);
      assert.equal(src.manifest.mediaType, OCI_MANIFEST);
      assert.deepEqual(JSON.parse(src.manifest.bytes.toString()), plain.manifest);
      assert.equal(src.config.digest, plain.manifest.config.digest);
      assert.deepEqual(src.config.parsed.rootfs.diff_ids, plain.config.rootfs.diff_ids);
      assert.deepEqual(src.config.parsed.config?.Cmd, ['/bin/sh']);
      assert.deepEqual(src.config.parsed.config?.Env?.includes('A=1'), true);
      assert.equal(src.config.parsed.config?.WorkingDir, '/d');
      assert.equal(src.config.parsed.config?.User, '1000');
      assert.equal(src.config.parsed.os, 'linux');
      assert.equal(src.layers.length, 2);
      for (const l of src.layers) {
        assert.equal(l.mediaType, OCI_LAYER_TAR_GZIP);
        assert.equal(l.digest, plain.manifest.layers[l.index].digest);
        assert.equal(l.size, plain.manifest.layers[l.index].size);
      }
      await checkLayers(src, plain.config.rootfs.diff_ids);
      // GNU tar reads what openTar gives: layer 2 holds the whiteout umoci wrote.
      const tar2 = join(work, 'layer2.tar');
      await writeFile(tar2, await collect(src.layers[1].openTar()));
      assert.match(await run('tar', ['-tf', tar2]), /d\/\.wh\.x/);
    } finally {
      await src.close();
    }
  });

  void test('no tag: the only image; several: an error listing the tags', async () => {
    const one = await openImageSource(`oci:${L}`);
    assert.equal(one.manifest.digest, (await readPlain(L, 't')).manifestDigest);
    const two = join(work, 'two-tags');
    await run('skopeo', ['copy', '-q', `oci:${L}:t`, `oci:${two}:a`]);
    await run('skopeo', ['copy', '-q', `oci:${join(work, 'Z')}:t`, `oci:${two}:b`]);
    await rejectsWith(openImageSource(`oci:${two}`), 'EINVAL', /2 images.*tags: a, b/);
    await rejectsWith(openImageSource(`oci:${two}:c`), 'ENOENT', /no image tagged "c" \(tags: a, b\)/);
    assert.equal((await openImageSource(`oci:${two}:b`)).layers[0].mediaType, OCI_LAYER_TAR_ZSTD);
  });

  void test('zstd layers (skopeo --dest-compress-format zstd) decompress to the same diff IDs', async () => {
    const plain = await readPlain(L, 't');
    const src = await openImageSource(`oci:${join(work, 'Z')}:t`);
    assert.ok(src.layers.every((l) => l.mediaType === OCI_LAYER_TAR_ZSTD));
    assert.notEqual(src.layers[0].digest, plain.manifest.layers[0].digest);
    await checkLayers(src, plain.config.rootfs.diff_ids);
  });
});

void describe('archives from skopeo, read in place', () => {
  void test('oci-archive: same image as the layout', async () => {
    const plain = await readPlain(L, 't');
    for (const ref of [`oci-archive:${join(work, 'F.tar')}:t`, `oci-archive:${join(work, 'F.tar')}`]) {
      const src = await openImageSource(ref);
      assert.equal(src.manifest.digest, plain.manifestDigest);
      assert.equal(src.config.digest, plain.manifest.config.digest);
      await checkLayers(src, plain.config.rootfs.diff_ids);
    }
    await rejectsWith(openImageSource(`oci-archive:${join(work, 'F.tar')}:nope`), 'ENOENT', /tags: t/);
  });

  void test('docker-archive: synthesised manifest with Docker media types, same diff IDs', async () => {
    const plain = await readPlain(L, 't');
    const D = join(work, 'D.tar');
    for (const ref of [`docker-archive:${D}`, `docker-archive:${D}:repo:t`, `docker-archive:${D}:docker.io/library/repo:t`, `docker-archive:${D}:0`, `docker-archive:${D}:@0`]) {
      const src = await openImageSource(ref);
      assert.deepEqual(src.config.parsed.rootfs.diff_ids, plain.config.rootfs.diff_ids, ref);
      assert.equal(src.manifest.mediaType, OCI_MANIFEST);
      assert.equal(src.manifest.parsed.config.mediaType, DOCKER_CONFIG);
      assert.equal(src.manifest.parsed.config.digest, src.config.digest);
      assert.equal(src.manifest.digest, 'sha256:' + (await import('node:crypto')).createHash('sha256').update(src.manifest.bytes).digest('hex'));
      // skopeo stores the layers uncompressed: each blob is its own diff.
      for (const l of src.layers) {
        assert.equal(l.mediaType, DOCKER_LAYER_TAR);
        assert.equal(l.digest, l.diffId);
      }
      await checkLayers(src, plain.config.rootfs.diff_ids);
    }
    await rejectsWith(openImageSource(`docker-archive:${D}:other:t`), 'ENOENT', /no image tagged other:t.*repo:t/);
    await rejectsWith(openImageSource(`docker-archive:${D}:3`), 'ENOENT', /no image number 3/);
  });

  void test('docker-archive in the classic docker save shape: <id>/layer.tar, gzip-compressed layers', async () => {
    const plain = await readPlain(L, 't');
    const root = join(work, 'classic');
    const layers: string[] = [];
    for (const [i, l] of plain.manifest.layers.entries()) {
      await mkdir(join(root, `id${i}`), { recursive: true });
      await cp(join(L, 'blobs/sha256', l.digest.slice(7)), join(root, `id${i}`, 'layer.tar'));
      layers.push(`id${i}/layer.tar`);
    }
    const configHex = plain.manifest.config.digest.slice(7);
    await cp(join(L, 'blobs/sha256', configHex), join(root, `${configHex}.json`));
    // Docker 25+ shape: content-addressed blobs/sha256/ paths.
    await mkdir(join(root, 'blobs/sha256'), { recursive: true });
    for (const l of plain.manifest.layers) await cp(join(L, 'blobs/sha256', l.digest.slice(7)), join(root, 'blobs/sha256', l.digest.slice(7)));
    await cp(join(L, 'blobs/sha256', configHex), join(root, 'blobs/sha256', configHex));
    await writeFile(join(root, 'manifest.json'), JSON.stringify([
      { Config: `${configHex}.json`, RepoTags: ['example.com:5000/team/app:1.0'], Layers: layers },
      { Config: `${configHex}.json`, RepoTags: null, Layers: layers },
      { Config: `blobs/sha256/${configHex}`, RepoTags: ['new:shape'], Layers: plain.manifest.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`) },
    ]));
    const archive = join(work, 'classic.tar');
    await run('tar', ['-C', root, '-cf', archive, '.']); // "./"-prefixed names, as docker save's are not
    await rejectsWith(openImageSource(`docker-archive:${archive}`), 'EINVAL', /3 images.*0 example\.com:5000\/team\/app:1\.0, 1, 2 new:shape/);
    const newShape = await openImageSource(`docker-archive:${archive}:new:shape`);
    assert.deepEqual(newShape.layers.map((l) => l.digest), plain.manifest.layers.map((l) => l.digest));
    await checkLayers(newShape, plain.config.rootfs.diff_ids);
    const src = await openImageSource(`docker-archive:${archive}:example.com:5000/team/app:1.0`);
    for (const l of src.layers) {
      assert.equal(l.mediaType, DOCKER_LAYER_TAR_GZIP);
      assert.equal(l.digest, plain.manifest.layers[l.index].digest); // hashed, since the name says nothing
    }
    await checkLayers(src, plain.config.rootfs.diff_ids);
    // A config whose content does not match its name.
    await appendFile(join(root, `${configHex}.json`), ' ');
    const broken = join(work, 'classic-broken.tar');
    await run('tar', ['-C', root, '-cf', broken, '.']);
    await rejectsWith(openImageSource(`docker-archive:${broken}:1`), 'EDIGEST', /digest mismatch/);
  });
});

void describe('platform selection', () => {
  let M: string;
  before(async () => {
    M = join(work, 'multi');
    const layer = join(work, 'multi-layer.tar');
    await run('tar', ['-C', work, '-cf', layer, '--files-from', '/dev/null']);
    const variants = [
      { tag: 'amd', config: { architecture: 'amd64', os: 'linux' }, platform: { architecture: 'amd64', os: 'linux' } },
      { tag: 'arm', config: { architecture: 'arm64', os: 'linux', variant: 'v8' }, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    ];
    const entries = [];
    for (const v of variants) {
      const { manifestDigest } = await writeOciLayout(M, { config: v.config, layers: [{ path: layer }], tag: v.tag });
      const size = (await readFile(join(M, 'blobs/sha256', manifestDigest.slice(7)))).length;
      entries.push({ mediaType: OCI_MANIFEST, digest: manifestDigest, size, platform: v.platform });
    }
    const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }));
    const indexDigest = await writeOciBlob(M, indexBytes);
    const top = JSON.parse(await readFile(join(M, 'index.json'), 'utf8'));
    top.manifests.push({ mediaType: OCI_INDEX, digest: indexDigest, size: indexBytes.length, annotations: { [REF_NAME_ANNOTATION]: 'multi' } });
    await writeFile(join(M, 'index.json'), JSON.stringify(top));
  });

  void test('an index picks linux/amd64 by default, another platform on request', async () => {
    const amd = await openImageSource(`oci:${M}:multi`);
    assert.equal(amd.config.parsed.architecture, 'amd64');
    const arm = await openImageSource(`oci:${M}:multi`, { platform: 'linux/arm64' });
    assert.equal(arm.config.parsed.architecture, 'arm64');
    const armV8 = await openImageSource(`oci:${M}:multi`, { platform: 'linux/arm64/v8' });
    assert.equal(armV8.manifest.digest, arm.manifest.digest);
    await rejectsWith(openImageSource(`oci:${M}:multi`, { platform: 'linux/s390x' }), 'EUNSUPPORTED',
      /no image for platform linux\/s390x \(available: linux\/amd64, linux\/arm64\/v8\)/);
    await rejectsWith(openImageSource(`oci:${M}:multi`, { platform: 'linux' }), 'EINVAL');
  });

  void test('skopeo reads the same index the same way', async () => {
    const ours = await openImageSource(`oci:${M}:multi`);
    const theirs = JSON.parse(await run('skopeo', ['inspect', '--raw', '--override-arch', 'amd64', '--override-os', 'linux', `oci:${M}:multi`]));
    assert.equal(theirs.mediaType, OCI_INDEX);
    const copied = join(work, 'multi-copied');
    await run('skopeo', ['copy', '-q', '--override-arch', 'amd64', '--override-os', 'linux', `oci:${M}:multi`, `oci:${copied}:x`]);
    // skopeo gzips the plain layer on the way, so compare the configs: same platform's image.
    assert.equal((await readPlain(copied, 'x')).manifest.config.digest, ours.config.digest);
  });
});

void describe('damaged and hostile input', () => {
  let B: string; // a private copy of L to break
  let blobOf: (i: number) => string;
  before(async () => {
    B = join(work, 'broken');
    await cp(L, B, { recursive: true });
    const plain = await readPlain(B, 't');
    blobOf = (i) => join(B, 'blobs/sha256', plain.manifest.layers[i].digest.slice(7));
  });

  void test('a flipped byte in a layer blob is EDIGEST, from openBlob and from openTar', async () => {
    const blob = await readFile(blobOf(1));
    blob[Math.floor(blob.length / 2)] ^= 0x01;
    await writeFile(blobOf(1), blob);
    const src = await openImageSource(`oci:${B}:t`);
    await rejectsWith(collect(src.layers[1].openBlob()), 'EDIGEST', /layer 1 \(sha256:[0-9a-f]{64}\): digest mismatch: expected sha256:/);
    await rejectsWith(collect(src.layers[1].openTar()), 'EDIGEST', /digest mismatch/);
    await collect(src.layers[0].openTar()); // the other layer is fine
  });

  void test('explainLayerFailure: a tar reader\'s EFORMAT on a damaged blob becomes EDIGEST', async () => {
    const X = join(work, 'explain');
    const srcDir = join(work, 'explain-src');
    await mkdir(srcDir);
    await writeFile(join(srcDir, 'n'.repeat(150)), 'long name: a PAX header\n');
    const layer = join(work, 'explain.tar');
    await run('tar', ['--format=pax', '-C', srcDir, '-cf', layer, '.']);
    await writeOciLayout(X, { config: {}, layers: [{ path: layer }], tag: 'x' });
    const intact = await openImageSource(`oci:${X}:x`);
    const blobFile = join(X, 'blobs/sha256', intact.layers[0].digest.slice(7));
    const blob = await readFile(blobFile);
    // Break the length digits of the PAX record ("NNN path=...").
    const at = blob.indexOf(' path=');
    blob[at - 1] = 0x39;
    blob[at - 2] = 0x39;
    await writeFile(blobFile, blob);
    const src = await openImageSource(`oci:${X}:x`);
    let parseError: unknown;
    try {
      for await (const e of readTar(src.layers[0].openTar())) void e;
    } catch (e) {
      parseError = e;
    }
    assert.ok(isCowshedError(parseError) && parseError.code === 'EFORMAT', String(parseError));
    await rejectsWith(Promise.reject(await explainLayerFailure(src.layers[0], parseError)), 'EDIGEST', /digest mismatch/);
    // With an intact blob the original error stands; other errors pass untouched.
    const L0 = (await openImageSource(`oci:${L}:t`)).layers[0];
    assert.equal(await explainLayerFailure(L0, parseError), parseError);
    const other = new Error('x');
    assert.equal(await explainLayerFailure(src.layers[0], other), other);
  });

  void test('a truncated layer blob is a clear error', async () => {
    await truncate(blobOf(0), 100);
    const src = await openImageSource(`oci:${B}:t`);
    await rejectsWith(collect(src.layers[0].openBlob()), 'EDIGEST', /layer 0 .*truncated: 100 of \d+ bytes/);
    await rejectsWith(collect(src.layers[0].openTar()), 'EDIGEST', /truncated/);
  });

  void test('a blob longer than its descriptor fails once the size is exceeded', async () => {
    const C = join(work, 'long');
    await cp(L, C, { recursive: true });
    const plain = await readPlain(C, 't');
    await appendFile(join(C, 'blobs/sha256', plain.manifest.layers[0].digest.slice(7)), Buffer.alloc(10));
    const src = await openImageSource(`oci:${C}:t`);
    await rejectsWith(collect(src.layers[0].openBlob()), 'EDIGEST', /longer than its declared size/);
  });

  void test('a config that does not match its digest, a missing blob', async () => {
    const C = join(work, 'badconfig');
    await cp(L, C, { recursive: true });
    const plain = await readPlain(C, 't');
    const configPath = join(C, 'blobs/sha256', plain.manifest.config.digest.slice(7));
    const config = await readFile(configPath);
    config[config.indexOf('"amd64"') + 1] = 0x41; // same size, different bytes
    await writeFile(configPath, config);
    await rejectsWith(openImageSource(`oci:${C}:t`), 'EDIGEST', /config sha256:\w+: digest mismatch/);
    await rm(configPath);
    await rejectsWith(openImageSource(`oci:${C}:t`), 'EFORMAT', /blobs\/sha256\/\w+ is missing/);
  });

  void test('unknown media types are EUNSUPPORTED and named', async () => {
    const U = join(work, 'unknown');
    const plain = await readPlain(L, 't');
    await cp(L, U, { recursive: true });
    const manifest = { ...plain.manifest, layers: plain.manifest.layers.map((l) => ({ ...l, mediaType: 'application/vnd.example.thing.v1+squashfs' })) };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const digest = await writeOciBlob(U, bytes);
    const artifact = Buffer.from(JSON.stringify({ ...plain.manifest, config: { ...plain.manifest.config, mediaType: 'application/vnd.cncf.helm.config.v1+json' } }));
    const artifactDigest = await writeOciBlob(U, artifact);
    await writeFile(join(U, 'index.json'), JSON.stringify({
      schemaVersion: 2, manifests: [
        { mediaType: OCI_MANIFEST, digest, size: bytes.length, annotations: { [REF_NAME_ANNOTATION]: 'squash' } },
        { mediaType: OCI_MANIFEST, digest: artifactDigest, size: artifact.length, annotations: { [REF_NAME_ANNOTATION]: 'helm' } },
        { mediaType: 'application/vnd.example.other+json', digest, size: bytes.length, annotations: { [REF_NAME_ANNOTATION]: 'other' } },
      ],
    }));
    await rejectsWith(openImageSource(`oci:${U}:squash`), 'EUNSUPPORTED', /"application\/vnd\.example\.thing\.v1\+squashfs"/);
    await rejectsWith(openImageSource(`oci:${U}:helm`), 'EUNSUPPORTED', /"application\/vnd\.cncf\.helm\.config\.v1\+json"/);
    await rejectsWith(openImageSource(`oci:${U}:other`), 'EUNSUPPORTED', /"application\/vnd\.example\.other\+json"/);
  });

  void test('hostile JSON in index.json, manifest and config is EFORMAT', async () => {
    const H = join(work, 'hostile');
    const plain = await readPlain(L, 't');
    await cp(L, H, { recursive: true });
    const indexFile = join(H, 'index.json');
    for (const bad of ['', 'null', '[]', '{"schemaVersion":2,"manifests":"x"}', '{"schemaVersion":2,"manifests":[{"digest":"sha256:../../x","size":1,"mediaType":"a"}]}', '{"schemaVersion":2,"manifests":[{"mediaType":"' + OCI_MANIFEST + '","digest":"' + plain.manifestDigest + '","size":-5}]}']) {
      await writeFile(indexFile, bad);
      await rejectsWith(openImageSource(`oci:${H}`), 'EFORMAT');
    }
    // A manifest blob that is valid by digest but nonsense inside.
    const junk = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: 'x', layers: [] }));
    const junkDigest = await writeOciBlob(H, junk);
    await writeFile(indexFile, JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: junkDigest, size: junk.length }] }));
    await rejectsWith(openImageSource(`oci:${H}`), 'EFORMAT', /manifest sha256:\w+\.config: expected an object/);
    // A descriptor that claims a huge manifest is refused before reading.
    await writeFile(indexFile, JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: junkDigest, size: 1e12 }] }));
    await rejectsWith(openImageSource(`oci:${H}`), 'EFORMAT', /limit/);
    // Layers and diff IDs disagree in number.
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const configDigest = await writeOciBlob(H, config);
    const m = Buffer.from(JSON.stringify({ ...plain.manifest, config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length } }));
    const mDigest = await writeOciBlob(H, m);
    await writeFile(indexFile, JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: mDigest, size: m.length }] }));
    await rejectsWith(openImageSource(`oci:${H}`), 'EFORMAT', /2 layers but the config has 0 diff IDs/);
    // Indexes that point at themselves.
    const selfRef = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] as object[] };
    const loopBytes = Buffer.from(JSON.stringify(selfRef));
    const loopDigest = await writeOciBlob(H, loopBytes);
    await writeFile(indexFile, JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: OCI_INDEX, digest: loopDigest, size: loopBytes.length }] }));
    await rejectsWith(openImageSource(`oci:${H}`), 'EUNSUPPORTED', /no image for platform linux\/amd64 \(available: none declared\)/);
  });

  void test('bad references and missing inputs', async () => {
    await rejectsWith(openImageSource('docker://busybox'), 'EINVAL', /unsupported image reference/);
    await rejectsWith(openImageSource('busybox'), 'EINVAL');
    await rejectsWith(openImageSource('oci:'), 'EINVAL', /no path/);
    await rejectsWith(openImageSource(`oci:${L}:`), 'EINVAL', /empty tag/);
    await rejectsWith(openImageSource(`oci:${join(work, 'nope')}:t`), 'ENOENT', /no such OCI layout/);
    await rejectsWith(openImageSource(`oci-archive:${join(work, 'nope.tar')}`), 'ENOENT', /no such archive/);
    await rejectsWith(openImageSource(`oci:${work}`), 'EFORMAT', /not an OCI image layout/);
    await rejectsWith(openImageSource(`oci-archive:${join(work, 'D.tar')}`), 'EFORMAT', /not an OCI image layout/);
    await rejectsWith(openImageSource(`docker-archive:${join(work, 'F.tar')}`), 'EFORMAT', /not a docker save archive/);
  });
});

void describe('writeOciLayout', () => {
  void test('adds tags to an existing layout, replaces a retagged one; umoci and skopeo read the result', async () => {
    const W = join(work, 'written');
    await cp(L, W, { recursive: true });
    const layer = join(work, 'w-layer.tar');
    await writeFile(join(work, 'w-file'), 'content\n');
    await run('tar', ['-C', work, '-cf', layer, 'w-file']);
    await run('gzip', ['-k', layer]);
    const first = await writeOciLayout(W, { config: { config: { Cmd: ['/x'] } }, layers: [{ path: `${layer}.gz` }], tag: 'new', annotations: { a: 'b' } });
    const second = await writeOciLayout(W, { config: { config: { Cmd: ['/y'] } }, layers: [{ path: layer }, { path: `${layer}.gz` }], tag: 'new' });
    assert.notEqual(first.manifestDigest, second.manifestDigest);
    const index = JSON.parse(await readFile(join(W, 'index.json'), 'utf8'));
    assert.deepEqual(index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations[REF_NAME_ANNOTATION]), ['t', 'new']);
    const src = await openImageSource(`oci:${W}:new`);
    assert.equal(src.manifest.digest, second.manifestDigest);
    assert.deepEqual(src.layers.map((l) => l.mediaType), ['application/vnd.oci.image.layer.v1.tar', OCI_LAYER_TAR_GZIP]);
    assert.equal(src.layers[0].diffId, src.layers[1].diffId);
    await checkLayers(src, src.config.parsed.rootfs.diff_ids);
    const inspected = JSON.parse(await run('skopeo', ['inspect', `oci:${W}:new`]));
    assert.equal(inspected.Digest, second.manifestDigest);
    assert.equal(inspected.Layers.length, 2);
    const bundle = join(work, 'w-bundle');
    await run('umoci', ['unpack', '--image', `${W}:new`, bundle]);
    assert.equal(await readFile(join(bundle, 'rootfs/w-file'), 'utf8'), 'content\n');
  });
});
