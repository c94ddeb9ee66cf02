// Pull: an image in a registry as an ImageSource (the interface of
// src/oci/source.ts), so the store imports it like any other. Layer blobs
// stream from the registry straight into the import: digest and size are
// checked while they stream, the diff ID at the end of the tar.

import { CowshedError, isCowshedError } from '../util/errors.ts';
import { decompress } from '../oci/compression.ts';
import { sha256Digest, verifyDigest } from '../oci/digest.ts';
import { DEFAULT_PLATFORM, type ImageSource, type LayerRef } from '../oci/source.ts';
import { isIndexMediaType, isManifestMediaType } from '../oci/media-types.ts';
import {
  formatPlatform, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, parseConfig, parseIndex, parseManifest, parsePlatformString,
  type Descriptor, type Platform,
} from '../oci/types.ts';
import type { PlanOptions, Store } from '../store/store.ts';
import type { ImportOptions, ImportProgress, ImportResult } from '../store/import.ts';
import { RegistryClient, formatRef, imageNameFor, parseRegistryRef, type BlobStreamStats, type RegistryRef, type TransportOptions } from './client.ts';
import { loadRegistriesConf, pullEndpoints, resolveShortName } from './config.ts';
import { recordBlobs } from './blob-cache.ts';
import { chunkedKind } from '../chunked/format.ts';
import type { LayerReport } from '../plan/layers.ts';
import { fetchBlobRanges, newRangeStats } from './ranges.ts';

export interface PullOptions extends TransportOptions {
  creds?: string;
  platform?: string;
  /** Blobs already at hand (the store's): a config found here is not fetched again. */
  localBlob?: (digest: string) => Buffer | undefined;
  /**
   * A layer's uncompressed tar rebuilt locally (from the store), by diff ID:
   * such a layer is not fetched at all. The tar is still verified against
   * the diff ID.
   */
  localLayer?: (diffId: string) => (() => AsyncIterable<Uint8Array>) | undefined;
  /**
   * The signature policy (src/trust): called once the manifest and config
   * are verified, before any layer is read or anything stored; throws to
   * refuse the image, or returns hooks for the import.
   */
  admit?: (src: RegistrySource) => Promise<Pick<ImportOptions, 'beforeCommit' | 'inTransaction' | 'singleImage'>>;
  /** Look for deltas to the image (src/delta) before fetching layers; default true (pull --no-deltas: false). */
  deltas?: boolean;
  /** Retry tuning (tests). */
  client?: { maxAttempts?: number; retryDelayMs?: number; idleTimeoutMs?: number };
  /**
   * Reading only the files the store lacks from zstd:chunked layers (the
   * planner, src/plan/layers.ts): on by default in pullImage; false pulls
   * every layer whole; chunks: false fetches a file the store lacks whole
   * even when stored objects hold some of its chunks (benchmarks).
   */
  partial?: false | { maxRanges?: number; chunks?: false };
}

export type { LayerReport } from '../plan/layers.ts';

/** Per-layer download progress: compressed bytes received of the blob. */
export interface BlobProgress { layer: number; layers: number; digest: string; received: number; size: number; done: boolean; /** Rebuilt from the store, not fetched. */ local?: boolean }

export interface RegistrySource extends ImageSource {
  /** The image as named (after short-name resolution): its local name comes from here. */
  registryRef: RegistryRef;
  /** Where it is read from: the registry itself or one of its mirrors (registries.conf). */
  endpointRef: RegistryRef;
  client: RegistryClient;
  /** Blob bytes received, blob GET requests made, of which resumed with Range. */
  stats: BlobStreamStats;
  /** Layers read from the store instead of the registry. */
  localLayers: number;
  onBlobProgress?: (p: BlobProgress) => void;
  /** Ranges per request at most (tests; default 1024). */
  maxRanges?: number;
}

const MAX_INDEX_DEPTH = 4;

function matches(p: Platform | undefined, want: Platform): boolean {
  return p !== undefined && p.os === want.os && p.architecture === want.architecture && (want.variant === undefined || p.variant === want.variant);
}

