// gc: remove what no image needs: objects, composefs images, blobs, build
// records of removed images, and temporary files of dead processes. Holds the
// gc lease, so no import or commit runs meanwhile.
import { readdirSync, rmSync, statSync } from 'node:fs';
import { volumesUsage } from '../volumes/volumes.ts';
import { join } from 'node:path';
import type { Store } from './store.ts';
import { acquireLease, pidAlive } from './leases.ts';
import { driverFor } from '../drivers/driver.ts';
import { withStacks } from '../composefs/stack.ts';

export interface GcReport { objectsRemoved: number; imagesRemoved: number; blobsRemoved: number; bytesFreed: number }

export async function gc(store: Store): Promise<GcReport> {
  const lease = await acquireLease(store.db, 'gc');
  try {
    const { db } = store;
    // One snapshot of what is live, in one transaction: rmi takes no lease, and an image it
    // removes between these reads would otherwise keep its build record (so a re-import
    // reuses it) while its manifest, config and tar-split blobs are deleted.
    const { liveImages, liveObjects, liveBlobs } = db.tx(() => {
      // A stacked image needs every image of its stack (composefs/stack.ts); the stack records of the rest go.
      const liveImages = withStacks(store, db.all<{ composefs: string }>('SELECT composefs FROM images UNION SELECT composefs FROM containers UNION SELECT composefs FROM lower_mounts').map((r) => r.composefs));
      for (const r of db.all<{ composefs: string }>('SELECT composefs FROM composefs_stack')) {
        if (!liveImages.has(r.composefs)) db.run('DELETE FROM composefs_stack WHERE composefs = ?', r.composefs);
      }
      // Build records of removed images go: their objects are about to.
      db.run('DELETE FROM builds WHERE manifest_digest NOT IN (SELECT id FROM images)');
      db.run('DELETE FROM objects WHERE digest NOT IN (SELECT digest FROM image_objects)');
      const liveObjects = new Set(db.all<{ digest: string }>('SELECT DISTINCT digest FROM image_objects').map((r) => r.digest));
      const liveBlobs = new Set<string>();
      for (const r of db.all<{ id: string; config_digest: string }>('SELECT id, config_digest FROM images')) { liveBlobs.add(r.id); liveBlobs.add(r.config_digest); }
      for (const r of db.all<{ split_digest: string; entries_digest: string | null }>('SELECT split_digest, entries_digest FROM layers')) {
        liveBlobs.add(r.split_digest);
        if (r.entries_digest) liveBlobs.add(r.entries_digest);
      }
      for (const r of db.all<{ objects_blob: string }>('SELECT objects_blob FROM builds')) liveBlobs.add(r.objects_blob);
      for (const r of db.all<{ entries_digest: string }>('SELECT entries_digest FROM composefs_stack')) liveBlobs.add(r.entries_digest);
      return { liveImages, liveObjects, liveBlobs };
    });

    const report: GcReport = { objectsRemoved: 0, imagesRemoved: 0, blobsRemoved: 0, bytesFreed: 0 };
    const remove = (path: string): void => {
      try { report.bytesFreed += statSync(path).size; } catch { /* already gone */ }
      rmSync(path, { force: true, recursive: true });
    };
    for (const hex of store.objects.list()) {
      if (!liveObjects.has(hex)) { remove(store.objects.path(hex)); report.objectsRemoved++; }
    }
    for (const f of readdirSync(store.paths.images)) {
      if (!liveImages.has(f)) { remove(join(store.paths.images, f)); report.imagesRemoved++; }
    }
    for (const d of store.blobs.list()) {
      if (!liveBlobs.has(d)) { remove(store.blobs.path(d)); report.blobsRemoved++; }
    }
    for (const name of readdirSync(store.paths.tmp)) {
      const m = /^objects-(\d+)-/.exec(name);
      if (m && pidAlive(Number(m[1]))) continue;
      remove(join(store.paths.tmp, name));
    }
    driverFor(store).pruneImages?.(store, liveImages);
    return report;
  } finally {
    lease.release();
  }
}

export interface DfImage { id: string; names: string[]; entries: number; logicalSize: number; uniqueSize: number }
export interface DfReport {
  logicalSize: number;      // content bytes of every image, as if each had its own copy
  storedSize: number;       // bytes of distinct objects the images need
  metadataSize: number;     // composefs images, manifests, configs, tar-split records
  dedupRatio: number;       // logical / stored
  images: DfImage[];
  /** Named and anonymous volumes (<store>/volumes): bytes of their files, outside the dedup store. */
  volumes: { count: number; size: number; volumes: { name: string; size: number }[] };
}

export function df(store: Store): DfReport {
  const { db } = store;
  const images = db.all<{ id: string; entries: number; logical_size: number; composefs: string }>('SELECT id, entries, logical_size, composefs FROM images ORDER BY created');
  const stored = Number(db.get<{ s: number | null }>('SELECT SUM(size) AS s FROM objects WHERE digest IN (SELECT digest FROM image_objects)')!.s ?? 0);
  // Inline files live in the images: count their bytes as metadata.
  let metadataSize = 0;
  for (const f of readdirSync(store.paths.images)) metadataSize += statSync(join(store.paths.images, f)).size;
  for (const d of store.blobs.list()) metadataSize += statSync(store.blobs.path(d)).size;
  const out: DfImage[] = images.map((r) => ({
    id: r.id,
    names: db.all<{ name: string }>('SELECT name FROM tags WHERE image_id = ?', r.id).map((t) => t.name),
    entries: r.entries,
    logicalSize: r.logical_size,
    uniqueSize: uniqueObjectBytes(store, r.id),
  }));
  const logicalSize = images.reduce((a, r) => a + r.logical_size, 0);
  return { logicalSize, storedSize: stored, metadataSize, dedupRatio: stored > 0 ? logicalSize / stored : 1, images: out, volumes: volumesUsage(store) };
}

/** Bytes of the objects that only this image needs (what removing it would free). */
export function uniqueObjectBytes(store: Store, id: string): number {
  return Number(store.db.get<{ s: number | null }>(
    `SELECT SUM(o.size) AS s FROM image_objects io JOIN objects o ON o.digest = io.digest
     WHERE io.image_id = ? AND io.digest IN (SELECT digest FROM image_objects GROUP BY digest HAVING COUNT(*) = 1)`, id,
  )?.s ?? 0);
}
