import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DOCKER_CONFIG, DOCKER_LAYER_TAR_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR_ZSTD, OCI_MANIFEST,
} from '../../src/oci/media-types.ts';
import { formatPlatform, parseConfig, parseIndex, parseManifest, parsePlatformString } from '../../src/oci/types.ts';
import { throwsWith } from './tools.ts';

const D1 = 'sha256:' + '1'.repeat(64);
const D2 = 'sha256:' + '2'.repeat(64);
const j = (v: unknown) => Buffer.from(JSON.stringify(v));

const goodManifest = {
  schemaVersion: 2,
  mediaType: OCI_MANIFEST,
  config: { mediaType: OCI_CONFIG, digest: D1, size: 100 },
  layers: [{ mediaType: OCI_LAYER_TAR_ZSTD, digest: D2, size: 5, annotations: { a: 'b' } }],
  annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
};
const goodConfig = {
  architecture: 'amd64', os: 'linux',
  config: { Env: ['A=1'], Cmd: ['/bin/sh', '-c', 'x'], Entrypoint: null, User: '1000:1000', WorkingDir: '/w', Labels: { l: 'v' }, ExposedPorts: { '80/tcp': {} } },
  rootfs: { type: 'layers', diff_ids: [D1, D2] },
  history: [{ created: '2024-01-01T00:00:00Z', created_by: 'x' }, { empty_layer: true }],
  unknownField: { ignored: true },
};

void test('parseManifest: OCI and Docker schema 2', () => {
  const m = parseManifest(j(goodManifest));
  assert.equal(m.mediaType, OCI_MANIFEST);
  assert.equal(m.config.digest, D1);
  assert.equal(m.layers[0].annotations?.a, 'b');
  const docker = parseManifest(j({
    schemaVersion: 2, mediaType: DOCKER_MANIFEST,
    config: { mediaType: DOCKER_CONFIG, digest: D1, size: 1 },
    layers: [{ mediaType: DOCKER_LAYER_TAR_GZIP, digest: D2, size: 2 }],
  }));
  assert.equal(docker.mediaType, DOCKER_MANIFEST);
  // mediaType absent in the body: the descriptor's is used.
  const noType: Record<string, unknown> = { ...goodManifest };
  delete noType.mediaType;
  assert.equal(parseManifest(j(noType), OCI_MANIFEST).mediaType, OCI_MANIFEST);
});

