// The delta format: what a client needs to rebuild image `to` from what it
// already stores (any image: objects are shared), as an OCI artifact.
//
// A delta is one index blob and a few pack blobs of bounded size. A pack is
// the entries' bytes back to back; the index says, per entry, what it
// rebuilds, from what, and where its bytes are, so a client fetches by Range
// only the entries it needs:
//
//   entry    { o, s, b?, p, off, len, k }
//     o      what it rebuilds: an object's fs-verity digest (hex), or for a
//            layer's tar-split record the sha256 (hex) of its uncompressed bytes
//     s      the rebuilt size in bytes (a bound for decompression: no bombs)
//     b      base: for `patch` an object (hex) of the base image; for
//            `split-patch` the diff ID (hex) of a layer whose tar-split record
//            is the dictionary
//     p, off, len   pack number, byte offset and length in that pack
//     k      kind: `patch` (zstd, the base object as dictionary), `zstd`
//            (the object compressed on its own), `raw` (the bytes as they are),
//            `split-patch`, `split-zstd` (a layer's uncompressed tar-split record)
//
// The index (zstd-compressed JSON) also carries the target's manifest and
// config bytes and, per layer, its diff ID and the entry of its tar-split
// record. Nothing in a delta needs trust: every rebuilt object is checked
// against its fs-verity digest, every split against its sha256, every layer
// against its diff ID, the manifest against the digest the client asked for.
import { zstdCompressSync, zstdDecompressSync, constants as zc } from 'node:zlib';
import { sha256Hex } from '../oci/digest.ts';
import { CowshedError } from '../util/errors.ts';

export const DELTA_ARTIFACT_TYPE = 'application/vnd.cowshed.delta.v1';
export const DELTA_INDEX_MEDIA_TYPE = 'application/vnd.cowshed.delta.index.v1+json+zstd';
export const DELTA_PACK_MEDIA_TYPE = 'application/vnd.cowshed.delta.pack.v1';
export const EMPTY_CONFIG_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
export const EMPTY_CONFIG = Buffer.from('{}');
export const ANNOTATION_FROM = 'io.github.cowshed.delta.from';
export const ANNOTATION_TO = 'io.github.cowshed.delta.to';
export const ANNOTATION_BYTES = 'io.github.cowshed.delta.bytes';

/** A pack never grows past this (a few blobs of bounded size). */
export const PACK_MAX = 32 << 20;
/** Bounds on what an index may claim, so a hostile one cannot make a client allocate without limit. */
export const MAX_INDEX_BYTES = 16 << 20;
export const MAX_ENTRY_SIZE = 1 << 30;
export const MAX_SPLIT_SIZE = 256 << 20;
export const MAX_ENTRIES = 1 << 20;
export const MAX_PACKS = 4096;

export type EntryKind = 'patch' | 'zstd' | 'raw' | 'split-patch' | 'split-zstd';
const KINDS: ReadonlySet<string> = new Set(['patch', 'zstd', 'raw', 'split-patch', 'split-zstd']);

export interface DeltaEntry {
  o: string;
  s: number;
  b?: string;
  p: number;
  off: number;
  len: number;
  k: EntryKind;
}

export interface DeltaLayer {
  diffId: string;
  /** Index into entries: the layer's tar-split record. */
  split: number;
}

export interface DeltaIndex {
  version: 1;
  from: { manifest: string; layers: string[] };
  to: { manifest: string; mediaType: string; manifestBytes: Buffer; configBytes: Buffer };
  packs: Array<{ digest: string; size: number }>;
  layers: DeltaLayer[];
  entries: DeltaEntry[];
  /** The target's name where it was made (a default for `delta apply`; display only). */
  name?: string;
}

const HEX64 = /^[0-9a-f]{64}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function encodeIndex(ix: DeltaIndex): Buffer {
  const json = JSON.stringify({
    ...ix,
    to: { ...ix.to, manifestBytes: ix.to.manifestBytes.toString('base64'), configBytes: ix.to.configBytes.toString('base64') },
  });
  return zstdCompressSync(Buffer.from(json), { params: { [zc.ZSTD_c_compressionLevel]: 19 } });
}

function bad(what: string): never {
  throw new CowshedError('EFORMAT', `delta index: ${what}`);
}

const isNat = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

