// The per-file plan (issue 13): a zstd:chunked layer that the deltas do not
// rebuild whole takes each file the store lacks from wherever it is cheapest:
// a delta entry (its closure bytes: the patch and whatever base it needs) or
// the file's frames in the layer blob (compressed bytes from the TOC).
//
// Matching delta entries to TOC entries. Deltas name objects by fs-verity
// digest and carry the layer's tar-split record (cowshed's: one content
// reference per regular file with content, in tar order); the TOC names
// files by content SHA-256, and the partial reader pairs its files with the
// layer's own tar-split, also one per regular file with content, in tar
// order. Both describe the same uncompressed tar (the same diff ID), so the
// k-th content reference of the record is the k-th file of the TOC: the two
// lists are paired by position, and taken only if they have the same length
// and every pair the same size. The pairing is never trusted: an object
// rebuilt from a delta is checked against its fs-verity digest (as always)
// and its SHA-256 against the TOC's digest for that file; a file failing
// either is fetched as its range, and the rebuilt tar is still checked
// against the diff ID before anything is committed. (The content index,
// src/chunked/content-index.ts, maps SHA-256 → fs-verity only for objects
// the store holds: it finds the files that cost nothing, not the ones a
// delta rebuilds.) Without the record (a patch against a layer the host
// lacks, or a bad entry), a missing file is paired with the one delta entry
// of its size, when exactly one entry and one missing file have that size;
// the SHA-256 check after the rebuild catches a wrong guess (its range is
// fetched).
//
// Choice. Once the TOC is read (its bytes are spent), per file: free if the
// store has it (by content digest, or by fs-verity digest through the
// pairing), else the delta entry if its closure costs fewer bytes than the
// file's frames, else the frames. The totals of that mixed plan, of the
// ranges alone (pure partial) and of the layer blob are compared and the
// cheapest taken (what the deltas alone would cost was known before the TOC
// was read: src/delta/apply.ts takes that plan then, when it can).
import { createReadStream } from 'node:fs';
import { isCowshedError } from '../util/errors.ts';
import { sha256Digest } from '../oci/digest.ts';
import { mergedSize } from '../chunked/partial.ts';
import type { FileFrames } from '../chunked/format.ts';
import type { Range } from '../registry/ranges.ts';
import type { FileSourceHook, LayerReport } from '../plan/layers.ts';
import type { PerFileDelta } from './apply.ts';

export interface MixedStats {
  /** What each plan would fetch, as compared (bytes; null: not possible or not known). */
  costs: NonNullable<LayerReport['costs']>;
  filesFromDeltas: number;
  /** Delta entries that failed (bad patch, digest mismatch, pack cut short): their files came as ranges. */
  failed: number;
  /** Delta bytes read for this layer (its tar-split record included). */
  deltaBytes: number;
  /** The plan taken once the TOC was read. */
  chosen: 'mixed' | 'partial' | 'layer';
}

const frameBytes = (f: FileFrames): number => f.chunks.reduce((a, c) => a + (c.zeros ? 0 : c.end - c.offset), 0);
const framesOf = (f: FileFrames): Range[] => f.chunks.filter((c) => !c.zeros).map((c) => ({ start: c.offset, end: c.end }));

/**
 * The per-file source for one layer: plugs into the import planner
 * (src/plan/layers.ts, hooks.fileSources). `layerSize` is the blob's size;
 * `onDone` is told once the layer's plan is final (so the pull's summary follows).
 */
