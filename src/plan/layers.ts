// The import planner: above any image source (src/transport/types.ts), it
// decides for each layer what to read, and reports what it did:
//   reused   the store has a layer with this diff ID: rebuilt from it, nothing read
//   partial  a zstd:chunked layer (current annotations) from a source that
//            serves byte ranges: TOC and tar-split first, then only the files
//            the store lacks (src/chunked/partial.ts); of a file the store
//            lacks, only the chunks no stored object holds
//   whole    the blob, read and decompressed as it is
// A partial plan that fails before handing anything on (bad TOC, lying
// footer, a registry refusing ranges, wrong bytes) falls back to whole,
// saying why in one line. The store's import then reads the planned tar;
// the diff ID is verified either way before anything is committed.
//
// Per file, other sources can stand in for a zstd:chunked layer's ranges
// (hooks.fileSources: deltas, src/delta/mixed.ts): once the TOC is read, a
// file the store lacks may come from them instead of its frames; the layer's
// report then says which plan it took ('mixed' when both were used).
import { isCowshedError } from '../util/errors.ts';
import { verifyDigest } from '../oci/digest.ts';
import { chunkedKind } from '../chunked/format.ts';
import { planPartial, type PartialPlan, type PartialSource } from '../chunked/partial.ts';
import type { ImageSource, LayerRef } from '../transport/types.ts';

/** How a layer came in. */
export interface LayerReport {
  layer: number;
  digest: string;
  /** reused: rebuilt from the store; partial: only missing files fetched; whole: the blob read. */
  method: 'reused' | 'partial' | 'whole';
  /** Blob bytes taken from the transport for this layer. */
  bytesFetched: number;
  /** Regular files with content in the layer (zstd:chunked), fetched, found in the store. */
  files?: number;
  filesFetched?: number;
  filesFound?: number;
  /** Of the files fetched, those fetched in part (other chunks read from stored objects): count, compressed bytes fetched for them, their size. */
  filesPartial?: number;
  filesPartialBytes?: number;
  filesPartialSize?: number;
  /** Why a partial read was given up for a whole one. */
  fallback?: string;
  /** Files fetched (content digest → object), for the content index once the import is committed. */
  fetched?: PartialPlan['fetched'];
  /** The layer's chunked files (from its TOC), for the chunk index once the import is committed. */
  chunks?: PartialPlan['chunks'];
  /**
   * The plan the layer took: store (nothing fetched), deltas (every file the
   * store lacked from deltas), partial (zstd:chunked ranges), mixed (per file:
   * deltas and ranges), layer (the blob whole).
   */
  plan?: 'store' | 'deltas' | 'partial' | 'mixed' | 'layer';
  /** Bytes of delta entries fetched for this layer (not in bytesFetched, which counts the layer blob's). */
  deltaBytes?: number;
  /** Files rebuilt from deltas instead of fetched as ranges. */
  filesFromDeltas?: number;
  /** What each plan would fetch for this layer, as compared (null: not possible, or not known without the TOC). */
  costs?: { layer: number; deltas: number | null; partial: number | null; mixed: number | null };
}

/** Another per-file source for a zstd:chunked layer (deltas). */
export interface FileSourceHook {
  /** Called with the TOC's files once read (see PartialSource.provide). */
  provide: NonNullable<PartialSource['provide']>;
  /** An object it provided, or undefined for the store's. */
  open(hex: string): AsyncIterable<Uint8Array> | undefined;
  /** Adds what it did to the layer's report (plan, delta bytes, costs). */
  report(r: LayerReport): void;
}

