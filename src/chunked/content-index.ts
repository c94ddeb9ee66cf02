// Content SHA-256 → object index. Objects are named by their fs-verity
// digest; zstd:chunked TOCs name files by the plain SHA-256 of their
// content. The index maps one to the other, filled lazily: a file the TOC
// asks for is looked up; on a miss, the store's not-yet-indexed objects of
// the same size are hashed once and recorded, so each object is hashed at
// most once over the life of the store. Rows of objects gc removed are
// ignored (every use checks the object is there, and every byte read is
// verified against the digest anyway).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Store } from '../store/store.ts';
import type { PlanHooks } from '../plan/layers.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS content_sha256 (
  object TEXT PRIMARY KEY,          -- fs-verity hex of an object
  sha256 TEXT NOT NULL,             -- plain sha256 hex of its content
  size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS content_sha256_by_sha ON content_sha256 (sha256);
`;

const SMALL_OBJECT = 1 << 20;

export function ensureContentIndex(store: Store): void {
  store.db.sql.exec(SCHEMA);
}

/** Records objects whose content SHA-256 is known (files fetched by a partial pull). */
export function recordContent(store: Store, rows: Array<{ object: string; sha256: string; size: number }>): void {
  if (rows.length === 0) return;
  ensureContentIndex(store);
  store.db.tx(() => {
    for (const r of rows) store.db.run('INSERT OR IGNORE INTO content_sha256 (object, sha256, size) VALUES (?, ?, ?)', r.object, r.sha256, r.size);
  });
}

/**
 * Finds stored objects for content digests ("sha256:<hex>" with sizes).
 * Returns digest → object hex for those found.
 */
export function lookupContent(store: Store, wanted: Array<{ digest: string; size: number }>): Map<string, string> {
  ensureContentIndex(store);
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

/** The planner's per-file hooks over a store: lookups here, ranges staged in its tmp/. */
export function storeFileHooks(store: Store): NonNullable<PlanHooks['files']> {
  return {
    lookup: (files) => lookupContent(store, files),
    // Small objects in one read: a stream per file costs more than the file (thousands of them).
    openObject: (hex) => {
      const size = store.objects.size(hex);
      if (size !== undefined && size <= SMALL_OBJECT) return (async function* () { yield readFileSync(store.objects.path(hex)); })();
      return store.objects.open(hex);
    },
    tmpDir: store.paths.tmp,
  };
}
