// Push: an image of the store to a registry. Each layer is rebuilt from the
// store (the uncompressed tar byte for byte), compressed and uploaded,
// unless the registry already has it: the layer's original blob, or a blob
// cowshed pushed or pulled before (registry-blobs.json), is looked for with
// HEAD in the destination and mounted from another repository of the same
// registry. Then the config and an OCI manifest.

import { createHash } from 'node:crypto';
import { CowshedError } from '../util/errors.ts';
import { compress } from '../oci/compression.ts';
import type { ChunkedResult } from '../chunked/writer.ts';
import { chunkedKind } from '../chunked/format.ts';
import { OCI_CONFIG, OCI_MANIFEST, ociLayerMediaType, type Compression } from '../oci/media-types.ts';
import { sha256Digest } from '../oci/digest.ts';
import type { Store } from '../store/store.ts';
import { RegistryClient, formatRef, parseRegistryRef, pushScope, type TransportOptions } from './client.ts';
import { knownBlobs, recordBlobs, type KnownBlob } from './blob-cache.ts';

export interface PushOptions extends TransportOptions {
  creds?: string;
  /**
   * Compression of layers cowshed uploads (default gzip). Named explicitly,
   * only blobs of that compression are reused (for zstd:chunked, only blobs
   * known with their zstd:chunked annotations).
   */
  compression?: PushCompression;
  /** Blobs up to this size go in one request; bigger ones in PATCH chunks of this size (default 8 MiB). */
  chunkSize?: number;
  onLayer?: (e: { layer: number; layers: number; digest: string; size: number; action: LayerAction }) => void;
  client?: { maxAttempts?: number; retryDelayMs?: number; idleTimeoutMs?: number };
}

export type LayerAction = 'exists' | 'mounted' | 'uploaded';
export type PushCompression = 'gzip' | 'zstd' | 'zstd:chunked';

export interface PushResult {
  ref: string;
  /** Digest of the manifest pushed. */
  digest: string;
  /** Request body bytes sent (blobs, config, manifest). */
  bytesSent: number;
  layers: Array<{ digest: string; size: number; mediaType: string; action: LayerAction; annotations?: Record<string, string> }>;
  configUploaded: boolean;
}

const DEFAULT_CHUNK = 8 << 20;

export function compressionOf(mediaType: string): Compression {
  if (/[+.]gzip$/.test(mediaType)) return 'gzip';
  if (/\+zstd$/.test(mediaType)) return 'zstd';
  return 'none';
}

/**
 * Uploads a stream whose digest is not known in advance: one POST + PUT if
 * it fits in a chunk, else POST, PATCH per chunk, PUT with the digest.
 * Memory: one chunk.
 */
export async function uploadStream(client: RegistryClient, repo: string, source: AsyncIterable<Uint8Array>, chunkSize = DEFAULT_CHUNK): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let pending: Uint8Array[] = [];
  let pendingLen = 0;
  let session: string | undefined;
  let offset = 0;
  const flush = async (): Promise<void> => {
    const chunk = Buffer.concat(pending, pendingLen);
    pending = [];
    pendingLen = 0;
    session ??= await client.startUpload(repo);
    session = await client.uploadChunk(repo, session, chunk, offset);
    offset += chunk.length;
  };
  for await (const c of source) {
    hash.update(c);
    pending.push(c);
    pendingLen += c.length;
    if (pendingLen >= chunkSize) await flush();
  }
  const digest = `sha256:${hash.digest('hex')}`;
  const size = offset + pendingLen;
  if (session === undefined) {
    // Monolithic: the whole blob in the closing PUT.
    const body = Buffer.concat(pending, pendingLen);
    await client.finishUpload(repo, await client.startUpload(repo), digest, body);
  } else {
    if (pendingLen > 0) await flush();
    await client.finishUpload(repo, session, digest);
  }
  return { digest, size };
}

