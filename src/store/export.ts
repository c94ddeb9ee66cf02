// export: an image out of the store as an OCI layout, an OCI archive or a
// docker-archive (docker save format). Every layer is rebuilt byte for byte
// from its tar-split record, so its diff ID is the original; layers are
// compressed afresh (gzip by default) for OCI destinations, and stored
// uncompressed in docker archives, as docker save does. The config is
// written unchanged, so diff IDs, history and runtime config carry over.
import { createWriteStream, mkdtempSync, rmSync, renameSync, statSync, createReadStream, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join, basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { Store } from './store.ts';
import { compress } from '../oci/compression.ts';
import { compressZstdChunked, type ChunkedResult } from '../chunked/writer.ts';
import { recordChunks } from '../chunked/content-index.ts';
import { OCI_CONFIG, OCI_MANIFEST, ociLayerMediaType } from '../oci/media-types.ts';
import type { Descriptor, Manifest } from '../oci/types.ts';
import { addToIndex, initLayout } from '../oci/layout-index.ts';
import { writeOciBlob } from '../oci/layout-writer.ts';
import { writeTar, type TarHeaderInput } from '../tar/writer.ts';
import { fail } from '../util/errors.ts';
import { asSpaceError } from '../util/fs.ts';

export type ExportCompression = 'gzip' | 'zstd' | 'zstd:chunked' | 'none';

export interface ExportOptions {
  compression?: ExportCompression;
  onProgress?: (layer: number, layers: number) => void;
}

export interface ExportResult { dest: string; manifestDigest?: string; layers: number; bytes: number }

/** Parse `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REPO:TAG]`. */
function parseDest(dest: string): { transport: 'oci' | 'oci-archive' | 'docker-archive'; path: string; tag?: string } {
  const colon = dest.indexOf(':');
  const transport = dest.slice(0, colon);
  if (colon < 0 || !['oci', 'oci-archive', 'docker-archive'].includes(transport)) {
    fail('EINVAL', `unknown export destination ${JSON.stringify(dest)}: use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REPO:TAG]`);
  }
  const rest = dest.slice(colon + 1);
  const sep = rest.indexOf(':');
  const path = sep < 0 ? rest : rest.slice(0, sep);
  if (path === '') fail('EINVAL', `export destination ${JSON.stringify(dest)} has no path`);
  return { transport: transport as 'oci', path, tag: sep < 0 ? undefined : rest.slice(sep + 1) || undefined };
}

export async function exportImage(store: Store, ref: string, dest: string, opts: ExportOptions = {}): Promise<ExportResult> {
  const d = parseDest(dest);
  const info = store.imageRecord(ref);
  if (d.transport === 'docker-archive') return exportDockerArchive(store, ref, d.path, d.tag ?? info.names[0], opts);
  const tag = d.tag ?? (info.names[0]?.split(':').pop());
  if (d.transport === 'oci') return exportLayout(store, ref, d.path, tag, opts);
  // oci-archive: a layout in a temp dir beside the file, then packed into it.
  const tmp = mkdtempSync(join(dirname(d.path), `.${basename(d.path)}.`));
  try {
    const r = await exportLayout(store, ref, tmp, tag, opts);
    await writeArchive(d.path, tmp);
    return { ...r, dest };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function exportLayout(store: Store, ref: string, dir: string, tag: string | undefined, opts: ExportOptions): Promise<ExportResult> {
  const info = store.imageRecord(ref);
  const compression = opts.compression ?? 'gzip';
  await initLayout(dir);
  const blobs = join(dir, 'blobs', 'sha256');
  const layers: Descriptor[] = [];
  let bytes = 0;
  for (let i = 0; i < info.layers.length; i++) {
    opts.onProgress?.(i, info.layers.length);
    const tar = store.layerTar(ref, i);
    const chunked: Partial<ChunkedResult> = {};
    const stream = compression === 'none' ? tar : compression === 'zstd:chunked' ? compressZstdChunked(tar, chunked) : compress(tar, compression);
    const blob = await writeBlobStream(blobs, stream);
    const d: Descriptor = { mediaType: ociLayerMediaType(compression === 'zstd:chunked' ? 'zstd' : compression), digest: blob.digest, size: blob.size };
    if (chunked.annotations) d.annotations = chunked.annotations;
    // Chunks the store now knows (an index: a failure only costs reuse later).
    if (chunked.files) try { recordChunks(store, chunked.files); } catch { /* see above */ }
    layers.push(d);
    bytes += blob.size;
  }
  const configBytes = store.blobs.get(info.configDigest);
  const configDigest = await writeOciBlob(dir, configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: configBytes.length },
    layers,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await writeOciBlob(dir, manifestBytes);
  await addToIndex(dir, { mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifestBytes.length }, tag);
  return { dest: `oci:${dir}`, manifestDigest, layers: layers.length, bytes };
}

/** Stream into a temp file while hashing, then rename it to its digest. */
async function writeBlobStream(dir: string, source: AsyncIterable<Uint8Array>): Promise<{ digest: string; size: number }> {
  const tmp = join(dir, `.tmp-${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2)}`);
  const hash = createHash('sha256');
  let size = 0;
  try {
    await pipeline(Readable.from((async function* () {
      for await (const c of source) {
        hash.update(c);
        size += c.length;
        yield c;
      }
    })()), createWriteStream(tmp));
  } catch (e) {
    rmSync(tmp, { force: true });
    throw asSpaceError(e, tmp);
  }
  const digest = `sha256:${hash.digest('hex')}`;
  renameSync(tmp, join(dir, digest.slice(7)));
  return { digest, size };
}

/** Pack a directory (an OCI layout) into a tar file, atomically. */
async function writeArchive(file: string, dir: string): Promise<void> {
  const entries = function* (): Generator<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> {
    const visit = function* (rel: string): Generator<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> {
      for (const name of readdirSync(join(dir, rel)).sort()) {
        const p = rel ? `${rel}/${name}` : name;
        const st = statSync(join(dir, p));
        if (st.isDirectory()) {
          yield { header: { path: `${p}/`, type: 'dir', mode: 0o755, mtimeSec: 0 } };
          yield* visit(p);
        } else {
          yield { header: { path: p, type: 'file', mode: 0o644, size: st.size, mtimeSec: 0 }, body: createReadStream(join(dir, p)) };
        }
      }
    };
    yield* visit('');
  };
  await writeTarFile(file, writeTar(entries()));
}

async function writeTarFile(file: string, tar: AsyncIterable<Uint8Array>): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await pipeline(Readable.from(tar), createWriteStream(tmp));
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw asSpaceError(e, file);
  }
}

/** docker save format: manifest.json, the config, one uncompressed tar per layer. */
async function exportDockerArchive(store: Store, ref: string, file: string, repoTag: string | undefined, opts: ExportOptions): Promise<ExportResult> {
  const info = store.imageRecord(ref);
  const configBytes = store.blobs.get(info.configDigest);
  const configName = `${info.configDigest.slice(7)}.json`;
  const layerNames = info.layers.map((l) => `${l.diffId.slice(7)}/layer.tar`);
  const manifest = [{ Config: configName, RepoTags: repoTag ? [repoTag] : [], Layers: layerNames }];
  const entries = async function* (): AsyncGenerator<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> {
    const seen = new Set<string>();
    for (let i = 0; i < info.layers.length; i++) {
      opts.onProgress?.(i, info.layers.length);
      const name = layerNames[i]!;
      if (seen.has(name)) continue; // the same layer twice: docker save stores it once
      seen.add(name);
      yield { header: { path: `${name.split('/')[0]}/`, type: 'dir', mode: 0o755, mtimeSec: 0 } };
      yield { header: { path: name, type: 'file', mode: 0o644, size: info.layers[i]!.tarSize, mtimeSec: 0 }, body: store.layerTar(ref, i) };
    }
    yield { header: { path: configName, type: 'file', mode: 0o644, size: configBytes.length, mtimeSec: 0 }, body: once(configBytes) };
    const m = Buffer.from(JSON.stringify(manifest));
    yield { header: { path: 'manifest.json', type: 'file', mode: 0o644, size: m.length, mtimeSec: 0 }, body: once(m) };
  };
  await writeTarFile(file, writeTar(entries()));
  return { dest: `docker-archive:${file}`, layers: info.layers.length, bytes: statSync(file).size };
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}