function pickPlatform(ds: Descriptor[], want: Platform, where: string): Descriptor {
  const hits = ds.filter((d) => matches(d.platform, want));
  if (hits.length === 0) {
    const available = [...new Set(ds.filter((d) => d.platform).map((d) => formatPlatform(d.platform as Platform)))];
    throw new CowshedError('EUNSUPPORTED', `${where}: no image for platform ${formatPlatform(want)} (available: ${available.length ? available.join(', ') : 'none declared'}); choose one with --platform`);
  }
  return hits.find((d) => d.platform?.variant === undefined) ?? hits[0];
}

/**
 * Opens an image in a registry; manifest and config are fetched and
 * verified now, layers when read. A short name is resolved through
 * registries.conf (aliases, then unqualified-search-registries, each tried
 * in turn); each name is read from its mirrors in order, then from the
 * registry itself, the first that serves the manifest and config winning.
 */
export async function openRegistrySource(ref: string, opts: PullOptions = {}): Promise<RegistrySource> {
  const conf = loadRegistriesConf(opts.registriesConf);
  const resolved = resolveShortName(conf, ref);
  const failures: Array<{ where: string; error: CowshedError }> = [];
  for (const candidate of resolved.refs) {
    const origin = parseRegistryRef(candidate);
    for (const ep of pullEndpoints(conf, origin)) {
      try {
        const client = RegistryClient.forRef(ep.ref, {
          tlsVerify: opts.tlsVerify, creds: opts.creds, certDir: opts.certDir, registriesConf: opts.registriesConf, insecure: ep.insecure, ...opts.client,
        });
        if (ep.mirror) await client.probe();
        return await openAt(origin, ep.ref, client, opts);
      } catch (e) {
        if (!isCowshedError(e)) throw e;
        failures.push({ where: ep.mirror ? 'mirror ' : '', error: e });
      }
    }
  }
  const last = failures[failures.length - 1].error;
  if (failures.length === 1) throw last;
  if (resolved.refs.length > 1) {
    throw new CowshedError(failures.every((f) => f.error.code === 'ENOENT') ? 'ENOENT' : last.code,
      `${ref}: not pulled from any of the unqualified-search-registries (${failures.map((f) => `${f.where}${f.error.message}`).join('; ')})`, { cause: last });
  }
  const others = failures.slice(0, -1).map((f) => `${f.where}${f.error.message}`).join('; ');
  throw new CowshedError(last.code, `${last.message} (tried first: ${others})`, { cause: last, exitCode: last.exitCode });
}