export async function pushImage(store: Store, imageRef: string, destRef: string, opts: PushOptions = {}): Promise<PushResult> {
  const details = store.imageRecord(imageRef);
  const r = parseRegistryRef(destRef);
  const where = formatRef(r);
  const repo = r.repository;
  const client = RegistryClient.forRef(r, { tlsVerify: opts.tlsVerify, creds: opts.creds, certDir: opts.certDir, registriesConf: opts.registriesConf, ...opts.client });
  const compression = opts.compression ?? 'gzip';
  const pushScopes = [pushScope(repo)];

  const layers: PushResult['layers'] = [];
  for (let i = 0; i < details.layers.length; i++) {
    const l = details.layers[i];
    const candidates: KnownBlob[] = [];
    // The blob the layer came in as: the registry may have it already (pulled from there).
    if (l.digest !== '' && l.digest.startsWith('sha256:')) candidates.push({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: l.diffId, repos: [] });
    for (const k of knownBlobs(store, r.registry, l.diffId)) {
      const c = candidates.find((x) => x.digest === k.digest);
      if (c) { c.repos = k.repos; c.annotations ??= k.annotations; }
      else candidates.push(k);
    }
    const usable = candidates.filter((c) => opts.compression === undefined
      || (compression === 'zstd:chunked' ? chunkedKind(c.annotations) === 'zstd:chunked' : compressionOf(c.mediaType) === compression));
    let placed: { digest: string; size: number; compression: Compression; action: LayerAction; annotations?: Record<string, string> } | undefined;
    for (const c of usable) {
      const size = await client.headBlob(repo, c.digest, pushScopes);
      if (size !== undefined) { placed = { digest: c.digest, size: c.size, compression: compressionOf(c.mediaType), action: 'exists', annotations: c.annotations }; break; }
    }
    if (!placed) {
      outer: for (const c of usable) {
        for (const from of c.repos) {
          if (from === repo) continue;
          if (await client.mountBlob(repo, c.digest, from)) {
            placed = { digest: c.digest, size: c.size, compression: compressionOf(c.mediaType), action: 'mounted', annotations: c.annotations };
            break outer;
          }
        }
      }
    }
    if (!placed) {
      const tar = store.layerTar(details.id, i);
      const chunked: Partial<ChunkedResult> = {};
      // The zstd:chunked writer (with a tar reader) loads only for that compression.
      const stream = compression === 'zstd:chunked' ? (await import('../chunked/writer.ts')).compressZstdChunked(tar, chunked) : compress(tar, compression);
      const up = await uploadStream(client, repo, stream, opts.chunkSize);
      placed = { ...up, compression: compression === 'zstd:chunked' ? 'zstd' : compression, action: 'uploaded', annotations: chunked.annotations };
      // Chunks the store now knows (an index: a failure only costs reuse later).
      if (chunked.files) try { (await import('../chunked/content-index.ts')).recordChunks(store, chunked.files); } catch { /* see above */ }
    }
    const mediaType = ociLayerMediaType(placed.compression);
    layers.push({ digest: placed.digest, size: placed.size, mediaType, action: placed.action, ...(placed.annotations ? { annotations: placed.annotations } : {}) });
    recordBlobs(store, r.registry, repo, [{ digest: placed.digest, size: placed.size, mediaType, diffId: l.diffId, annotations: placed.annotations }]);
    opts.onLayer?.({ layer: i, layers: details.layers.length, digest: placed.digest, size: placed.size, action: placed.action });
  }

  const configBytes = store.blobs.get(details.configDigest);
  if (sha256Digest(configBytes) !== details.configDigest) throw new CowshedError('ECORRUPT', `the store's config blob ${details.configDigest} does not match its digest: run cowshed fsck`);
  let configUploaded = false;
  if ((await client.headBlob(repo, details.configDigest, pushScopes)) === undefined) {
    await client.finishUpload(repo, await client.startUpload(repo), details.configDigest, configBytes);
    configUploaded = true;
  }

  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: details.configDigest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, ...(l.annotations ? { annotations: l.annotations } : {}) })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256Digest(manifestBytes);
  if (r.digest !== undefined && r.digest !== digest) {
    throw new CowshedError('EINVAL', `${where}: the manifest pushed would be ${digest}, not the digest named`);
  }
  await client.putManifest(repo, r.tag ?? digest, manifestBytes, OCI_MANIFEST);
  return { ref: where, digest, bytesSent: client.bytesSent, layers, configUploaded };
}