export interface PlanHooks {
  /** A layer the store has, rebuilt as its tar; undefined if not there. */
  storedLayer?(diffId: string): (() => AsyncIterable<Uint8Array>) | undefined;
  /** Per-file reads: content digest → stored object, the object's bytes, and where to stage ranges. Without it layers are read whole. */
  files?: {
    lookup(files: Array<{ digest: string; size: number }>): Map<string, string>;
    openObject(hex: string): AsyncIterable<Uint8Array>;
    /** Chunk-level reuse (absent: a file the store lacks is fetched whole). */
    lookupChunks?: PartialSource['lookupChunks'];
    readObject?: PartialSource['readObject'];
    tmpDir: string;
  };
  /** Other per-file sources for a zstd:chunked layer (deltas); undefined: ranges and the store only. */
  fileSources?(layer: LayerRef): FileSourceHook | undefined;
  /** One-line notices (a partial read given up, and why). */
  onNotice?(message: string): void;
  /** A layer's report, once its plan is made (reused and partial) or its read is done (whole). */
  onReport?(r: LayerReport): void;
}

export interface Planned {
  /** The source's layers, their openTar() going by the plan. */
  layers: LayerRef[];
  /** One per layer read (layers the store's import did not need to read at all are absent). */
  reports: LayerReport[];
}

export function planLayers(src: ImageSource, hooks: PlanHooks): Planned {
  const reports: LayerReport[] = [];
  const layers = src.layers.map((layer): LayerRef => ({
    ...layer,
    openTar: () => plannedTar(layer, hooks, reports),
  }));
  return { layers, reports };
}

async function* plannedTar(layer: LayerRef, hooks: PlanHooks, reports: LayerReport[]): AsyncGenerator<Uint8Array> {
  const report: LayerReport = { layer: layer.index, digest: layer.digest, method: 'whole', bytesFetched: 0 };
  reports.push(report);
  const what = `layer ${layer.index + 1} (${layer.digest})`;
  const stored = layer.diffId ? hooks.storedLayer?.(layer.diffId) : undefined;
  if (stored) {
    report.method = 'reused';
    report.plan = 'store';
    hooks.onReport?.(report);
    yield* verifyDigest(stored(), layer.diffId, `${what} (rebuilt from the store)`);
    return;
  }
  const read0 = layer.bytesRead?.() ?? 0;
  const files = hooks.files;
  if (files && layer.readRanges && chunkedKind(layer.annotations) === 'zstd:chunked') {
    let plan: PartialPlan | undefined;
    const other = hooks.fileSources?.(layer);
    try {
      plan = await planPartial({
        what, digest: layer.digest, size: layer.size, annotations: layer.annotations!, tmpDir: files.tmpDir,
        lookup: files.lookup, openObject: other ? (hex) => other.open(hex) ?? files.openObject(hex) : files.openObject,
        lookupChunks: files.lookupChunks, readObject: files.readObject,
        fetch: (ranges, put) => layer.readRanges!(ranges, put),
        ...(other ? { provide: other.provide } : {}),
      });
    } catch (e) {
      if (!isCowshedError(e) || e.code === 'ENOSPC') throw e;
      // Nothing was handed on: reading the layer whole is safe.
      report.fallback = e.message;
      hooks.onNotice?.(`${e.message}; pulling the whole layer instead`);
    }
    if (plan) {
      report.files = plan.files;
      report.filesFound = plan.filesFound;
      if (plan.chunks.length > 0) report.chunks = plan.chunks;
      if (plan.tar) {
        report.method = plan.method;
        report.filesFetched = plan.filesFetched;
        if (plan.method === 'partial') Object.assign(report, { filesPartial: plan.filesPartial, filesPartialBytes: plan.filesPartialBytes, filesPartialSize: plan.filesPartialSize });
        report.fetched = plan.fetched;
        report.bytesFetched = (layer.bytesRead?.() ?? 0) - read0;
        report.plan = plan.method === 'partial' ? 'partial' : 'layer';
        other?.report(report);
        hooks.onReport?.(report);
        try {
          yield* verifyDigest(plan.tar(), layer.diffId, `${what} diff ID`);
        } finally {
          plan.close();
        }
        return;
      }
    }
  }
  try {
    yield* layer.openTar();
  } finally {
    report.bytesFetched = (layer.bytesRead?.() ?? 0) - read0;
    report.plan = 'layer';
    hooks.onReport?.(report);
  }
}