async function openAt(r: RegistryRef, at: RegistryRef, client: RegistryClient, opts: PullOptions): Promise<RegistrySource> {
  const where = formatRef(at);
  const platform = parsePlatformString(opts.platform ?? DEFAULT_PLATFORM);
  const repo = at.repository;

  let reference = r.digest ?? r.tag!;
  // HEAD first: cheap, and says whether it is there before any body moves.
  const head = await client.headManifest(repo, reference);
  if (!head) throw new CowshedError('ENOENT', `${where}: no such image in the registry`);
  let expected = r.digest;
  let got = await client.getManifest(repo, reference, MAX_MANIFEST_BYTES);
  for (let depth = 0; ; depth++) {
    const digest = sha256Digest(got.bytes);
    if (expected !== undefined && digest !== expected) throw new CowshedError('EDIGEST', `${where}: manifest digest mismatch: expected ${expected}, got ${digest}`);
    if (expected === undefined && got.claimedDigest?.startsWith('sha256:') && got.claimedDigest !== digest) {
      throw new CowshedError('EDIGEST', `${where}: manifest digest mismatch: the registry says ${got.claimedDigest}, the bytes are ${digest}`);
    }
    const mediaType = got.mediaType || mediaTypeInside(got.bytes);
    if (isManifestMediaType(mediaType)) break;
    if (!isIndexMediaType(mediaType)) {
      parseManifest(got.bytes, mediaType, `${where}: manifest`); // names the unsupported media type
      throw new CowshedError('EUNSUPPORTED', `${where}: unsupported manifest media type ${JSON.stringify(mediaType)}`);
    }
    if (depth >= MAX_INDEX_DEPTH) throw new CowshedError('EFORMAT', `${where}: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
    const index = parseIndex(got.bytes, mediaType, `${where}: index`);
    const chosen = pickPlatform(index.manifests, platform, where);
    reference = expected = chosen.digest;
    if (chosen.size > MAX_MANIFEST_BYTES) throw new CowshedError('EFORMAT', `${where}: manifest ${chosen.digest} is too big (${chosen.size} bytes)`);
    got = await client.getManifest(repo, reference, MAX_MANIFEST_BYTES);
    if (got.bytes.length !== chosen.size) throw new CowshedError('EDIGEST', `${where}: manifest ${chosen.digest}: ${got.bytes.length} bytes, the index says ${chosen.size}`);
  }
  const manifestDigest = sha256Digest(got.bytes);
  const manifestMediaType = got.mediaType || mediaTypeInside(got.bytes);
  const manifest = parseManifest(got.bytes, manifestMediaType, `${where}: manifest ${manifestDigest}`);

  const stats: BlobStreamStats = { bytes: 0, requests: 0, resumed: 0 };
  const cd = manifest.config;
  if (cd.size > MAX_CONFIG_BYTES) throw new CowshedError('EFORMAT', `${where}: config is too big (${cd.size} bytes)`);
  const configWhat = `${where}: config ${cd.digest}`;
  let configBytes = opts.localBlob?.(cd.digest);
  if (configBytes === undefined || configBytes.length !== cd.size || sha256Digest(configBytes) !== cd.digest) {
    const configChunks: Uint8Array[] = [];
    for await (const c of verifyDigest(client.blob(repo, cd.digest, cd.size, stats), cd.digest, configWhat, cd.size)) configChunks.push(c);
    configBytes = Buffer.concat(configChunks);
  }
  const config = parseConfig(configBytes, configWhat);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new CowshedError('EFORMAT', `${where}: manifest has ${manifest.layers.length} layers but the config has ${diffIds.length} diff IDs`);
  }

  const source: RegistrySource = {
    ref: `docker://${formatRef(r)}`,
    registryRef: r,
    endpointRef: at,
    client,
    stats,
    localLayers: 0,
    manifest: { digest: manifestDigest, mediaType: manifest.mediaType, bytes: got.bytes, parsed: manifest },
    config: { digest: cd.digest, bytes: configBytes, parsed: config },
    layers: [],
    async close() { /* fetch holds nothing between requests */ },
  };
  source.layers = manifest.layers.map((d, i) => registryLayer(source, where, i, d, diffIds[i], opts.localLayer?.(diffIds[i])));
  return source;
}

function mediaTypeInside(bytes: Buffer): string {
  try {
    const v = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
    return typeof v.mediaType === 'string' ? v.mediaType : '';
  } catch {
    return '';
  }
}

function registryLayer(
  src: RegistrySource, where: string, index: number, d: Descriptor, diffId: string, local: (() => AsyncIterable<Uint8Array>) | undefined,
): LayerRef {
  const what = `${where}: layer ${index + 1} (${d.digest})`;
  const repo = src.endpointRef.repository;
  const count = src.manifest.parsed.layers.length;
  async function* progress(blob: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    let received = 0;
    let last = 0;
    for await (const chunk of blob) {
      received += chunk.length;
      if (src.onBlobProgress && received - last >= 1 << 20) {
        last = received;
        src.onBlobProgress({ layer: index, layers: count, digest: d.digest, received, size: d.size, done: false });
      }
      yield chunk;
    }
    src.onBlobProgress?.({ layer: index, layers: count, digest: d.digest, received, size: d.size, done: true });
  }
  let read = 0;
  async function* counted(blob: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const c of blob) { read += c.length; yield c; }
  }
  const fetchBlob = () => verifyDigest(progress(counted(src.client.blob(repo, d.digest, d.size, src.stats))), d.digest, what, d.size);
  // A damaged blob usually breaks decompression or the tar before its digest
  // is known. Fetching it again to find out (what explainLayerFailure does
  // for files) proves nothing over a network that damages bytes, so the rest
  // of the same stream is read instead, and its verdict kept for openBlob().
  let verdict: unknown;
  const openBlob = (): AsyncIterable<Uint8Array> => {
    if (verdict === undefined) return fetchBlob();
    const v = verdict;
    verdict = undefined;
    return (async function* () { throw v; })();
  };
  const isDigestError = (e: unknown): boolean => isCowshedError(e) && e.code === 'EDIGEST';
  const layer: LayerRef = {
    index, digest: d.digest, mediaType: d.mediaType, size: d.size, diffId,
    ...(d.annotations ? { annotations: d.annotations } : {}),
    // HTTP Range requests (src/registry/ranges.ts), for the planner's partial reads.
    async readRanges(ranges, put) {
      const rs = newRangeStats();
      try {
        return await fetchBlobRanges(src.client, repo, d.digest, d.size, ranges, put, rs, { maxRanges: src.maxRanges });
      } finally {
        read += rs.bytes;
        src.stats.bytes += rs.bytes;
        src.stats.requests += rs.requests;
      }
    },
    bytesRead: () => read,
    openBlob,
    async *openTar() {
      if (local) {
        src.localLayers++;
        src.onBlobProgress?.({ layer: index, layers: count, digest: d.digest, received: 0, size: d.size, done: true, local: true });
        yield* verifyDigest(local(), diffId, `${what} (rebuilt from the store)`);
        return;
      }
      const blob = fetchBlob();
      let blobDone = false;
      // Fed to decompress without handing over the blob itself: closing the feed leaves the blob readable.
      const feed = (async function* () {
        for (;;) {
          const r = await blob.next();
          if (r.done) { blobDone = true; return; }
          yield r.value;
        }
      })();
      const drain = async (): Promise<unknown> => {
        if (blobDone) return undefined;
        blobDone = true;
        try { while (!(await blob.next()).done) { /* reading on to the digest check */ } } catch (e) {
          return isDigestError(e) ? e : undefined;
        }
        return undefined;
      };
      let completed = false;
      try {
        const tar = decompress(feed, what);
        yield* d.digest === diffId ? tar : verifyDigest(tar, diffId, `${what} diff ID`);
        completed = true;
      } catch (e) {
        if (isDigestError(e)) throw e;
        throw (await drain()) ?? e;
      } finally {
        // Abandoned by the reader (its tar parser failed): was the blob damaged?
        if (!completed) verdict = await drain();
      }
    },
  };
  return layer;
}

