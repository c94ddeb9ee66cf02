// The pull side: before a registry pull fetches layers, look for deltas to
// the target whose bases the store holds (any image: objects are shared),
// plan per object, and stage the layers they can rebuild. The pull then
// takes those layers as local ones (verified against their diff IDs like
// any layer) and fetches the rest. A missing, corrupt or useless delta only
// means more layers are fetched: nothing here can fail a pull.
import type { Store } from '../store/store.ts';
import { openRegistrySource, type PullOptions } from '../registry/pull.ts';
import { CowshedError } from '../util/errors.ts';
import { listDeltas, openRegistryDelta } from './registry.ts';
import { prepareDelta, type LayerPlan, type PreparedDelta } from './apply.ts';
import { ANNOTATION_FROM } from './format.ts';
import type { DeltaReader } from './artifact.ts';
import type { RegistryClient } from '../registry/client.ts';

/** Most delta indexes one pull reads (each a few kB to tens of kB). */
const MAX_INDEXES = 8;
/** How far back a chain of deltas is followed (skip-deltas need log n hops). */
const MAX_HOPS = 5;

export interface DeltaPullPlan {
  /** 'deltas': every layer the store lacks comes from deltas; 'mixed'; 'layers': none does; 'store': none is lacking. */
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
  const none = (reason: string): DeltaPull => ({ summary: { ...summary, reason }, blob, layer: () => undefined, dispose: () => {} });
  if (missing.length === 0) return { ...none('every layer is in the store'), summary: { ...summary, plan: 'store', reason: 'every layer is in the store' } };
  let prepared: PreparedDelta | undefined;
  try {
    const { readers, via } = await chooseDeltas(store, src.client, src.registryRef.repository, src.manifest.digest);
    summary.referrers = via;
    summary.deltaBytes += readers.reduce((a, r) => a + r.bytesRead, 0);
    if (readers.length === 0) return none(via === 'none' ? 'no deltas published for this image' : 'no usable delta');
    const before = readers.reduce((a, r) => a + r.bytesRead, 0);
    prepared = await prepareDelta(store, readers, src.layers.map((l) => l.diffId), { layerSizes: new Map(src.layers.map((l) => [l.diffId, l.size])) });
    summary.deltaBytes += readers.reduce((a, r) => a + r.bytesRead, 0) - before;
    summary.layers = prepared.plan;
    summary.deltasUsed = readers.length;
    const fromDeltas = prepared.plan.filter((p) => p.source === 'delta').length;
    summary.plan = fromDeltas === 0 ? 'layers' : fromDeltas === missing.length ? 'deltas' : 'mixed';
    if (fromDeltas === 0) summary.reason = prepared.plan.find((p) => p.reason)?.reason ?? 'no layer can be rebuilt from the deltas';
    const p = prepared;
    return { summary, blob, layer: (d) => p.layers.get(d), dispose: () => p.dispose() };
  } catch (e) {
    prepared?.dispose();
    if (!(e instanceof CowshedError) || e.code === 'ENOSPC') throw e;
    return none(`deltas unusable: ${e.message}`);
  }
}
