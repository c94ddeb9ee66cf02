// The OCI image model (manifest, index, config) and strict parsers for it.
// Everything parsed here may come from a hostile registry or archive: the
// parsers check every field they keep, cap sizes and counts, and throw
// CowshedError EFORMAT (malformed) or EUNSUPPORTED (well-formed but not
// something cowshed handles, e.g. an unknown media type), never a TypeError.

import { CowshedError } from '../util/errors.ts';
import { validateDigest } from './digest.ts';
import {
  CONFIG_MEDIA_TYPES, DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED, INDEX_MEDIA_TYPES,
  isConfigMediaType, isIndexMediaType, isLayerMediaType, isManifestMediaType, MANIFEST_MEDIA_TYPES, OCI_INDEX,
} from './media-types.ts';

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

/** OCI image manifest or Docker schema 2 manifest (same shape). */
export interface Manifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
}

/** OCI image index or Docker manifest list. */
export interface Index {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  author?: string;
  config?: ContainerConfig;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history?: HistoryEntry[];
}

// Caps: far above anything real, low enough that hostile input cannot make
// us allocate or loop without bound.
export const MAX_MANIFEST_BYTES = 4 << 20;     // the distribution spec's limit for manifests
export const MAX_CONFIG_BYTES = 64 << 20;
export const MAX_LAYERS = 4096;
export const MAX_INDEX_ENTRIES = 4096;
const MAX_HISTORY = 65536;
const MAX_LIST = 65536;           // Env, Cmd, urls, ...
const MAX_MAP_KEYS = 65536;       // annotations, labels, ...

type Json = unknown;
type Obj = Record<string, Json>;

function bad(what: string, msg: string): never {
  throw new CowshedError('EFORMAT', `${what}: ${msg}`);
}