export interface PullResult extends ImportResult {
  /** Blob bytes received (config and layers). */
  bytesFetched: number;
  blobRequests: number;
  resumed: number;
  /** Layers the store already had: rebuilt locally, not fetched. */
  localLayers: number;
  /** Per layer: how it came in (layers of a build reused whole are not listed). */
  layers: LayerReport[];
  /** The delta plan, when deltas were looked for (bytes read for it are in bytesFetched). */
  deltaPlan?: import('../delta/pull.ts').DeltaPullPlan;
}

/**
 * Pulls `ref` into the store under its normalised name (`registry/repo:tag`).
 * A manifest built before reads no layer (the store sees to that); files
 * already stored are not written again. A blob that fails its digest (a
 * corrupting network) is fetched once more from scratch before giving up.
 */
export async function pullImage(
  store: Store, ref: string,
  opts: PullOptions & { onProgress?: (p: ImportProgress) => void; onBlobProgress?: (p: BlobProgress) => void; onNotice?: (m: string) => void } = {},
): Promise<PullResult> {
  let bytes = 0;
  let requests = 0;
  let resumed = 0;
  // ---- deltas (issue 13, src/delta/pull.ts): layers the deltas rebuild are taken as local ones.
  const deltas = opts.deltas === false ? undefined : await (await import('../delta/pull.ts')).planDeltaPull(store, ref, opts);
  try {
  for (let attempt = 1; ; attempt++) {
    const src = await openRegistrySource(ref, {
      ...opts,
      localBlob: (d) => (store.blobs.has(d) ? store.blobs.get(d) : deltas?.blob(d)),
    });
    src.onBlobProgress = opts.onBlobProgress;
    if (opts.partial) src.maxRanges = opts.partial.maxRanges;
    const count = src.layers.length;
    // The planner (in the store's import) decides per layer: the store's, only
    // missing files, or whole. A second attempt (the first failed its
    // digests) reads layers whole.
    const plan: PlanOptions = {
      // Layers the deltas rebuild count as the store's (first attempt only: a
      // second one, after a digest failure, fetches them).
      storedLayer: (diffId) => store.storedLayer(diffId) ?? (attempt === 1 ? deltas?.layer(diffId) : undefined),
      files: opts.partial === false || attempt > 1 ? false : { chunks: opts.partial?.chunks },
      // zstd:chunked layers the deltas do not rebuild whole: per file, a delta entry or the range.
      fileSources: (layer) => (attempt === 1 ? deltas?.files(layer.diffId) : undefined),
      onReport: (r) => {
        if (r.method === 'reused') {
          src.localLayers++;
          src.onBlobProgress?.({ layer: r.layer, layers: count, digest: r.digest, received: 0, size: src.layers[r.layer]!.size, done: true, local: true });
        } else if (r.method === 'partial') {
          src.onBlobProgress?.({ layer: r.layer, layers: count, digest: r.digest, received: r.bytesFetched, size: src.layers[r.layer]!.size, done: true });
        }
      },
    };
    try {
      const hooks = opts.admit ? await opts.admit(src) : {};
      const { layers, ...result } = await store.importSource(src, imageNameFor(src.registryRef), { onProgress: opts.onProgress, onNotice: opts.onNotice, plan, ...hooks });
      bytes += src.stats.bytes;
      requests += src.stats.requests;
      resumed += src.stats.resumed;
      rememberPulledBlobs(store, src);
      // Layers the deltas rebuilt whole came in as the store's: say so.
      for (const r of layers) {
        const lp = deltas?.summary.layers.find((p) => p.diffId === src.layers[r.layer]?.diffId);
        if (lp?.source === 'delta' && r.method === 'reused') {
          r.plan = 'deltas';
          r.deltaBytes = lp.bytes;
          r.costs = { layer: src.layers[r.layer]!.size, deltas: lp.bytes, partial: null, mixed: null };
        }
      }
      // Delta bytes last: a per-file plan reads its entries while the import runs.
      const deltaBytes = deltas?.summary.deltaBytes ?? 0;
      return { ...result, bytesFetched: bytes + deltaBytes, blobRequests: requests, resumed, localLayers: src.localLayers, layers, deltaPlan: deltas?.summary };
    } catch (e) {
      bytes += src.stats.bytes;
      requests += src.stats.requests;
      resumed += src.stats.resumed;
      if (attempt >= 2 || !isCowshedError(e) || e.code !== 'EDIGEST') throw e;
      // Nothing of the failed import was kept; try the whole image once more.
    } finally {
      await src.close();
    }
  }
  } finally {
    deltas?.dispose();
  }
}

function rememberPulledBlobs(store: Store, src: RegistrySource): void {
  try {
    const ds = src.manifest.parsed.layers;
    recordBlobs(store, src.registryRef.registry, src.registryRef.repository, src.layers.map((l, i) => ({
      digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: l.diffId,
      ...(chunkedKind(ds[i]?.annotations) === 'zstd:chunked' ? { annotations: ds[i]!.annotations } : {}),
    })));
  } catch { /* a cache: push works without it, only slower */ }
}