/** Parses and checks an index blob: shapes, bounds, and every entry inside its pack. */
export function decodeIndex(blob: Uint8Array): DeltaIndex {
  let raw: unknown;
  try {
    const json = zstdDecompressSync(blob, { maxOutputLength: MAX_INDEX_BYTES });
    raw = JSON.parse(json.toString('utf8'));
  } catch {
    bad('not zstd-compressed JSON (or larger than 16 MiB)');
  }
  if (typeof raw !== 'object' || raw === null) bad('not an object');
  const r = raw as Record<string, unknown>;
  if (r.version !== 1) bad(`unknown version ${JSON.stringify(r.version)}`);
  const from = r.from as Record<string, unknown> | undefined;
  if (typeof from !== 'object' || from === null || typeof from.manifest !== 'string' || !DIGEST.test(from.manifest)) bad('bad from.manifest');
  if (!Array.isArray(from.layers) || !from.layers.every((l) => typeof l === 'string' && DIGEST.test(l))) bad('bad from.layers');
  const to = r.to as Record<string, unknown> | undefined;
  if (typeof to !== 'object' || to === null || typeof to.manifest !== 'string' || !DIGEST.test(to.manifest)) bad('bad to.manifest');
  if (typeof to.mediaType !== 'string' || typeof to.manifestBytes !== 'string' || typeof to.configBytes !== 'string') bad('bad to');
  const manifestBytes = Buffer.from(to.manifestBytes, 'base64');
  const configBytes = Buffer.from(to.configBytes, 'base64');
  if (`sha256:${sha256Hex(manifestBytes)}` !== to.manifest) bad('the manifest it carries is not the one it names');
  if (!Array.isArray(r.packs) || r.packs.length > MAX_PACKS) bad('bad packs');
  const packs = (r.packs as unknown[]).map((p, i) => {
    const q = p as Record<string, unknown>;
    if (typeof q !== 'object' || q === null || typeof q.digest !== 'string' || !DIGEST.test(q.digest) || !isNat(q.size)) bad(`bad pack ${i}`);
    return { digest: q.digest, size: q.size };
  });
  if (!Array.isArray(r.entries) || r.entries.length > MAX_ENTRIES) bad('bad entries');
  const entries = (r.entries as unknown[]).map((e, i): DeltaEntry => {
    const q = e as Record<string, unknown>;
    if (typeof q !== 'object' || q === null) bad(`entry ${i} is not an object`);
    const { o, s, b, p, off, len, k } = q;
    if (typeof k !== 'string' || !KINDS.has(k)) bad(`entry ${i}: unknown kind ${JSON.stringify(k)}`);
    if (typeof o !== 'string' || !HEX64.test(o)) bad(`entry ${i}: bad digest`);
    const split = k.startsWith('split-');
    if (!isNat(s, split ? MAX_SPLIT_SIZE : MAX_ENTRY_SIZE)) bad(`entry ${i}: bad size`);
    if (!isNat(p) || p >= packs.length) bad(`entry ${i}: pack ${String(p)} does not exist`);
    if (!isNat(off) || !isNat(len) || off + len > packs[p].size) bad(`entry ${i}: bytes ${String(off)}+${String(len)} lie outside pack ${p}`);
    if (k === 'raw' && len !== s) bad(`entry ${i}: raw entry of ${len} bytes for ${s}`);
    const needsBase = k === 'patch' || k === 'split-patch';
    if (needsBase ? typeof b !== 'string' || !HEX64.test(b) : b !== undefined) bad(`entry ${i}: bad base`);
    return needsBase ? { o, s, b: b as string, p, off, len, k: k as EntryKind } : { o, s, p, off, len, k: k as EntryKind };
  });
  if (!Array.isArray(r.layers)) bad('bad layers');
  const layers = (r.layers as unknown[]).map((l, i): DeltaLayer => {
    const q = l as Record<string, unknown>;
    if (typeof q !== 'object' || q === null || typeof q.diffId !== 'string' || !DIGEST.test(q.diffId)) bad(`layer ${i}: bad diff ID`);
    if (!isNat(q.split) || q.split >= entries.length || !entries[q.split].k.startsWith('split-')) bad(`layer ${i}: bad split entry`);
    return { diffId: q.diffId, split: q.split };
  });
  if (r.name !== undefined && (typeof r.name !== 'string' || r.name.length > 1024)) bad('bad name');
  return {
    ...(typeof r.name === 'string' ? { name: r.name } : {}),
    version: 1,
    from: { manifest: from.manifest, layers: from.layers as string[] },
    to: { manifest: to.manifest, mediaType: to.mediaType, manifestBytes, configBytes },
    packs, layers, entries,
  };
}

/** zstd parameters for a patch or a plain compression of `size` bytes against a dictionary of `dictSize`. */
export function zstdParams(size: number, dictSize: number): Record<number, number> {
  const level = size <= 256 << 10 ? 12 : size <= 4 << 20 ? 6 : 3;
  const params: Record<number, number> = { [zc.ZSTD_c_compressionLevel]: level, [zc.ZSTD_c_checksumFlag]: 0 };
  // The window must reach back over the whole dictionary (zstd --patch-from does the same).
  const need = Math.ceil(Math.log2(Math.max(1024, size + dictSize)));
  if (dictSize > 0 && need > 20) params[zc.ZSTD_c_windowLog] = Math.min(need, WINDOW_LOG_MAX);
  return params;
}
export const WINDOW_LOG_MAX = 27;

/**
 * Rebuilds an entry's bytes from its packed bytes (and base, for patches).
 * Output is bounded by the size the index states: a zstd bomb fails here.
 */
export function decodeEntry(e: DeltaEntry, packed: Uint8Array, base: Uint8Array | undefined): Buffer {
  if (packed.length !== e.len) throw new CowshedError('EFORMAT', `delta entry ${e.o.slice(0, 12)}: ${packed.length} bytes instead of ${e.len}`);
  if (e.k === 'raw') return Buffer.from(packed);
  const opts: { maxOutputLength: number; dictionary?: Uint8Array; params: Record<number, number> } = {
    maxOutputLength: Math.max(1, e.s),
    params: { [zc.ZSTD_d_windowLogMax]: WINDOW_LOG_MAX },
  };
  if (e.k === 'patch' || e.k === 'split-patch') {
    if (base === undefined) throw new CowshedError('ENOENT', `delta entry ${e.o.slice(0, 12)}: base ${e.b?.slice(0, 12)} is missing`);
    opts.dictionary = base;
  }
  let out: Buffer;
  try {
    out = zstdDecompressSync(packed, opts);
  } catch (err) {
    throw new CowshedError('EFORMAT', `delta entry ${e.o.slice(0, 12)}: does not decompress to its ${e.s} bytes`, { cause: err });
  }
  if (out.length !== e.s) throw new CowshedError('EFORMAT', `delta entry ${e.o.slice(0, 12)}: ${out.length} bytes instead of ${e.s}`);
  return out;
}