export function mixedFileSource(d: PerFileDelta, layerSize: number, onDone: (s: MixedStats) => void): FileSourceHook {
  let stats: MixedStats | undefined;
  const provided = new Set<string>();
  /** Content digest ↔ object of what the deltas gave, for the content index (as for fetched files). */
  const rows: Array<{ digest: string; size: number; object: string }> = [];
  return {
    async provide(files, local, meta) {
      const read0 = d.bytesRead();
      const costs: MixedStats['costs'] = { layer: layerSize, deltas: d.plan.deltaCost ?? null, partial: null, mixed: null };
      stats = { costs, filesFromDeltas: 0, failed: 0, deltaBytes: d.splitBytes + d.plan.bytes, chosen: 'partial' };
      // Each content once (the reader fetches a file twice in the layer once).
      const missing = [...new Map(files.filter((f) => !local.has(f.digest)).map((f) => [f.digest, f])).values()];
      // Costs from here on (the TOC and the delta's tar-split record are already read); reported as whole-plan totals.
      const partialNow = mergedSize(missing.flatMap(framesOf));
      costs.partial = meta.bytes + partialNow;
      // The pairing: by position, same count, same sizes; without the record, by a size only one entry has.
      const refs = d.refs;
      const keyOf = new Map<FileFrames, string>();
      if (refs && refs.length === files.length && refs.every((r, i) => r.size === files[i]!.size)) {
        files.forEach((f, i) => keyOf.set(f, refs[i]!.digest));
      } else if (!refs) {
        const bySize = new Map<number, string[]>();
        for (const c of d.candidates) {
          const l = bySize.get(c.size);
          if (l) l.push(c.digest); else bySize.set(c.size, [c.digest]);
        }
        const sizes = new Map<number, number>();
        for (const f of missing) sizes.set(f.size, (sizes.get(f.size) ?? 0) + 1);
        for (const f of missing) {
          const l = bySize.get(f.size);
          if (l?.length === 1 && sizes.get(f.size) === 1) keyOf.set(f, l[0]!);
        }
      }
      if (keyOf.size === 0) return;
      const fromDeltas = new Set<FileFrames>();
      const ranged: FileFrames[] = [];
      for (const f of missing) {
        const key = keyOf.get(f);
        if (key === undefined) { ranged.push(f); continue; }
        const cost = d.staged(key) !== undefined ? 0 : d.planner.cost(key);
        if (cost < frameBytes(f)) fromDeltas.add(f); else ranged.push(f);
      }
      const mixedNow = d.planner.closure([...fromDeltas].filter((f) => d.staged(keyOf.get(f)!) === undefined).map((f) => keyOf.get(f)!)).bytes
        + mergedSize(ranged.flatMap(framesOf));
      costs.mixed = meta.bytes + d.splitBytes + mixedNow;
      if (fromDeltas.size === 0 || mixedNow >= partialNow || mixedNow >= layerSize) {
        stats.chosen = layerSize < partialNow ? 'layer' : 'partial';
        return; // the ranges alone (the partial reader goes whole when most of the layer is missing)
      }
      stats.chosen = 'mixed';
      // Entries first, coalesced; then each object rebuilt and checked (fs-verity in materialize, SHA-256 here).
      await d.prefetch([...fromDeltas].map((f) => keyOf.get(f)!));
      for (const f of fromDeltas) {
        if (local.has(f.digest)) continue; // the same content twice in the layer
        const key = keyOf.get(f)!;
        try {
          const bytes = await d.materialize(key);
          if (sha256Digest(bytes) !== f.digest) {
            stats.failed++; // paired wrongly: its range is fetched
            continue;
          }
        } catch (e) {
          if (!isCowshedError(e) || e.code === 'ENOSPC') throw e;
          stats.failed++; // a bad entry (and no other producer): the file's range instead
          continue;
        }
        local.set(f.digest, key);
        provided.add(key);
        rows.push({ digest: f.digest, size: f.size, object: key });
        stats.filesFromDeltas++;
      }
      stats.deltaBytes += d.bytesRead() - read0;
    },
    open(hex) {
      const p = provided.has(hex) ? d.staged(hex) : undefined;
      return p === undefined ? undefined : createReadStream(p, { highWaterMark: 1 << 20 }) as AsyncIterable<Uint8Array>;
    },
    report(r) {
      if (!stats) return;
      r.costs = stats.costs;
      r.deltaBytes = stats.deltaBytes;
      if (r.method !== 'partial') stats.chosen = 'layer'; // the blob came whole after all
      if (stats.chosen === 'mixed' && stats.filesFromDeltas > 0) {
        r.plan = (r.filesFetched ?? 0) === 0 ? 'deltas' : 'mixed';
        r.filesFromDeltas = stats.filesFromDeltas;
        r.fetched = [...(r.fetched ?? []), ...rows];
      }
      onDone(stats);
    },
  };
}
