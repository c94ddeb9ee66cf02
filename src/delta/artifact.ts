// A delta as an OCI artifact: a manifest with artifactType
// application/vnd.cowshed.delta.v1, the empty config, the index as its first
// layer and the packs after it, and `subject` = the target image's manifest
// (so registries list it among the target's referrers). Written to and read
// from an OCI layout directory (oci:DIR[:TAG]) or a file (the same layout as
// a tar, as oci-archive is); registries: src/delta/registry.ts.
import { createReadStream, mkdtempSync, readdirSync, rmSync, statSync, renameSync, createWriteStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { addToIndex, initLayout } from '../oci/layout-index.ts';
import { writeOciBlob } from '../oci/layout-writer.ts';
import { OCI_MANIFEST, REF_NAME_ANNOTATION } from '../oci/media-types.ts';
import { sha256Digest } from '../oci/digest.ts';
import { indexTarArchive } from '../tar/archive-index.ts';
import { writeTar, type TarHeaderInput } from '../tar/writer.ts';
import { CowshedError, errno, fail } from '../util/errors.ts';
import {
  ANNOTATION_BYTES, ANNOTATION_FROM, ANNOTATION_TO, DELTA_ARTIFACT_TYPE, DELTA_INDEX_MEDIA_TYPE, DELTA_PACK_MEDIA_TYPE,
  EMPTY_CONFIG, EMPTY_CONFIG_MEDIA_TYPE, MAX_INDEX_BYTES, MAX_PACKS, decodeIndex, encodeIndex, type DeltaIndex,
} from './format.ts';
import type { Delta } from './create.ts';
import type { Descriptor } from '../oci/types.ts';

const MAX_MANIFEST = 1 << 20;

export interface DeltaManifest {
  bytes: Buffer;
  digest: string;
  index: Descriptor;
  packs: Descriptor[];
  from: string;
  to: string;
}

/** The artifact manifest for a delta whose index blob is `indexBlob`. */
export function deltaManifest(delta: Delta, indexBlob: Buffer): Buffer {
  const ix = delta.index;
  const total = indexBlob.length + ix.packs.reduce((a, p) => a + p.size, 0);
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType: DELTA_ARTIFACT_TYPE,
    config: { mediaType: EMPTY_CONFIG_MEDIA_TYPE, digest: sha256Digest(EMPTY_CONFIG), size: EMPTY_CONFIG.length },
    layers: [
      { mediaType: DELTA_INDEX_MEDIA_TYPE, digest: sha256Digest(indexBlob), size: indexBlob.length },
      ...ix.packs.map((p) => ({ mediaType: DELTA_PACK_MEDIA_TYPE, digest: p.digest, size: p.size })),
    ],
    subject: { mediaType: ix.to.mediaType, digest: ix.to.manifest, size: ix.to.manifestBytes.length },
    annotations: { [ANNOTATION_FROM]: ix.from.manifest, [ANNOTATION_TO]: ix.to.manifest, [ANNOTATION_BYTES]: String(total) },
  }));
}

/** Checks an artifact manifest's shape; the index and packs it names. */
export function parseDeltaManifest(bytes: Buffer, where: string): DeltaManifest {
  const bad = (what: string): never => { throw new CowshedError('EFORMAT', `${where}: not a cowshed delta (${what})`); };
  let m: Record<string, unknown>;
  try { m = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>; } catch { return bad('manifest is not JSON'); }
  if (typeof m !== 'object' || m === null || m.artifactType !== DELTA_ARTIFACT_TYPE) bad('wrong artifactType');
  const layers = m.layers;
  const isDesc = (d: unknown): d is Descriptor => typeof d === 'object' && d !== null && typeof (d as Descriptor).digest === 'string'
    && /^sha256:[0-9a-f]{64}$/.test((d as Descriptor).digest) && Number.isSafeInteger((d as Descriptor).size) && (d as Descriptor).size >= 0;
  if (!Array.isArray(layers) || layers.length < 1 || layers.length > MAX_PACKS + 1 || !layers.every(isDesc)) bad('bad layers');
  const ls = layers as Descriptor[];
  if (ls[0].mediaType !== DELTA_INDEX_MEDIA_TYPE || ls[0].size > MAX_INDEX_BYTES) bad('no index');
  if (!ls.slice(1).every((d) => d.mediaType === DELTA_PACK_MEDIA_TYPE)) bad('unknown layer media type');
  const ann = (m.annotations ?? {}) as Record<string, unknown>;
  const from = ann[ANNOTATION_FROM];
  const to = ann[ANNOTATION_TO];
  if (typeof from !== 'string' || typeof to !== 'string') bad('no from/to annotations');
  return { bytes, digest: sha256Digest(bytes), index: ls[0], packs: ls.slice(1), from: from as string, to: to as string };
}

