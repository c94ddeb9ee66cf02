// The pull side: before a registry pull fetches layers, look for deltas to
// the target whose bases the store holds (any image: objects are shared),
// plan per object, and stage the layers they can rebuild. The pull then
// takes those layers as local ones (verified against their diff IDs like
// any layer) and fetches the rest. A missing, corrupt or useless delta only
// means more layers are fetched: nothing here can fail a pull.
//
// A zstd:chunked layer (current annotations) that the deltas do not rebuild
// whole is planned per file when it is read (src/delta/mixed.ts, through
// the import planner's fileSources hook): each file from a delta entry or
// its range, whichever is cheaper; a failing entry costs that file's range,
// not the layer.
import type { Store } from '../store/store.ts';
import { openRegistrySource, type PullOptions } from '../registry/pull.ts';
import { CowshedError } from '../util/errors.ts';
import { listDeltas, openRegistryDelta } from './registry.ts';
import { prepareDelta, type LayerPlan, type PreparedDelta } from './apply.ts';
import { ANNOTATION_FROM } from './format.ts';
import { bytesReadBy, type DeltaReader } from './artifact.ts';
import type { RegistryClient } from '../registry/client.ts';
import { chunkedKind, parseAnnotations } from '../chunked/format.ts';
import type { FileSourceHook } from '../plan/layers.ts';
import { mixedFileSource } from './mixed.ts';

/** Most delta indexes one pull reads (each a few kB to tens of kB). */
const MAX_INDEXES = 8;
/** How far back a chain of deltas is followed (skip-deltas need log n hops). */
const MAX_HOPS = 5;

export interface DeltaPullPlan {
  /**
   * 'deltas': every layer the store lacks comes from deltas; 'mixed': some
   * layers or some files of a layer do (the rest from layers or zstd:chunked
   * ranges); 'layers': none does; 'store': none is lacking.
   */
  plan: 'deltas' | 'mixed' | 'layers' | 'store';
  /** Why deltas were not used, when they were not. */
  reason?: string;
  /** Where the list of deltas came from. */
  referrers?: 'referrers' | 'tag-schema' | 'none';
  deltasUsed: number;
  /** Bytes read for deltas: manifests, indexes, entries. */
  deltaBytes: number;
  /** Compressed bytes of the layers the store lacks: what a plain layer pull fetches. */
  layerBytes: number;
  layers: LayerPlan[];
}

export interface DeltaPull {
  summary: DeltaPullPlan;
  /** Small blobs planning already fetched (the config), so the pull does not fetch them again. */
  blob(digest: string): Buffer | undefined;
  layer(diffId: string): (() => AsyncIterable<Uint8Array>) | undefined;
  /** The per-file source for a zstd:chunked layer left to the per-file plan (undefined: none). */
  files(diffId: string): FileSourceHook | undefined;
  dispose(): void;
}

/** Deltas to follow from the target: breadth first over referrers until a base the store holds. */
async function chooseDeltas(store: Store, client: RegistryClient, repo: string, target: string): Promise<{ readers: DeltaReader[]; via: DeltaPullPlan['referrers'] }> {
  const held = (d: string) => store.db.get('SELECT 1 FROM images WHERE id = ?', d) !== undefined;
  const first = await listDeltas(client, repo, target);
  if (first.deltas.length === 0) return { readers: [], via: first.via };
  // Path search on the annotations only (lists are small); indexes are fetched for the chosen path.
  type Node = { digest: string; path: string[] };
  let frontier: Node[] = [{ digest: target, path: [] }];
  const seen = new Set([target]);
  let chosen: string[] | undefined;
  const lists = new Map<string, Awaited<ReturnType<typeof listDeltas>>>([[target, first]]);
  for (let hop = 0; hop < MAX_HOPS && !chosen && frontier.length > 0; hop++) {
    const next: Node[] = [];
    for (const n of frontier) {
      const l = lists.get(n.digest) ?? await listDeltas(client, repo, n.digest);
      lists.set(n.digest, l);
      for (const d of l.deltas) {
        const from = d.annotations?.[ANNOTATION_FROM];
        if (typeof from !== 'string') continue;
        const path = [...n.path, d.digest];
        if (held(from)) { chosen ??= path; continue; }
        if (!seen.has(from)) { seen.add(from); next.push({ digest: from, path }); }
      }
      if (chosen) break;
    }
    frontier = next;
  }
  // No base held by manifest: the deltas straight to the target may still patch objects the store has.
  const digests = (chosen ?? first.deltas.map((d) => d.digest)).slice(0, MAX_INDEXES);
  const readers: DeltaReader[] = [];
  for (const d of digests) {
    try { readers.push(await openRegistryDelta(client, repo, d)); } catch (e) {
      if (!(e instanceof CowshedError)) throw e; // a broken delta is skipped; the rest may do
    }
  }
  return { readers, via: first.via };
}