void test('parseManifest: unknown media types are EUNSUPPORTED and named', () => {
  throwsWith(() => parseManifest(j({ ...goodManifest, mediaType: 'application/x-foo' })), 'EUNSUPPORTED', /"application\/x-foo"/);
  throwsWith(() => parseManifest(j({ ...goodManifest, layers: [{ mediaType: 'application/vnd.example.layer.v1+squashfs', digest: D2, size: 1 }] })),
    'EUNSUPPORTED', /layers\[0\].*"application\/vnd\.example\.layer\.v1\+squashfs"/);
  throwsWith(() => parseManifest(j({ ...goodManifest, config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: D1, size: 1 } })),
    'EUNSUPPORTED', /helm/);
  throwsWith(() => parseManifest(j(goodManifest), 'application/x-bar'), 'EUNSUPPORTED', /x-bar/);
  throwsWith(() => parseManifest(j({ schemaVersion: 1, name: 'x', fsLayers: [] })), 'EUNSUPPORTED', /schema 1/);
  throwsWith(() => parseManifest(j({ ...goodManifest, mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' })), 'EUNSUPPORTED', /schema 1/);
});

void test('parseManifest: hostile JSON is EFORMAT, never a crash', () => {
  const cases: unknown[] = [
    null, 42, 'str', [], [goodManifest],
    { ...goodManifest, schemaVersion: '2' },
    { ...goodManifest, schemaVersion: 3 },
    { ...goodManifest, config: null },
    { ...goodManifest, config: [] },
    { ...goodManifest, config: { ...goodManifest.config, digest: 'sha256:../../etc' } },
    { ...goodManifest, config: { ...goodManifest.config, size: -1 } },
    { ...goodManifest, config: { ...goodManifest.config, size: 1.5 } },
    { ...goodManifest, config: { ...goodManifest.config, size: 2 ** 60 } },
    { ...goodManifest, config: { ...goodManifest.config, size: '100' } },
    { ...goodManifest, config: { ...goodManifest.config, mediaType: 7 } },
    { ...goodManifest, layers: 'nope' },
    { ...goodManifest, layers: { 0: goodManifest.layers[0] } },
    { ...goodManifest, layers: [null] },
    { ...goodManifest, layers: new Array(5000).fill(goodManifest.layers[0]) },
    { ...goodManifest, layers: [{ ...goodManifest.layers[0], annotations: { a: 1 } }] },
    { ...goodManifest, layers: [{ ...goodManifest.layers[0], urls: 'http://x' }] },
    { ...goodManifest, annotations: [] },
    { ...goodManifest, mediaType: OCI_INDEX },
    { ...goodManifest, manifests: [] },
    { schemaVersion: 2, config: goodManifest.config, layers: [] }, // no media type anywhere
  ];
  for (const c of cases) throwsWith(() => parseManifest(j(c)), 'EFORMAT');
  throwsWith(() => parseManifest(Buffer.from('{"schemaVersion":2,')), 'EFORMAT', /not valid JSON/);
  throwsWith(() => parseManifest(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 'EFORMAT', /not valid JSON/);
  throwsWith(() => parseManifest(Buffer.alloc(0)), 'EFORMAT');
  throwsWith(() => parseManifest(Buffer.alloc(5 << 20, 0x20)), 'EFORMAT', /limit/);
  // Deep nesting: JSON.parse copes; we must not recurse into it.
  throwsWith(() => parseManifest(Buffer.from('['.repeat(100000) + ']'.repeat(100000))), 'EFORMAT');
  // __proto__ keys stay data.
  const m = parseManifest(Buffer.from(JSON.stringify(goodManifest).replace('"annotations":{', '"annotations":{"__proto__":"x",')));
  const layerAnnotations = m.layers[0].annotations ?? {};
  assert.ok(Object.hasOwn(layerAnnotations, '__proto__'));
  assert.equal(layerAnnotations['__proto__'], 'x');
  assert.equal(Object.getPrototypeOf(layerAnnotations), null);
});

void test('parseIndex: OCI index, Docker manifest list, layout index.json without mediaType', () => {
  const idx = parseIndex(j({
    schemaVersion: 2, mediaType: DOCKER_MANIFEST_LIST,
    manifests: [{ mediaType: DOCKER_MANIFEST, digest: D1, size: 3, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }],
  }));
  assert.equal(idx.mediaType, DOCKER_MANIFEST_LIST);
  assert.equal(formatPlatform(idx.manifests[0].platform!), 'linux/arm64/v8');
  assert.equal(parseIndex(j({ schemaVersion: 2, manifests: [] })).mediaType, OCI_INDEX);
  throwsWith(() => parseIndex(j({ schemaVersion: 2, mediaType: 'application/x-idx', manifests: [] })), 'EUNSUPPORTED', /x-idx/);
  for (const c of [
    {}, { schemaVersion: 2 }, { schemaVersion: 2, manifests: {} },
    { schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: D1 }] },
    { schemaVersion: 2, manifests: [{ mediaType: OCI_MANIFEST, digest: D1, size: 1, platform: { os: 'linux' } }] },
    { schemaVersion: 2, manifests: new Array(5000).fill({ mediaType: OCI_MANIFEST, digest: D1, size: 1 }) },
    { schemaVersion: 2, mediaType: OCI_MANIFEST, manifests: [] },
    { schemaVersion: 2, manifests: [], layers: [] },
  ]) throwsWith(() => parseIndex(j(c)), 'EFORMAT');
});

void test('parseConfig: the fields cowshed uses, typed', () => {
  const c = parseConfig(j(goodConfig));
  assert.deepEqual(c.rootfs.diff_ids, [D1, D2]);
  assert.deepEqual(c.config?.Cmd, ['/bin/sh', '-c', 'x']);
  assert.equal(c.config?.Entrypoint, undefined);
  assert.equal(c.config?.User, '1000:1000');
  assert.equal(c.config?.WorkingDir, '/w');
  assert.deepEqual(c.config?.Env, ['A=1']);
  assert.equal(c.history?.length, 2);
  assert.equal(c.history?.[1].empty_layer, true);
  assert.equal((c as unknown as Record<string, unknown>).unknownField, undefined);
});

void test('parseConfig: hostile JSON is EFORMAT', () => {
  const cases: unknown[] = [
    { ...goodConfig, rootfs: undefined },
    { ...goodConfig, rootfs: { type: 'layers' } },
    { ...goodConfig, rootfs: { type: 'squash', diff_ids: [] } },
    { ...goodConfig, rootfs: { type: 'layers', diff_ids: ['sha256:nope'] } },
    { ...goodConfig, rootfs: { type: 'layers', diff_ids: new Array(5000).fill(D1) } },
    { ...goodConfig, architecture: 1 },
    { ...goodConfig, os: undefined },
    { ...goodConfig, config: { ...goodConfig.config, Env: 'A=1' } },
    { ...goodConfig, config: { ...goodConfig.config, Cmd: [1, 2] } },
    { ...goodConfig, config: { ...goodConfig.config, User: 0 } },
    { ...goodConfig, config: { ...goodConfig.config, Labels: { a: null } } },
    { ...goodConfig, config: 'x' },
    { ...goodConfig, history: {} },
    { ...goodConfig, history: [{ empty_layer: 'yes' }] },
  ];
  for (const c of cases) throwsWith(() => parseConfig(j(c)), 'EFORMAT');
  throwsWith(() => parseConfig(j({ ...goodConfig, rootfs: { type: 'layers', diff_ids: ['sha512:' + 'a'.repeat(128)] } })), 'EUNSUPPORTED', /sha512/);
});

void test('parsePlatformString', () => {
  assert.deepEqual(parsePlatformString('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(parsePlatformString('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  for (const s of ['linux', 'linux/', '/amd64', 'a/b/c/d', '']) throwsWith(() => parsePlatformString(s), 'EINVAL');
});