function typeName(v: Json): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function parseJsonObject(bytes: Uint8Array, what: string, maxBytes: number): Obj {
  if (bytes.length > maxBytes) bad(what, `${bytes.length} bytes is more than the limit of ${maxBytes}`);
  let value: Json;
  try {
    // fatal: invalid UTF-8 is malformed JSON, not something to guess at.
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    bad(what, `not valid JSON (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
  }
  return asObject(value, what);
}

function asObject(v: Json, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(what, `expected an object, got ${typeName(v)}`);
  return v as Obj;
}

function asString(v: Json, what: string): string {
  if (typeof v !== 'string') bad(what, `expected a string, got ${typeName(v)}`);
  return v;
}

function optString(v: Json, what: string): string | undefined {
  return v === undefined || v === null ? undefined : asString(v, what);
}

function asSize(v: Json, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(what, `expected a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

function asArray(v: Json, what: string, max: number): Json[] {
  if (!Array.isArray(v)) bad(what, `expected an array, got ${typeName(v)}`);
  if (v.length > max) bad(what, `${v.length} entries is more than the limit of ${max}`);
  return v;
}

function optStringArray(v: Json, what: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  return asArray(v, what, MAX_LIST).map((s, i) => asString(s, `${what}[${i}]`));
}

function optStringMap(v: Json, what: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  const o = asObject(v, what);
  const keys = Object.keys(o);
  if (keys.length > MAX_MAP_KEYS) bad(what, `${keys.length} keys is more than the limit of ${MAX_MAP_KEYS}`);
  // A null-prototype object so keys like "__proto__" stay plain data.
  const out = Object.create(null) as Record<string, string>;
  for (const k of keys) out[k] = asString(o[k], `${what}.${k}`);
  return out;
}

/** Maps whose values are empty objects in practice (ExposedPorts, Volumes). */
function optObjectMap(v: Json, what: string): Record<string, object> | undefined {
  if (v === undefined || v === null) return undefined;
  const o = asObject(v, what);
  const keys = Object.keys(o);
  if (keys.length > MAX_MAP_KEYS) bad(what, `${keys.length} keys is more than the limit of ${MAX_MAP_KEYS}`);
  const out = Object.create(null) as Record<string, object>;
  for (const k of keys) out[k] = asObject(o[k] ?? {}, `${what}.${k}`);
  return out;
}

function parseSchemaVersion(o: Obj, what: string): 2 {
  if (o.schemaVersion !== 2) {
    if (o.schemaVersion === 1) throw new CowshedError('EUNSUPPORTED', `${what}: Docker schema 1 manifests are not supported (convert with skopeo copy --format v2s2)`);
    bad(what, `schemaVersion must be 2, got ${JSON.stringify(o.schemaVersion) ?? 'nothing'}`);
  }
  return 2;
}

export function parsePlatform(v: Json, what: string): Platform {
  const o = asObject(v, what);
  const p: Platform = { architecture: asString(o.architecture, `${what}.architecture`), os: asString(o.os, `${what}.os`) };
  const variant = optString(o.variant, `${what}.variant`);
  if (variant !== undefined) p.variant = variant;
  const osVersion = optString(o['os.version'], `${what}.os.version`);
  if (osVersion !== undefined) p['os.version'] = osVersion;
  const osFeatures = optStringArray(o['os.features'], `${what}.os.features`);
  if (osFeatures !== undefined) p['os.features'] = osFeatures;
  return p;
}

export function parseDescriptor(v: Json, what: string): Descriptor {
  const o = asObject(v, what);
  const d: Descriptor = {
    mediaType: asString(o.mediaType, `${what}.mediaType`),
    digest: validateDigest(o.digest, `${what}.digest`),
    size: asSize(o.size, `${what}.size`),
  };
  const urls = optStringArray(o.urls, `${what}.urls`);
  if (urls !== undefined) d.urls = urls;
  const annotations = optStringMap(o.annotations, `${what}.annotations`);
  if (annotations !== undefined) d.annotations = annotations;
  if (o.platform !== undefined && o.platform !== null) d.platform = parsePlatform(o.platform, `${what}.platform`);
  const artifactType = optString(o.artifactType, `${what}.artifactType`);
  if (artifactType !== undefined) d.artifactType = artifactType;
  return d;
}

function unsupportedMediaType(what: string, mediaType: string, expected: ReadonlySet<string>): never {
  if (mediaType === DOCKER_MANIFEST_V1 || mediaType === DOCKER_MANIFEST_V1_SIGNED) {
    throw new CowshedError('EUNSUPPORTED', `${what}: Docker schema 1 manifests are not supported (convert with skopeo copy --format v2s2)`);
  }
  throw new CowshedError('EUNSUPPORTED', `${what}: unsupported media type ${JSON.stringify(mediaType)} (expected ${[...expected].join(' or ')})`);
}

/**
 * Parses an image manifest. `declaredMediaType` is what the referring
 * descriptor (or HTTP Content-Type) said; it must agree with the body's own
 * mediaType when both are present.
 */
export function parseManifest(bytes: Uint8Array, declaredMediaType?: string, what = 'manifest'): Manifest {
  const o = parseJsonObject(bytes, what, MAX_MANIFEST_BYTES);
  const bodyType = optString(o.mediaType, `${what}.mediaType`);
  if (bodyType !== undefined && !isManifestMediaType(bodyType)) {
    if (isIndexMediaType(bodyType)) bad(what, `is an image index (${bodyType}), not a manifest`);
    unsupportedMediaType(what, bodyType, MANIFEST_MEDIA_TYPES);
  }
  if (declaredMediaType !== undefined && !isManifestMediaType(declaredMediaType)) {
    unsupportedMediaType(what, declaredMediaType, MANIFEST_MEDIA_TYPES);
  }
  if (bodyType !== undefined && declaredMediaType !== undefined && bodyType !== declaredMediaType) {
    bad(what, `media type ${bodyType} does not match the descriptor's ${declaredMediaType}`);
  }
  parseSchemaVersion(o, what);
  if (o.manifests !== undefined) bad(what, 'has "manifests": it is an image index, not a manifest');
  const mediaType = bodyType ?? declaredMediaType;
  if (mediaType === undefined) bad(what, 'has no mediaType');
  const config = parseDescriptor(o.config, `${what}.config`);
  if (!isConfigMediaType(config.mediaType)) unsupportedMediaType(`${what}.config`, config.mediaType, CONFIG_MEDIA_TYPES);
  const layers = asArray(o.layers, `${what}.layers`, MAX_LAYERS).map((l, i) => {
    const d = parseDescriptor(l, `${what}.layers[${i}]`);
    if (!isLayerMediaType(d.mediaType)) {
      throw new CowshedError('EUNSUPPORTED', `${what}.layers[${i}]: unsupported layer media type ${JSON.stringify(d.mediaType)}`);
    }
    return d;
  });
  const m: Manifest = { schemaVersion: 2, mediaType, config, layers };
  const annotations = optStringMap(o.annotations, `${what}.annotations`);
  if (annotations !== undefined) m.annotations = annotations;
  if (o.subject !== undefined && o.subject !== null) m.subject = parseDescriptor(o.subject, `${what}.subject`);
  return m;
}

/** Parses an OCI image index / Docker manifest list (also the layout's index.json). */
export function parseIndex(bytes: Uint8Array, declaredMediaType?: string, what = 'index'): Index {
  const o = parseJsonObject(bytes, what, MAX_MANIFEST_BYTES);
  const bodyType = optString(o.mediaType, `${what}.mediaType`);
  if (bodyType !== undefined && !isIndexMediaType(bodyType)) {
    if (isManifestMediaType(bodyType)) bad(what, `is an image manifest (${bodyType}), not an index`);
    unsupportedMediaType(what, bodyType, INDEX_MEDIA_TYPES);
  }
  if (declaredMediaType !== undefined && !isIndexMediaType(declaredMediaType)) {
    unsupportedMediaType(what, declaredMediaType, INDEX_MEDIA_TYPES);
  }
  if (bodyType !== undefined && declaredMediaType !== undefined && bodyType !== declaredMediaType) {
    bad(what, `media type ${bodyType} does not match the descriptor's ${declaredMediaType}`);
  }
  parseSchemaVersion(o, what);
  if (o.layers !== undefined) bad(what, 'has "layers": it is an image manifest, not an index');
  // index.json of an OCI layout often omits mediaType: it is an OCI index by definition.
  const mediaType = bodyType ?? declaredMediaType ?? OCI_INDEX;
  const manifests = asArray(o.manifests, `${what}.manifests`, MAX_INDEX_ENTRIES)
    .map((m, i) => parseDescriptor(m, `${what}.manifests[${i}]`));
  const idx: Index = { schemaVersion: 2, mediaType, manifests };
  const annotations = optStringMap(o.annotations, `${what}.annotations`);
  if (annotations !== undefined) idx.annotations = annotations;
  return idx;
}

function parseContainerConfig(v: Json, what: string): ContainerConfig {
  const o = asObject(v, what);
  const c: ContainerConfig = {};
  const user = optString(o.User, `${what}.User`);
  if (user !== undefined) c.User = user;
  const exposed = optObjectMap(o.ExposedPorts, `${what}.ExposedPorts`);
  if (exposed !== undefined) c.ExposedPorts = exposed;
  const env = optStringArray(o.Env, `${what}.Env`);
  if (env !== undefined) c.Env = env;
  const entrypoint = optStringArray(o.Entrypoint, `${what}.Entrypoint`);
  if (entrypoint !== undefined) c.Entrypoint = entrypoint;
  const cmd = optStringArray(o.Cmd, `${what}.Cmd`);
  if (cmd !== undefined) c.Cmd = cmd;
  const volumes = optObjectMap(o.Volumes, `${what}.Volumes`);
  if (volumes !== undefined) c.Volumes = volumes;
  const workdir = optString(o.WorkingDir, `${what}.WorkingDir`);
  if (workdir !== undefined) c.WorkingDir = workdir;
  const labels = optStringMap(o.Labels, `${what}.Labels`);
  if (labels !== undefined) c.Labels = labels;
  const stop = optString(o.StopSignal, `${what}.StopSignal`);
  if (stop !== undefined) c.StopSignal = stop;
  return c;
}

function parseHistoryEntry(v: Json, what: string): HistoryEntry {
  const o = asObject(v, what);
  const h: HistoryEntry = {};
  for (const k of ['created', 'created_by', 'author', 'comment'] as const) {
    const s = optString(o[k], `${what}.${k}`);
    if (s !== undefined) h[k] = s;
  }
  if (o.empty_layer !== undefined && o.empty_layer !== null) {
    if (typeof o.empty_layer !== 'boolean') bad(`${what}.empty_layer`, `expected a boolean, got ${typeName(o.empty_layer)}`);
    h.empty_layer = o.empty_layer;
  }
  return h;
}

/** Parses an image config (OCI or Docker: same fields for what cowshed uses). */
export function parseConfig(bytes: Uint8Array, what = 'config'): ImageConfig {
  const o = parseJsonObject(bytes, what, MAX_CONFIG_BYTES);
  const rootfs = asObject(o.rootfs, `${what}.rootfs`);
  if (rootfs.type !== 'layers') bad(`${what}.rootfs.type`, `expected "layers", got ${JSON.stringify(rootfs.type) ?? 'nothing'}`);
  const diffIds = asArray(rootfs.diff_ids, `${what}.rootfs.diff_ids`, MAX_LAYERS)
    .map((d, i) => validateDigest(d, `${what}.rootfs.diff_ids[${i}]`));
  const c: ImageConfig = {
    architecture: asString(o.architecture, `${what}.architecture`),
    os: asString(o.os, `${what}.os`),
    rootfs: { type: 'layers', diff_ids: diffIds },
  };
  const variant = optString(o.variant, `${what}.variant`);
  if (variant !== undefined) c.variant = variant;
  const created = optString(o.created, `${what}.created`);
  if (created !== undefined) c.created = created;
  const author = optString(o.author, `${what}.author`);
  if (author !== undefined) c.author = author;
  if (o.config !== undefined && o.config !== null) c.config = parseContainerConfig(o.config, `${what}.config`);
  if (o.history !== undefined && o.history !== null) {
    c.history = asArray(o.history, `${what}.history`, MAX_HISTORY).map((h, i) => parseHistoryEntry(h, `${what}.history[${i}]`));
  }
  return c;
}

/** "linux/amd64" or "linux/arm64/v8" → Platform; EINVAL for anything else. */
export function parsePlatformString(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new CowshedError('EINVAL', `invalid platform ${JSON.stringify(s)} (expected os/arch or os/arch/variant, e.g. linux/amd64)`);
  }
  const p: Platform = { os: parts[0], architecture: parts[1] };
  if (parts[2] !== undefined) p.variant = parts[2];
  return p;
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? '/' + p.variant : ''}`;
}
