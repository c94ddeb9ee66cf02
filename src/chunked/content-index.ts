// Content SHA-256 → object index. Objects are named by their fs-verity
// digest; zstd:chunked TOCs name files by the plain SHA-256 of their
// content. The index maps one to the other, filled lazily: a file the TOC
// asks for is looked up; on a miss, the store's not-yet-indexed objects of
// the same size are hashed once and recorded, so each object is hashed at
// most once over the life of the store. Rows of objects gc removed are
// ignored (every use checks the object is there, and every byte read is
// verified against the digest anyway).
//
// Chunk index (chunk_sha256): a chunk's SHA-256 → the content SHA-256 of a
// file holding it and where, learned from every zstd:chunked TOC the store
// sees (layers pulled or imported, partly or whole, and blobs cowshed
// writes). Keyed by content, not by object, so rows stay true whatever gc
// does; a chunk is found through the content index above, and the partial
// planner checks its bytes against the chunk digest before using them.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFileRanges } from '../transport/types.ts';
import type { Store } from '../store/store.ts';
import type { PlanHooks } from '../plan/layers.ts';

const SMALL_OBJECT = 1 << 20;
/** Files holding a chunk tried per chunk (the same chunk in many files needs one that is there). */
const CHUNK_CANDIDATES = 4;

/** Records objects whose content SHA-256 is known (files fetched by a partial pull). */
export function recordContent(store: Store, rows: Array<{ object: string; sha256: string; size: number }>): void {
  if (rows.length === 0) return;
  store.db.tx(() => {
    for (const r of rows) store.db.run('INSERT OR IGNORE INTO content_sha256 (object, sha256, size) VALUES (?, ?, ?)', r.object, r.sha256, r.size);
  });
}

/**
 * Finds stored objects for content digests ("sha256:<hex>" with sizes).
 * Returns digest → object hex for those found.
 */
export function lookupContent(store: Store, wanted: Array<{ digest: string; size: number }>): Map<string, string> {
  const found = new Map<string, string>();
  const have = (hex: string): boolean => store.objects.has(hex);
  const missing: Array<{ sha: string; size: number }> = [];
  for (const w of wanted) {
    const sha = w.digest.replace(/^sha256:/, '');
    if (found.has(w.digest)) continue;
    const rows = store.db.all<{ object: string }>('SELECT object FROM content_sha256 WHERE sha256 = ? AND size = ?', sha, w.size);
    const hit = rows.find((r) => have(r.object));
    if (hit) found.set(w.digest, hit.object);
    else missing.push({ sha, size: w.size });
  }
  if (missing.length === 0) return found;
  // Objects not indexed yet, by size: only sizes some wanted file has are hashed.
  const sizes = new Set(missing.map((m) => m.size));
  const bySize = new Map<number, string[]>();
  for (const r of store.db.all<{ digest: string; size: number }>(
    'SELECT o.digest AS digest, o.size AS size FROM objects o LEFT JOIN content_sha256 c ON c.object = o.digest WHERE c.object IS NULL',
  )) {
    if (!sizes.has(r.size)) continue;
    let l = bySize.get(r.size);
    if (!l) bySize.set(r.size, (l = []));
    l.push(r.digest);
  }
  const rows: Array<{ object: string; sha256: string; size: number }> = [];
  const learned = new Map<string, string>();
  for (const m of missing) {
    const key = `${m.sha}:${m.size}`;
    let obj = learned.get(key);
    const candidates = bySize.get(m.size) ?? [];
    while (obj === undefined && candidates.length > 0) {
      const hex = candidates.pop()!;
      let data: Buffer;
      try { data = readFileSync(store.objects.path(hex)); } catch { continue; }
      if (data.length !== m.size) continue;
      const sha = createHash('sha256').update(data).digest('hex');
      rows.push({ object: hex, sha256: sha, size: m.size });
      learned.set(`${sha}:${m.size}`, hex);
      if (sha === m.sha) obj = hex;
    }
    if (obj !== undefined) found.set(`sha256:${m.sha}`, obj);
  }
  recordContent(store, rows);
  return found;
}