/** zstd:chunked layers (current annotations) by diff ID, with the bytes of their TOC and tar-split. */
function chunkedLayers(layers: Array<{ diffId: string; size: number; annotations?: Record<string, string>; readRanges?: unknown }>): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of layers) {
    if (!l.readRanges || chunkedKind(l.annotations) !== 'zstd:chunked') continue;
    try {
      const pos = parseAnnotations(l.annotations!, l.size, 'layer');
      out.set(l.diffId, pos.toc.length + pos.tarSplit.length);
    } catch { /* bad annotations: the partial reader says so, or the layer is pulled whole */ }
  }
  return out;
}

/**
 * Plans a pull of `ref` by deltas. Returns undefined when there is nothing
 * to plan (the store is empty); otherwise a plan whose layers the pull
 * takes as local ones. Never throws for a delta's fault.
 */
export async function planDeltaPull(store: Store, ref: string, opts: PullOptions): Promise<DeltaPull | undefined> {
  if (store.db.get('SELECT 1 FROM images LIMIT 1') === undefined) return undefined;
  const src = await openRegistrySource(ref, { ...opts, localBlob: (d) => (store.blobs.has(d) ? store.blobs.get(d) : undefined) });
  const missing = src.layers.filter((l) => store.storedLayer(l.diffId) === undefined);
  const layerBytes = missing.reduce((a, l) => a + l.size, 0);
  const summary: DeltaPullPlan = { plan: 'layers', deltasUsed: 0, deltaBytes: src.stats.bytes, layerBytes, layers: [] };
  const blob = (d: string): Buffer | undefined => (d === src.config.digest ? src.config.bytes : undefined);
  const none = (reason: string): DeltaPull => ({ summary: { ...summary, reason }, blob, layer: () => undefined, files: () => undefined, dispose: () => {} });
  if (missing.length === 0) return { ...none('every layer is in the store'), summary: { ...summary, plan: 'store', reason: 'every layer is in the store' } };
  let prepared: PreparedDelta | undefined;
  try {
    const { readers, via } = await chooseDeltas(store, src.client, src.registryRef.repository, src.manifest.digest);
    summary.referrers = via;
    summary.deltaBytes += bytesReadBy(readers);
    if (readers.length === 0) return none(via === 'none' ? 'no deltas published for this image' : 'no usable delta');
    const before = bytesReadBy(readers);
    prepared = await prepareDelta(store, readers, src.layers.map((l) => l.diffId), {
      layerSizes: new Map(src.layers.map((l) => [l.diffId, l.size])),
      ...(opts.partial === false ? {} : { chunked: chunkedLayers(src.layers) }),
    });
    const base = summary.deltaBytes - before;
    summary.layers = prepared.plan;
    summary.deltasUsed = readers.length;
    // Recomputed when a per-file plan finishes (its delta bytes are read then).
    const refresh = (): void => {
      summary.deltaBytes = base + bytesReadBy(readers);
      const fromDeltas = prepared!.plan.filter((p) => p.source === 'delta').length;
      const mixed = prepared!.plan.filter((p) => p.source === 'mixed').length;
      summary.plan = fromDeltas + mixed === 0 ? 'layers' : fromDeltas === missing.length ? 'deltas' : 'mixed';
      if (fromDeltas + mixed === 0) summary.reason = prepared!.plan.find((p) => p.reason)?.reason ?? 'no layer can be rebuilt from the deltas';
      else delete summary.reason;
    };
    refresh();
    const p = prepared;
    const sizes = new Map(src.layers.map((l) => [l.diffId, l.size]));
    return {
      summary, blob, layer: (d) => p.layers.get(d), dispose: () => p.dispose(),
      files: (diffId) => {
        const d = p.perFile(diffId);
        if (!d) return undefined;
        return mixedFileSource(d, sizes.get(diffId) ?? Infinity, (st) => {
          if (st.chosen === 'mixed' && st.filesFromDeltas > 0) {
            d.plan.source = 'mixed';
            d.plan.bytes = st.deltaBytes;
            d.plan.filesFromDeltas = st.filesFromDeltas;
            delete d.plan.reason;
          }
          refresh();
        });
      },
    };
  } catch (e) {
    prepared?.dispose();
    if (!(e instanceof CowshedError) || e.code === 'ENOSPC') throw e;
    return none(`deltas unusable: ${e.message}`);
  }
}
