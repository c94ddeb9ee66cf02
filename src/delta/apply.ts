// Applying deltas: the entry point a pull (or any import planner) calls is
// prepareDelta(): given readers for one or more deltas and the target's
// layers, it plans per object (store, patch, chain of patches), fetches only
// the entries it needs (ranges coalesced), rebuilds and verifies every
// object against its fs-verity digest and every tar-split record against its
// sha256, and stages the objects under the store's tmp/. What it returns is
// per layer: a function giving the layer's uncompressed tar (the caller
// verifies it against the diff ID, as for any local layer) or why the layer
// cannot come from the deltas (so the caller fetches the layer instead).
//
// Nothing here writes to the store: the import path commits (objects
// renamed in, one database transaction) only after every layer's diff ID
// has checked out. A kill leaves a staging directory under tmp/ (named like
// an object batch of a dead process, so gc and fsck remove it).
import { createReadStream, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { pidAlive } from '../store/leases.ts';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import type { ImportOptions, ImportResult } from '../store/import.ts';
import type { ImageSource, LayerRef } from '../oci/source.ts';
import { fsverityDigest, toHex } from '../composefs/fsverity.ts';
import { sha256Hex, verifyDigest } from '../oci/digest.ts';
import { parseConfig, parseManifest } from '../oci/types.ts';
import { rebuildTar } from '../tar/split.ts';
import { CowshedError, fail, isCowshedError } from '../util/errors.ts';
import { decodeEntry, type DeltaIndex } from './format.ts';
import { DeltaPlanner, layerKey, type Key, type Step } from './plan.ts';
import { gzipSplit, splitRefs, storedSplit } from './split-refs.ts';
import { bytesReadBy, type DeltaReader } from './artifact.ts';

/** Ranges closer than this are fetched as one. */
const COALESCE_GAP = 16 << 10;

export interface LayerPlan {
  diffId: string;
  /** mixed: per file, deltas and zstd:chunked ranges (decided when the layer is read: src/delta/mixed.ts). */
  source: 'store' | 'delta' | 'layer' | 'mixed';
  /** Bytes the deltas fetch for this layer (objects shared between layers counted in the first). */
  bytes: number;
  /** Why a layer is not rebuilt from the deltas (source 'layer'). */
  reason?: string;
  /** A zstd:chunked layer left to the per-file plan: once its TOC is read, each file from the deltas or its range. */
  perFile?: boolean;
  /** What the deltas alone would fetch for the layer (tar-split record included); absent: they cannot rebuild it. */
  deltaCost?: number;
  /** Files rebuilt from the deltas (source 'mixed'). */
  filesFromDeltas?: number;
}

/** What the per-file planner (src/delta/mixed.ts) needs of a prepared delta, for one layer. */
export interface PerFileDelta {
  plan: LayerPlan;
  /** The layer's objects in tar order (fs-verity hex, size): one per regular file with content. */
  refs: Array<{ digest: string; size: number }> | undefined;
  /** Every object the deltas hold an entry for (fs-verity hex, size): paired by size when there is no record. */
  candidates: Array<{ digest: string; size: number }>;
  /** Bytes of the layer's tar-split record from the deltas (0: the store had it); what a failed attempt read is plan.bytes. */
  splitBytes: number;
  planner: DeltaPlanner;
  /** Staged (rebuilt and verified) object, by fs-verity hex. */
  staged(hex: string): string | undefined;
  /** Fetches the entries these keys need, coalesced; a failure is left to materialize(). */
  prefetch(keys: Key[]): Promise<void>;
  /** Rebuilds and verifies one object (staged), trying other producers; throws when none gives it. */
  materialize(key: Key): Promise<Buffer>;
  /** Bytes read from the deltas so far. */
  bytesRead(): number;
}

export interface PreparedDelta {
  /** Layers rebuilt from deltas, by diff ID: their uncompressed tar (verify against the diff ID). */
  layers: Map<string, () => AsyncIterable<Uint8Array>>;
  plan: LayerPlan[];
  /** Bytes read from the deltas (indexes included). */
  bytesFetched: number;
  /** Objects rebuilt (patched or decompressed) and verified. */
  objectsRebuilt: number;
  /** For a layer left to the per-file plan (LayerPlan.perFile): what that plan needs. */
  perFile(diffId: string): PerFileDelta | undefined;
  dispose(): void;
}

export interface PrepareOptions {
  /** Compressed size of each layer, by diff ID: a layer whose delta costs more is left to a plain fetch. */
  layerSizes?: Map<string, number>;
  /** Plan only; fetch nothing beyond the tar-split records. */
  dryRun?: boolean;
  /**
   * zstd:chunked layers the caller can read by ranges, by diff ID, with the
   * bytes of their TOC and tar-split: such a layer that the deltas cannot
   * rebuild whole (or cheaply, or without a failing entry) is left to the
   * per-file plan instead of a plain fetch.
   */
  chunked?: Map<string, number>;
}

/**
 * Plans and stages the target's layers (`diffIds`, in order) from the
 * deltas the readers hold. Layers the store already has are left to the
 * caller (plan source 'store').
 */
export async function prepareDelta(store: Store, readers: DeltaReader[], diffIds: string[], opts: PrepareOptions = {}): Promise<PreparedDelta> {
  const haveLayer = (hex: string) => store.db.get('SELECT 1 FROM layers WHERE diff_id = ? LIMIT 1', `sha256:${hex}`) !== undefined;
  const planner = new DeltaPlanner(readers.map((r) => r.index), { object: (h) => store.objects.has(h), layer: haveLayer });
  // Staging left by a killed apply is garbage: its objects are rebuilt again (cheap) rather than trusted.
  for (const n of readdirSync(store.paths.tmp)) {
    const m = /^objects-(\d+)-delta-/.exec(n);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(store.paths.tmp, n), { recursive: true, force: true });
  }
  const staging = join(store.paths.tmp, `objects-${process.pid}-delta-${randomBytes(6).toString('hex')}`);
  const staged = new Map<string, string>();
  const splits = new Map<Key, Buffer>();
  const fetched = new Map<string, Buffer>(); // `${reader}:${entryIndex}` → packed bytes
  const bytesBefore = bytesReadBy(readers);
  const result: PreparedDelta = {
    layers: new Map(),
    plan: [],
    bytesFetched: 0,
    objectsRebuilt: 0,
    perFile: () => undefined,
    dispose: () => rmSync(staging, { recursive: true, force: true }),
  };
  const stepId = (s: Step) => `${s.reader}:${s.entryIndex}`;

  async function fetchSteps(steps: Step[]): Promise<void> {
    const todo = steps.filter((s) => !fetched.has(stepId(s)));
    const groups = new Map<string, Step[]>();
    for (const s of todo) {
      const g = `${s.reader}:${s.entry.p}`;
      const list = groups.get(g);
      if (list) list.push(s); else groups.set(g, [s]);
    }
    for (const list of groups.values()) {
      list.sort((a, b) => a.entry.off - b.entry.off);
      let i = 0;
      while (i < list.length) {
        let j = i;
        let end = list[i].entry.off + list[i].entry.len;
        while (j + 1 < list.length && list[j + 1].entry.off <= end + COALESCE_GAP) { j++; end = Math.max(end, list[j].entry.off + list[j].entry.len); }
        await fetchRun(list.slice(i, j + 1), end);
        i = j + 1;
      }
    }
  }

  /**
   * One coalesced range of entries (sorted by offset, ending at `end`). A
   * range that fails (a pack cut short, a refused request) is split in
   * halves, so one bad entry costs a few requests, not one per entry; an
   * entry that still fails is left to materialize(), which names it.
   */
  async function fetchRun(run: Step[], end: number): Promise<void> {
    const start = run[0].entry.off;
    let buf: Buffer;
    try {
      buf = await readers[run[0].reader].readRange(run[0].entry.p, start, end - start);
    } catch (e) {
      if (!isCowshedError(e) || run.length === 1) throw e;
      const half = run.length >> 1;
      const endOf = (r: Step[]): number => Math.max(...r.map((s) => s.entry.off + s.entry.len));
      for (const part of [run.slice(0, half), run.slice(half)]) {
        try { await fetchRun(part, endOf(part)); } catch (err) { if (!isCowshedError(err)) throw err; }
      }
      return;
    }
    for (const s of run) fetched.set(stepId(s), buf.subarray(s.entry.off - start, s.entry.off - start + s.entry.len));
  }

  /** The bytes of `key`: from the store, or rebuilt (recursively from its base) and verified. */
  async function materialize(key: Key, depth = 0): Promise<Buffer> {
    if (key.startsWith('L:')) {
      const have = splits.get(key) ?? storedSplit(store, `sha256:${key.slice(2)}`);
      if (have) return have;
    } else {
      const p = staged.get(key) ?? (store.objects.has(key) ? store.objects.path(key) : undefined);
      if (p) return readFileSync(p);
    }
    for (;;) {
      const step = planner.stepFor(key);
      if (!step || depth > 16) fail('ENOENT', `no delta gives ${key.startsWith('L:') ? `the tar-split record of layer sha256:${key.slice(2, 14)}` : `object ${key.slice(0, 12)}`} from what the store holds`);
      try {
        const base = DeltaPlanner.baseKey(step.entry);
        const baseBytes = base === undefined ? undefined : await materialize(base, depth + 1);
        if (!fetched.has(stepId(step))) await fetchSteps([step]);
        const out = decodeEntry(step.entry, fetched.get(stepId(step))!, baseBytes);
        if (key.startsWith('L:')) {
          if (sha256Hex(out) !== step.entry.o) throw new CowshedError('EDIGEST', `delta: a tar-split record does not match its digest`);
          splitRefs(out); // malformed records fail here, not half-way through a layer
          splits.set(key, out);
        } else {
          if (toHex(fsverityDigest(out)) !== key) throw new CowshedError('EDIGEST', `delta: the entry for object ${key.slice(0, 12)} does not reproduce it`);
          mkdirSync(staging, { recursive: true, mode: 0o700 });
          const p = join(staging, key);
          writeFileSync(p, out);
          staged.set(key, p);
          result.objectsRebuilt++;
        }
        return out;
      } catch (e) {
        if (!isCowshedError(e) || e.code === 'ENOSPC') throw e;
        // This entry is bad (or its base could not be had): try another producer, else give up on the key.
        planner.exclude(step);
        if (!planner.stepFor(key)) throw e;
      }
    }
  }

  try {
    // Phase 1: tar-split records of the layers the store lacks (small, needed to know the objects).
    const wanted = diffIds.filter((d) => !haveLayer(d.slice(7)));
    try {
      await fetchSteps(planner.closure(wanted.map(layerKey)).steps.map((s) => s.step));
    } catch (e) {
      if (!isCowshedError(e)) throw e; // a bad range: materialize below tries entry by entry
    }
    const refsOf = new Map<string, string[]>();
    const orderOf = new Map<string, Array<{ digest: string; size: number }>>();
    const splitBytes = new Map<string, number>();
    for (const d of diffIds) {
      if (!wanted.includes(d)) { result.plan.push({ diffId: d, source: 'store', bytes: 0 }); continue; }
      try {
        splitBytes.set(d, planner.closure([layerKey(d)]).bytes);
        const refs = splitRefs(await materialize(layerKey(d)));
        orderOf.set(d, refs);
        refsOf.set(d, [...new Set(refs.map((r) => r.digest))]);
      } catch (e) {
        if (!isCowshedError(e)) throw e;
        result.plan.push({ diffId: d, source: 'layer', bytes: 0, reason: e.message, ...(opts.chunked?.has(d) ? { perFile: true } : {}) });
      }
    }
    // Phase 2: the objects, per layer; a layer whose delta would cost more than the layer itself is fetched plainly.
    const counted = new Set<Key>();
    for (const d of diffIds) {
      const refs = refsOf.get(d);
      if (!refs) continue;
      const c = planner.closure(refs);
      const split = planner.closure([layerKey(d)]);
      const fresh = c.steps.filter((s) => !counted.has(s.key));
      const bytes = split.bytes + fresh.reduce((a, s) => a + s.step.entry.len, 0);
      const plain = opts.layerSizes?.get(d);
      // A zstd:chunked layer the deltas do not rebuild whole, or cheaply, is planned per file once its TOC is read.
      const perFile = opts.chunked?.has(d) ? { perFile: true } : {};
      if (c.missing.length > 0) {
        result.plan.push({ diffId: d, source: 'layer', bytes: 0, reason: `${c.missing.length} objects are in no delta and not in the store`, ...perFile });
        continue;
      }
      if (plain !== undefined && bytes >= plain) {
        result.plan.push({ diffId: d, source: 'layer', bytes: 0, reason: `the delta (${bytes} bytes) costs more than the layer (${plain})`, deltaCost: bytes, ...perFile });
        continue;
      }
      // Reading the TOC costs its bytes (known from the annotations): the per-file plan can only win
      // where ranges undercut delta entries by more than that, so a delta that rebuilds the layer is
      // taken as it is (and the TOC read only if one of its entries fails).
      for (const s of fresh) counted.add(s.key);
      result.plan.push({ diffId: d, source: 'delta', bytes, deltaCost: bytes });
    }
    if (!opts.dryRun) {
      for (const lp of result.plan) {
        if (lp.source !== 'delta') continue;
        const refs = refsOf.get(lp.diffId)!;
        const read0 = bytesReadBy(readers);
        try {
          await fetchSteps(planner.closure(refs).steps.map((s) => s.step)).catch((e: unknown) => {
            if (!isCowshedError(e)) throw e; // a bad range: materialize fetches entry by entry
          });
          for (const r of refs) await materialize(r);
        } catch (e) {
          if (!isCowshedError(e) || e.code === 'ENOSPC') throw e;
          // A failing entry: what was rebuilt stays staged; a zstd:chunked layer takes the rest per file.
          lp.source = 'layer';
          lp.reason = e.message;
          lp.bytes = bytesReadBy(readers) - read0; // spent on the attempt
          if (opts.chunked?.has(lp.diffId)) lp.perFile = true;
          continue;
        }
        const split = splits.get(layerKey(lp.diffId)) ?? storedSplit(store, lp.diffId)!;
        const gz = gzipSplit(split);
        result.layers.set(lp.diffId, () => rebuildTar(gz, (digest) => {
          const hex = toHex(digest);
          const p = staged.get(hex);
          return p ? createReadStream(p) : store.objects.open(hex);
        }));
      }
    }
    result.bytesFetched = bytesReadBy(readers) - bytesBefore;
    result.perFile = (diffId) => {
      const plan = result.plan.find((p) => p.diffId === diffId);
      const refs = orderOf.get(diffId);
      if (!plan?.perFile || opts.dryRun) return undefined;
      const candidates = new Map<string, number>();
      for (const r of readers) for (const e of r.index.entries) if (!e.k.startsWith('split-')) candidates.set(e.o, e.s);
      return {
        plan, refs, candidates: [...candidates].map(([digest, size]) => ({ digest, size })), splitBytes: splitBytes.get(diffId) ?? 0, planner,
        staged: (hex) => staged.get(hex),
        prefetch: (keys) => fetchSteps(planner.closure(keys).steps.map((s) => s.step)).catch((e: unknown) => {
          if (!isCowshedError(e)) throw e; // a bad range: materialize fetches entry by entry
        }),
        materialize: (key) => materialize(key),
        bytesRead: () => bytesReadBy(readers),
      };
    };
    return result;
  } catch (e) {
    result.dispose();
    throw e;
  }
}

