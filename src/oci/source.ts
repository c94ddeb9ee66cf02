// Image sources on the read side: an OCI layout directory, an OCI layout in a
// tar (oci-archive) and `docker save` archives (docker-archive). Archives are
// never extracted: their members are read in place by byte range, using the
// index of the tar built by src/tar/archive-index.ts.
//
// Everything that comes out is verified: manifest and config against their
// digests and sizes, each layer blob while it streams, each layer's
// uncompressed tar against the config's diff ID.

import { fromHost } from '../util/names.ts';
import { createReadStream } from 'node:fs';
import { tarFromWorker, WORKER_MIN_SIZE } from './layer-pipe.ts';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { indexTarArchive } from '../tar/archive-index.ts';
import { CowshedError, errno, isCowshedError } from '../util/errors.ts';
import { decompress, detectCompression, MAGIC_BYTES } from './compression.ts';
import { digestOfStream, isDigest, sha256Digest, verifyDigest } from './digest.ts';
import {
  DOCKER_CONFIG, DOCKER_LAYER_TAR, DOCKER_LAYER_TAR_GZIP, isIndexMediaType, isManifestMediaType,
  OCI_LAYER_TAR_ZSTD, OCI_MANIFEST, REF_NAME_ANNOTATION,
} from './media-types.ts';
import type { ImageSource, LayerRef } from '../transport/types.ts';
import { readFileRanges } from '../transport/types.ts';
import {
  formatPlatform, MAX_CONFIG_BYTES, MAX_LAYERS, MAX_MANIFEST_BYTES, parseConfig, parseIndex, parseManifest,
  parsePlatformString, type Descriptor, type ImageConfig, type Manifest, type Platform,
} from './types.ts';

// The one interface every transport gives (src/transport/types.ts).
export type { ImageSource, LayerRef } from '../transport/types.ts';

export interface OpenImageSourceOptions {
  /** "os/arch[/variant]" picked from indexes and manifest lists; default linux/amd64. */
  platform?: string;
}

export const DEFAULT_PLATFORM = 'linux/amd64';
const READ_CHUNK = 1 << 20;
const MAX_INDEX_DEPTH = 4; // index → index → manifest happens; deeper is hostile
const MAX_DOCKER_MANIFEST_JSON = 16 << 20;

/** Where the members of a layout or archive are read from. */
interface MemberReader {
  /** Member size in bytes; ENOENT-typed error if absent. */
  size(path: string): Promise<number>;
  /** The member's bytes, streamed. */
  read(path: string): AsyncIterable<Uint8Array>;
  has(path: string): Promise<boolean>;
  /** Where the member's bytes are in a file (for reading them on a worker thread). */
  location(path: string): Promise<{ file: string; start: number; size: number }>;
}

function missing(where: string, path: string): CowshedError {
  return new CowshedError('EFORMAT', `${where}: ${path} is missing`);
}

async function* readFileRange(file: string, start: number, size: number, what: string): AsyncGenerator<Uint8Array> {
  if (size === 0) return;
  try {
    for await (const chunk of createReadStream(file, { start, end: start + size - 1, highWaterMark: READ_CHUNK })) {
      yield chunk as Buffer;
    }
  } catch (e) {
    if (errno(e) === 'ENOENT') throw new CowshedError('EFORMAT', `${what}: file disappeared while reading`, { cause: e });
    throw e;
  }
}

class DirReader implements MemberReader {
  readonly dir: string;
  constructor(dir: string) { this.dir = dir; }
  async size(path: string): Promise<number> {
    try {
      const st = await stat(join(this.dir, path));
      if (!st.isFile()) throw new CowshedError('EFORMAT', `${this.dir}: ${path} is not a regular file`);
      return st.size;
    } catch (e) {
      if (errno(e) === 'ENOENT') throw missing(this.dir, path);
      throw e;
    }
  }
  async has(path: string): Promise<boolean> {
    return stat(join(this.dir, path)).then((st) => st.isFile(), () => false);
  }
  async *read(path: string): AsyncGenerator<Uint8Array> {
    const size = await this.size(path);
    // Read exactly the size seen, so a blob grown behind our back is not read on and on.
    yield* readFileRange(join(this.dir, path), 0, size, `${this.dir}: ${path}`);
  }
  async location(path: string): Promise<{ file: string; start: number; size: number }> {
    return { file: join(this.dir, path), start: 0, size: await this.size(path) };
  }
}