/** A file's chunks as a TOC gives them ("sha256:<hex>" digests; offsets in the file). */
export interface ChunkedFile {
  digest: string;
  size: number;
  chunks: Array<{ digest: string; offset: number; size: number }>;
}

/** Records where chunks live (files of more than one chunk, from a TOC). */
export function recordChunks(store: Store, files: ChunkedFile[]): void {
  if (!files.some((f) => f.chunks.length > 0)) return;
  const hex = (d: string): string => d.replace(/^sha256:/, '');
  store.db.tx(() => {
    for (const f of files) {
      for (const c of f.chunks) {
        store.db.run('INSERT OR IGNORE INTO chunk_sha256 (chunk, file, file_size, offset, size) VALUES (?, ?, ?, ?, ?)', hex(c.digest), hex(f.digest), f.size, c.offset, c.size);
      }
    }
  });
}

/** Where a chunk's bytes are in a stored object. */
export interface StoredChunk { object: string; offset: number }

/**
 * Chunk digests ("sha256:<hex>") → stored objects holding them, a few
 * candidates each (unverified: the caller checks the bytes).
 */
export function lookupChunks(store: Store, digests: string[]): Map<string, StoredChunk[]> {
  const rows = new Map<string, Array<{ file: string; file_size: number; offset: number }>>();
  for (const d of new Set(digests)) {
    const r = store.db.all<{ file: string; file_size: number; offset: number }>(
      `SELECT file, file_size, offset FROM chunk_sha256 WHERE chunk = ? LIMIT ${CHUNK_CANDIDATES}`, d.replace(/^sha256:/, ''));
    if (r.length > 0) rows.set(d, r);
  }
  const files = new Map<string, { digest: string; size: number }>();
  for (const rs of rows.values()) for (const r of rs) files.set(`${r.file}:${r.file_size}`, { digest: `sha256:${r.file}`, size: r.file_size });
  const objects = lookupContent(store, [...files.values()]);
  const found = new Map<string, StoredChunk[]>();
  for (const [d, rs] of rows) {
    const hits = rs.flatMap((r) => { const o = objects.get(`sha256:${r.file}`); return o === undefined ? [] : [{ object: o, offset: r.offset }]; });
    if (hits.length > 0) found.set(d, hits);
  }
  return found;
}

/** `length` bytes at `offset` of a stored object; undefined when it is gone or shorter. */
export function readObjectRange(store: Store, hex: string, offset: number, length: number): Buffer | undefined {
  let out: Buffer | undefined;
  try {
    readFileRanges(store.objects.path(hex), offset, length, [{ start: 0, end: length }], (_, b) => { out = b; }, `object ${hex}`);
  } catch {
    return undefined;
  }
  return out;
}

/** The planner's per-file hooks over a store: lookups here, ranges staged in its tmp/. */
export function storeFileHooks(store: Store, opts: { chunks?: boolean } = {}): NonNullable<PlanHooks['files']> {
  return {
    lookup: (files) => lookupContent(store, files),
    // Chunk-level reuse (off: a file not stored whole is fetched whole).
    ...(opts.chunks === false ? {} : {
      lookupChunks: (digests: string[]) => lookupChunks(store, digests),
      readObject: (hex: string, offset: number, length: number) => readObjectRange(store, hex, offset, length),
    }),
    // Small objects in one read: a stream per file costs more than the file (thousands of them).
    openObject: (hex) => {
      const size = store.objects.size(hex);
      if (size !== undefined && size <= SMALL_OBJECT) return (async function* () { yield readFileSync(store.objects.path(hex)); })();
      return store.objects.open(hex);
    },
    tmpDir: store.paths.tmp,
  };
}