/** The delta's target as an ImageSource whose layers are rebuilt from the deltas (all of them: none is fetched). */
export function deltaImageSource(ix: DeltaIndex, prepared: PreparedDelta, store: Store, where: string): ImageSource {
  const manifest = parseManifest(ix.to.manifestBytes, ix.to.mediaType, `${where}: target manifest`);
  const configDigest = `sha256:${sha256Hex(ix.to.configBytes)}`;
  if (manifest.config.digest !== configDigest) fail('EDIGEST', `${where}: the config it carries is not the target's`);
  const config = parseConfig(ix.to.configBytes, `${where}: target config`);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) fail('EFORMAT', `${where}: target manifest and config disagree on the layers`);
  const layers: LayerRef[] = manifest.layers.map((d, i) => {
    const diffId = diffIds[i];
    const what = `${where}: layer ${i + 1}`;
    const rebuilt = prepared.layers.get(diffId) ?? store.storedLayer(diffId);
    if (!rebuilt) {
      const why = prepared.plan.find((p) => p.diffId === diffId)?.reason ?? 'not in the delta';
      fail('ENOENT', `${what} cannot be rebuilt: ${why}`);
    }
    return {
      index: i, digest: d.digest, mediaType: d.mediaType, size: d.size, diffId,
      openBlob: () => fail('EUNSUPPORTED', `${what}: a delta holds no compressed layer blobs`),
      openTar: () => verifyDigest(rebuilt!(), diffId, `${what} (rebuilt from the delta)`),
    };
  });
  return {
    ref: where,
    manifest: { digest: ix.to.manifest, mediaType: ix.to.mediaType, bytes: ix.to.manifestBytes, parsed: manifest },
    config: { digest: configDigest, bytes: ix.to.configBytes, parsed: config },
    layers,
    async close() { /* the caller disposes the prepared delta */ },
  };
}

export interface ApplyResult extends ImportResult {
  bytesRead: number;
  objectsRebuilt: number;
  plan: LayerPlan[];
}

/** Imports a delta's target into the store under `name` (default: the name recorded in the delta). */
export async function applyDelta(store: Store, reader: DeltaReader, name: string | undefined, opts: ImportOptions = {}): Promise<ApplyResult> {
  const ix = reader.index;
  const config = parseConfig(ix.to.configBytes, `${reader.where}: target config`);
  const prepared = await prepareDelta(store, [reader], config.rootfs.diff_ids);
  try {
    const src = deltaImageSource(ix, prepared, store, reader.where);
    const target = name ?? ix.name ?? `delta-${ix.to.manifest.slice(7, 19)}`;
    const r = await store.importSource(src, target, opts);
    return { ...r, bytesRead: reader.bytesRead, objectsRebuilt: prepared.objectsRebuilt, plan: prepared.plan };
  } finally {
    prepared.dispose();
  }
}