class ArchiveReader implements MemberReader {
  readonly file: string;
  readonly members: Map<string, { offset: number; size: number }>;
  constructor(file: string, members: Map<string, { offset: number; size: number }>) {
    this.file = file;
    this.members = members;
  }
  private member(path: string): { offset: number; size: number } {
    const m = this.members.get(normalizeMemberPath(path));
    if (m === undefined) throw missing(this.file, path);
    return m;
  }
  async size(path: string): Promise<number> { return this.member(path).size; }
  async has(path: string): Promise<boolean> { return this.members.has(normalizeMemberPath(path)); }
  async *read(path: string): AsyncGenerator<Uint8Array> {
    const m = this.member(path);
    yield* readFileRange(this.file, m.offset, m.size, `${this.file}: ${path}`);
  }
  async location(path: string): Promise<{ file: string; start: number; size: number }> {
    const m = this.member(path);
    return { file: this.file, start: m.offset, size: m.size };
  }
}

/** A member path from JSON (text) as the archive index keys it (binary strings, util/names.ts). */
function normalizeMemberPath(p: string): string {
  let s = fromHost(p);
  while (s.startsWith('./')) s = s.slice(2);
  return s;
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of source) chunks.push(c);
  return Buffer.concat(chunks);
}

async function readSmallMember(reader: MemberReader, path: string, max: number, what: string): Promise<Buffer> {
  const size = await reader.size(path);
  if (size > max) throw new CowshedError('EFORMAT', `${what}: ${size} bytes is more than the limit of ${max}`);
  return collect(reader.read(path));
}