/** Checks that the index belongs to the manifest (its packs are the manifest's). */
export function checkIndexAgainst(m: DeltaManifest, ix: DeltaIndex, where: string): void {
  const same = ix.packs.length === m.packs.length && ix.packs.every((p, i) => p.digest === m.packs[i].digest && p.size === m.packs[i].size);
  if (!same) throw new CowshedError('EFORMAT', `${where}: the delta index does not describe the packs its manifest lists`);
  if (ix.to.manifest !== m.to || ix.from.manifest !== m.from) throw new CowshedError('EFORMAT', `${where}: the delta index and its manifest disagree on from/to`);
}

/** Something a delta's blobs can be read from, whole or by byte range. */
export interface DeltaReader {
  where: string;
  manifest: DeltaManifest;
  index: DeltaIndex;
  /** Bytes of blobs read so far (the index included). */
  bytesRead: number;
  readRange(pack: number, offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** Bytes read so far by all of these readers together. */
export const bytesReadBy = (readers: DeltaReader[]): number => readers.reduce((a, r) => a + r.bytesRead, 0);

// ---- writing

/** Writes a delta into an OCI layout directory under `tag` (optional). Returns the artifact manifest digest. */
export async function writeDeltaLayout(dir: string, delta: Delta, tag?: string): Promise<{ digest: string; bytes: number }> {
  await initLayout(dir);
  const indexBlob = encodeIndex(delta.index);
  await writeOciBlob(dir, EMPTY_CONFIG);
  await writeOciBlob(dir, indexBlob);
  for (const p of delta.packs) await writeOciBlob(dir, p);
  const manifest = deltaManifest(delta, indexBlob);
  const digest = await writeOciBlob(dir, manifest);
  await addToIndex(dir, { mediaType: OCI_MANIFEST, artifactType: DELTA_ARTIFACT_TYPE, digest, size: manifest.length }, tag);
  return { digest, bytes: indexBlob.length + delta.packs.reduce((a, p) => a + p.length, 0) };
}

/** Writes a delta as one file (its OCI layout as a tar), atomically. */
export async function writeDeltaFile(file: string, delta: Delta): Promise<{ digest: string; bytes: number }> {
  const tmpDir = mkdtempSync(join(dirname(file), `.${basename(file)}.tmp-`));
  const tmpFile = `${tmpDir}.tar`;
  try {
    const r = await writeDeltaLayout(tmpDir, delta);
    const entries = function* (): Generator<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> {
      const visit = function* (rel: string): Generator<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> {
        for (const name of readdirSync(join(tmpDir, rel)).sort()) {
          const p = rel ? `${rel}/${name}` : name;
          const st = statSync(join(tmpDir, p));
          if (st.isDirectory()) {
            yield { header: { path: `${p}/`, type: 'dir', mode: 0o755, mtimeSec: 0 } };
            yield* visit(p);
          } else {
            yield { header: { path: p, type: 'file', mode: 0o644, size: st.size, mtimeSec: 0 }, body: createReadStream(join(tmpDir, p)) };
          }
        }
      };
      yield* visit('');
    };
    await pipeline(Readable.from(writeTar(entries())), createWriteStream(tmpFile));
    renameSync(tmpFile, file);
    return r;
  } catch (e) {
    if (errno(e) === 'ENOSPC') fail('ENOSPC', `not enough space to write ${file}`, e);
    throw e;
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
    rmSync(tmpFile, { force: true });
  }
}

// ---- reading (local)

interface Files {
  read(path: string, max: number): Promise<Buffer>;
  range(path: string, offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

async function readRangeOf(file: string, start: number, length: number, where: string): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, start);
    if (bytesRead !== length) throw new CowshedError('EFORMAT', `${where}: cut short (${bytesRead} of ${length} bytes at ${start})`);
    return buf;
  } finally {
    await fh.close();
  }
}

function dirFiles(dir: string): Files {
  return {
    async read(path, max) {
      const p = join(dir, path);
      let st;
      try { st = statSync(p); } catch { throw new CowshedError('EFORMAT', `${dir}: ${path} is missing`); }
      if (st.size > max) throw new CowshedError('EFORMAT', `${dir}: ${path} is too big`);
      return readFile(p);
    },
    range: (path, offset, length) => readRangeOf(join(dir, path), offset, length, `${dir}: ${path}`),
    async close() { /* nothing held */ },
  };
}

async function archiveFiles(file: string): Promise<Files> {
  let members: Map<string, { offset: number; size: number }>;
  try { members = await indexTarArchive(file); } catch (e) {
    if (e instanceof CowshedError) throw new CowshedError('EFORMAT', `${file}: not a delta file (${e.message})`, { cause: e });
    throw e;
  }
  const member = (path: string) => members.get(path) ?? fail('EFORMAT', `${file}: ${path} is missing`);
  return {
    async read(path, max) {
      const m = member(path);
      if (m.size > max) fail('EFORMAT', `${file}: ${path} is too big`);
      return readRangeOf(file, m.offset, m.size, `${file}: ${path}`);
    },
    async range(path, offset, length) {
      const m = member(path);
      if (offset + length > m.size) fail('EFORMAT', `${file}: ${path}: bytes ${offset}+${length} lie outside it`);
      return readRangeOf(file, m.offset + offset, length, `${file}: ${path}`);
    },
    async close() { /* nothing held */ },
  };
}

const blobPath = (digest: string): string => `blobs/sha256/${digest.slice(7)}`;

/** Opens `oci:DIR[:TAG]` or a delta file. */
export async function openLocalDelta(ref: string): Promise<DeltaReader> {
  let files: Files;
  let tag: string | undefined;
  let where = ref;
  if (ref.startsWith('oci:')) {
    let dir = ref.slice(4);
    const i = dir.lastIndexOf(':');
    if (i > 0) {
      try { statSync(dir); } catch { tag = dir.slice(i + 1); dir = dir.slice(0, i); }
    }
    try { statSync(join(dir, 'index.json')); } catch { fail('ENOENT', `${dir}: not an OCI layout (no index.json)`); }
    files = dirFiles(dir);
    where = dir;
  } else {
    try { statSync(ref); } catch { fail('ENOENT', `no such delta file: ${ref}`); }
    files = await archiveFiles(ref);
  }
  let top: { manifests?: Descriptor[] };
  try { top = JSON.parse((await files.read('index.json', MAX_MANIFEST)).toString('utf8')) as { manifests?: Descriptor[] }; } catch (e) {
    if (e instanceof CowshedError) throw e;
    return fail('EFORMAT', `${where}: index.json is not JSON`);
  }
  const cands = (Array.isArray(top.manifests) ? top.manifests : []).filter((d) => tag === undefined
    ? d.artifactType === DELTA_ARTIFACT_TYPE || d.artifactType === undefined
    : d.annotations?.[REF_NAME_ANNOTATION] === tag);
  if (cands.length === 0) fail('ENOENT', `${where}: no delta${tag ? ` tagged ${tag}` : ''}`);
  if (cands.length > 1) fail('EINVAL', `${where}: holds ${cands.length} manifests; name one as oci:DIR:TAG`);
  const d = cands[0];
  if (typeof d.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(d.digest)) fail('EFORMAT', `${where}: bad manifest digest in index.json`);
  const mbytes = await files.read(blobPath(d.digest), MAX_MANIFEST);
  if (sha256Digest(mbytes) !== d.digest) fail('EDIGEST', `${where}: manifest ${d.digest} does not match its digest`);
  const manifest = parseDeltaManifest(mbytes, where);
  const ixBlob = await files.read(blobPath(manifest.index.digest), MAX_INDEX_BYTES);
  if (sha256Digest(ixBlob) !== manifest.index.digest) fail('EDIGEST', `${where}: delta index does not match its digest`);
  const index = decodeIndex(ixBlob);
  checkIndexAgainst(manifest, index, where);
  const reader: DeltaReader = {
    where,
    manifest,
    index,
    bytesRead: ixBlob.length,
    async readRange(pack, offset, length) {
      const p = index.packs[pack];
      if (p === undefined || offset + length > p.size) fail('EFORMAT', `${where}: range outside pack ${pack}`);
      const b = await files.range(blobPath(p.digest), offset, length);
      reader.bytesRead += length;
      return b;
    },
    close: () => files.close(),
  };
  return reader;
}