function blobPath(digest: string): string {
  // Digests are validated (sha256:<64 hex>) by the parsers, so this is a safe path.
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

async function readBlob(reader: MemberReader, desc: Descriptor, max: number, what: string): Promise<Buffer> {
  if (desc.size > max) throw new CowshedError('EFORMAT', `${what}: declared size ${desc.size} is more than the limit of ${max}`);
  return collect(verifyDigest(reader.read(blobPath(desc.digest)), desc.digest, what, desc.size));
}

// ---------------------------------------------------------------- references

type ParsedRef =
  | { transport: 'oci'; path: string; tag?: string }
  | { transport: 'oci-archive'; path: string; tag?: string }
  | { transport: 'docker-archive'; path: string; select?: { index: number } | { repoTag: string } };

export function parseImageRef(ref: string): ParsedRef {
  const colon = ref.indexOf(':');
  const transport = colon < 0 ? '' : ref.slice(0, colon);
  const rest = colon < 0 ? '' : ref.slice(colon + 1);
  if (transport !== 'oci' && transport !== 'oci-archive' && transport !== 'docker-archive') {
    throw new CowshedError('EINVAL', `unsupported image reference ${JSON.stringify(ref)} (expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:N|REPO:TAG])`);
  }
  // Like skopeo: the path ends at the first colon.
  const sep = rest.indexOf(':');
  const path = sep < 0 ? rest : rest.slice(0, sep);
  const spec = sep < 0 ? undefined : rest.slice(sep + 1);
  if (path === '') throw new CowshedError('EINVAL', `image reference ${JSON.stringify(ref)} has no path`);
  if (transport === 'docker-archive') {
    if (spec === undefined || spec === '') return { transport, path };
    const m = /^@?(\d{1,6})$/.exec(spec);
    if (m) return { transport, path, select: { index: Number(m[1]) } };
    return { transport, path, select: { repoTag: spec } };
  }
  if (spec !== undefined && spec === '') throw new CowshedError('EINVAL', `image reference ${JSON.stringify(ref)} has an empty tag`);
  return spec === undefined ? { transport, path } : { transport, path, tag: spec };
}

/** Opens an image for reading; see ImageSource. Nothing is extracted or copied. */
export async function openImageSource(ref: string, opts: OpenImageSourceOptions = {}): Promise<ImageSource> {
  const parsed = parseImageRef(ref);
  const platform = parsePlatformString(opts.platform ?? DEFAULT_PLATFORM);
  if (parsed.transport === 'oci') {
    const st = await stat(parsed.path).catch((e: unknown) => {
      if (errno(e) === 'ENOENT') throw new CowshedError('ENOENT', `${parsed.path}: no such OCI layout directory`);
      throw e;
    });
    if (!st.isDirectory()) throw new CowshedError('EINVAL', `${parsed.path}: not a directory (for a tar use oci-archive:)`);
    return openOciLayout(ref, new DirReader(parsed.path), parsed.path, parsed.tag, platform);
  }
  const members = await indexArchive(parsed.path);
  const reader = new ArchiveReader(parsed.path, members);
  if (parsed.transport === 'oci-archive') return openOciLayout(ref, reader, parsed.path, parsed.tag, platform);
  return openDockerArchive(ref, reader, parsed.path, parsed.select);
}

async function indexArchive(file: string): Promise<Map<string, { offset: number; size: number }>> {
  const st = await stat(file).catch((e: unknown) => {
    if (errno(e) === 'ENOENT') throw new CowshedError('ENOENT', `${file}: no such archive`);
    throw e;
  });
  if (!st.isFile()) throw new CowshedError('EINVAL', `${file}: not a regular file`);
  const raw = await indexTarArchive(file);
  // Tolerate "./"-prefixed member names whatever the index does with them.
  const out = new Map<string, { offset: number; size: number }>();
  for (const [k, v] of raw) out.set(normalizeMemberPath(k), v);
  return out;
}

// ---------------------------------------------------------------- OCI layout

function tagOf(d: Descriptor): string | undefined {
  return d.annotations?.[REF_NAME_ANNOTATION];
}

function listTags(ds: Descriptor[]): string {
  const tags = [...new Set(ds.map(tagOf).filter((t): t is string => t !== undefined))];
  return tags.length === 0 ? 'no tags' : `tags: ${tags.join(', ')}`;
}

function matchesPlatform(p: Platform | undefined, want: Platform): boolean {
  if (p === undefined) return false;
  if (p.os !== want.os || p.architecture !== want.architecture) return false;
  return want.variant === undefined || p.variant === want.variant;
}

function pickPlatform(ds: Descriptor[], want: Platform, where: string): Descriptor {
  const hits = ds.filter((d) => matchesPlatform(d.platform, want));
  if (hits.length === 0) {
    const available = [...new Set(ds.filter((d) => d.platform).map((d) => formatPlatform(d.platform as Platform)))];
    throw new CowshedError('EUNSUPPORTED', `${where}: no image for platform ${formatPlatform(want)} (available: ${available.length ? available.join(', ') : 'none declared'}); choose one with --platform`);
  }
  // Without a requested variant prefer the entry that names none (or the first).
  return hits.find((d) => d.platform?.variant === undefined) ?? hits[0];
}

async function openOciLayout(
  ref: string, reader: MemberReader, where: string, tag: string | undefined, platform: Platform,
): Promise<ImageSource> {
  if (!(await reader.has('oci-layout'))) {
    throw new CowshedError('EFORMAT', `${where}: not an OCI image layout (no oci-layout file)`);
  }
  const layoutBytes = await readSmallMember(reader, 'oci-layout', 64 << 10, `${where}: oci-layout`);
  let layout: unknown;
  try { layout = JSON.parse(layoutBytes.toString('utf8')); } catch { layout = undefined; }
  const version = (layout as { imageLayoutVersion?: unknown } | undefined)?.imageLayoutVersion;
  if (typeof version !== 'string') throw new CowshedError('EFORMAT', `${where}: oci-layout has no imageLayoutVersion`);
  if (!version.startsWith('1.')) throw new CowshedError('EUNSUPPORTED', `${where}: OCI layout version ${JSON.stringify(version)} is not supported`);

  const index = parseIndex(await readSmallMember(reader, 'index.json', MAX_MANIFEST_BYTES, `${where}: index.json`), undefined, `${where}: index.json`);
  let chosen: Descriptor;
  if (tag !== undefined) {
    const hits = index.manifests.filter((d) => tagOf(d) === tag);
    if (hits.length === 0) throw new CowshedError('ENOENT', `${where}: no image tagged ${JSON.stringify(tag)} (${listTags(index.manifests)})`);
    chosen = hits.length === 1 ? hits[0] : pickPlatform(hits, platform, `${where}:${tag}`);
  } else if (index.manifests.length === 1) {
    chosen = index.manifests[0];
  } else if (index.manifests.length === 0) {
    throw new CowshedError('ENOENT', `${where}: the layout holds no images`);
  } else if (index.manifests.every((d) => tagOf(d) === undefined && d.platform !== undefined)) {
    chosen = pickPlatform(index.manifests, platform, where);
  } else {
    throw new CowshedError('EINVAL', `${where}: holds ${index.manifests.length} images, name one with ${where}:TAG (${listTags(index.manifests)})`);
  }

  let depth = 0;
  while (!isManifestMediaType(chosen.mediaType)) {
    if (!isIndexMediaType(chosen.mediaType)) {
      // parseManifest names the media type (and says so for schema 1).
      parseManifest(Buffer.from('{}'), chosen.mediaType, `${where}: ${chosen.digest}`);
    }
    if (++depth > MAX_INDEX_DEPTH) throw new CowshedError('EFORMAT', `${where}: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
    const what = `${where}: index ${chosen.digest}`;
    const nested = parseIndex(await readBlob(reader, chosen, MAX_MANIFEST_BYTES, what), chosen.mediaType, what);
    chosen = pickPlatform(nested.manifests, platform, what);
  }

  const manifestWhat = `${where}: manifest ${chosen.digest}`;
  const manifestBytes = await readBlob(reader, chosen, MAX_MANIFEST_BYTES, manifestWhat);
  const manifest = parseManifest(manifestBytes, chosen.mediaType, manifestWhat);
  const configWhat = `${where}: config ${manifest.config.digest}`;
  const configBytes = await readBlob(reader, manifest.config, MAX_CONFIG_BYTES, configWhat);
  const config = parseConfig(configBytes, configWhat);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new CowshedError('EFORMAT', `${where}: manifest has ${manifest.layers.length} layers but the config has ${diffIds.length} diff IDs`);
  }
  const layers = manifest.layers.map((d, i) => makeLayer(reader, where, i, d.digest, d.mediaType, d.size, diffIds[i], blobPath(d.digest), d.annotations));
  return makeSource(ref, chosen.digest, manifest.mediaType, manifestBytes, manifest, manifest.config.digest, configBytes, config, layers);
}

function makeLayer(
  reader: MemberReader, where: string, index: number, digest: string, mediaType: string, size: number, diffId: string, path: string,
  annotations?: Record<string, string>,
): LayerRef {
  const what = `${where}: layer ${index} (${digest})`;
  const openBlob = () => verifyDigest(reader.read(path), digest, what, size);
  const layer: LayerRef = {
    index, digest, mediaType, size, diffId,
    ...(annotations ? { annotations } : {}),
    // Layouts and archives are files: any range is a read away.
    async readRanges(ranges, put) {
      const loc = await reader.location(path);
      if (loc.size !== size) throw new CowshedError('EDIGEST', `${what}: ${loc.size} bytes, the manifest says ${size}`);
      readFileRanges(loc.file, loc.start, size, ranges, put, what);
      return false;
    },
    openBlob,
    async *openTar() {
      try {
        if (size >= WORKER_MIN_SIZE) {
          // Big layers: read, verify and decompress on a second core.
          const loc = await reader.location(path);
          if (loc.size !== size) throw new CowshedError('EDIGEST', `${what}: ${loc.size} bytes, the manifest says ${size}`);
          yield* tarFromWorker({ ...loc, digest, diffId, what });
          return;
        }
        const tar = decompress(openBlob(), what);
        // An uncompressed blob is its own diff: it was just verified.
        yield* digest === diffId ? tar : verifyDigest(tar, diffId, `${what} diff ID`);
      } catch (e) {
        // A damaged blob usually breaks decompression before its digest is
        // known; say what is really wrong (EDIGEST) if that is the cause.
        throw await explainLayerFailure(layer, e);
      }
    },
  };
  return layer;
}

/**
 * For a consumer of openTar() whose own parsing failed (the tar reader's
 * EFORMAT): a damaged blob usually shows up as a malformed tar long before
 * the end of the stream, where its digest is checked. This re-reads the
 * blob and returns its EDIGEST error if that is the real cause, else `err`.
 * Use as: `catch (e) { throw await explainLayerFailure(layer, e); }`.
 */
export async function explainLayerFailure(layer: LayerRef, err: unknown): Promise<unknown> {
  if (!isCowshedError(err) || err.code !== 'EFORMAT') return err;
  try {
    for await (const chunk of layer.openBlob()) void chunk;
  } catch (e) {
    if (isCowshedError(e) && e.code === 'EDIGEST') return e;
  }
  return err;
}

function makeSource(
  ref: string, manifestDigest: string, manifestMediaType: string, manifestBytes: Buffer, manifest: Manifest,
  configDigest: string, configBytes: Buffer, config: ImageConfig, layers: LayerRef[],
): ImageSource {
  return {
    ref,
    manifest: { digest: manifestDigest, mediaType: manifestMediaType, bytes: manifestBytes, parsed: manifest },
    config: { digest: configDigest, bytes: configBytes, parsed: config },
    layers,
    // Reads open their own file handles and close them when done or abandoned.
    async close() { /* nothing held between reads */ },
  };
}

// ---------------------------------------------------------------- docker save

interface DockerArchiveEntry { Config: string; RepoTags: string[]; Layers: string[] }

function parseDockerManifestJson(bytes: Buffer, where: string): DockerArchiveEntry[] {
  const what = `${where}: manifest.json`;
  let v: unknown;
  try { v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)); } catch (e) {
    throw new CowshedError('EFORMAT', `${what}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!Array.isArray(v)) throw new CowshedError('EFORMAT', `${what}: expected an array`);
  if (v.length > MAX_LAYERS) throw new CowshedError('EFORMAT', `${what}: too many entries (${v.length})`);
  const isStringArray = (a: unknown, max: number): a is string[] =>
    Array.isArray(a) && a.length <= max && a.every((s) => typeof s === 'string');
  return v.map((e: unknown, i) => {
    const o = e as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new CowshedError('EFORMAT', `${what}[${i}]: expected an object`);
    if (typeof o.Config !== 'string') throw new CowshedError('EFORMAT', `${what}[${i}].Config: expected a string`);
    if (!isStringArray(o.Layers, MAX_LAYERS)) throw new CowshedError('EFORMAT', `${what}[${i}].Layers: expected an array of strings`);
    const tags = o.RepoTags ?? [];
    if (!isStringArray(tags, 65536)) throw new CowshedError('EFORMAT', `${what}[${i}].RepoTags: expected an array of strings`);
    return { Config: o.Config, RepoTags: tags, Layers: o.Layers };
  });
}

/** docker.io/library/foo:latest, library/foo and foo all name the same image. */
export function normalizeRepoTag(s: string): string {
  let r = s;
  const lastSlash = r.lastIndexOf('/');
  if (!r.slice(lastSlash + 1).includes(':') && !r.includes('@')) r += ':latest';
  if (r.startsWith('docker.io/')) r = r.slice('docker.io/'.length);
  if (r.startsWith('index.docker.io/')) r = r.slice('index.docker.io/'.length);
  if (r.startsWith('library/')) r = r.slice('library/'.length);
  return r;
}

/** A digest implied by a content-addressed member name (blobs/sha256/X or X.json / X.tar). */
function digestFromMemberPath(path: string): string | undefined {
  const m = /(?:^|\/)(?:blobs\/sha256\/)?([0-9a-f]{64})(?:\.json|\.tar)?$/.exec(path);
  if (m === null) return undefined;
  const d = `sha256:${m[1]}`;
  return isDigest(d) ? d : undefined;
}

async function openDockerArchive(
  ref: string, reader: ArchiveReader, where: string, select: { index: number } | { repoTag: string } | undefined,
): Promise<ImageSource> {
  if (!(await reader.has('manifest.json'))) {
    throw new CowshedError('EFORMAT', `${where}: not a docker save archive (no manifest.json)`);
  }
  const entries = parseDockerManifestJson(await readSmallMember(reader, 'manifest.json', MAX_DOCKER_MANIFEST_JSON, `${where}: manifest.json`), where);
  const describe = () => entries.map((e, i) => `${i}${e.RepoTags.length ? ' ' + e.RepoTags.join(' ') : ''}`).join(', ');
  let entry: DockerArchiveEntry;
  if (select === undefined) {
    if (entries.length !== 1) {
      throw new CowshedError(entries.length === 0 ? 'ENOENT' : 'EINVAL',
        entries.length === 0 ? `${where}: the archive holds no images` : `${where}: holds ${entries.length} images, name one with ${where}:N or :REPO:TAG (${describe()})`);
    }
    entry = entries[0];
  } else if ('index' in select) {
    if (select.index >= entries.length) throw new CowshedError('ENOENT', `${where}: no image number ${select.index} (images: ${describe()})`);
    entry = entries[select.index];
  } else {
    const want = normalizeRepoTag(select.repoTag);
    const hit = entries.find((e) => e.RepoTags.some((t) => normalizeRepoTag(t) === want));
    if (hit === undefined) throw new CowshedError('ENOENT', `${where}: no image tagged ${select.repoTag} (images: ${describe()})`);
    entry = hit;
  }

  const configWhat = `${where}: config ${entry.Config}`;
  const configBytes = await readSmallMember(reader, entry.Config, MAX_CONFIG_BYTES, configWhat);
  const configDigest = sha256Digest(configBytes);
  const namedDigest = digestFromMemberPath(entry.Config);
  if (namedDigest !== undefined && namedDigest !== configDigest) {
    throw new CowshedError('EDIGEST', `${configWhat}: digest mismatch: expected ${namedDigest}, got ${configDigest}`);
  }
  const config = parseConfig(configBytes, configWhat);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== entry.Layers.length) {
    throw new CowshedError('EFORMAT', `${where}: manifest.json lists ${entry.Layers.length} layers but the config has ${diffIds.length} diff IDs`);
  }

  // docker save has no manifest of its own: we synthesise an OCI manifest
  // for it, with the Docker media types of its config and layers, so the
  // image has a manifest digest like any other.
  const layerDescriptors: Descriptor[] = [];
  for (let i = 0; i < entry.Layers.length; i++) {
    const path = entry.Layers[i];
    const size = await reader.size(path);
    const head = await collect(takeHead(reader.read(path), MAGIC_BYTES));
    const compression = detectCompression(head, `${where}: layer ${path}`);
    let digest = path.startsWith('blobs/sha256/') ? digestFromMemberPath(path) : undefined;
    if (digest === undefined) {
      // An uncompressed layer is its own diff; a compressed one under a
      // made-up name has to be hashed once to learn its digest.
      digest = compression === 'none' ? diffIds[i] : (await digestOfStream(reader.read(path))).digest;
    }
    const mediaType = compression === 'none' ? DOCKER_LAYER_TAR : compression === 'gzip' ? DOCKER_LAYER_TAR_GZIP : OCI_LAYER_TAR_ZSTD;
    layerDescriptors.push({ mediaType, digest, size });
  }
  const synthetic = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: DOCKER_CONFIG, digest: configDigest, size: configBytes.length },
    layers: layerDescriptors,
  };
  const manifestBytes = Buffer.from(JSON.stringify(synthetic));
  const manifest = parseManifest(manifestBytes, OCI_MANIFEST, `${where}: synthesised manifest`);
  const layers = layerDescriptors.map((d, i) => makeLayer(reader, where, i, d.digest, d.mediaType, d.size, diffIds[i], entry.Layers[i]));
  return makeSource(ref, sha256Digest(manifestBytes), OCI_MANIFEST, manifestBytes, manifest, configDigest, configBytes, config, layers);
}

async function* takeHead(source: AsyncIterable<Uint8Array>, n: number): AsyncGenerator<Uint8Array> {
  let got = 0;
  for await (const chunk of source) {
    yield chunk.subarray(0, n - got);
    got += Math.min(chunk.length, n - got);
    if (got >= n) return;
  }
}
