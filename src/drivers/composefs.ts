// composefs: an image is its EROFS metadata image loop-mounted read-only,
// under an overlay whose data-only layer is the object store. One mount per
// image, shared (refcounted in the database); the database's mount rows are
// reconciled with /proc/self/mountinfo, so a crash or reboot that lost the
// mounts only means they are made again when next needed.
import { mkdirSync, rmSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { mountErofs, mountOverlay, mountPoints, unmount } from '../util/mount.ts';
import { CowshedError } from '../util/errors.ts';
import { fsverityDigest, toHex } from '../composefs/fsverity.ts';

export interface MountRow { composefs: string; lower: string; merged: string; refs: number }

/** Drop mount rows whose mounts are gone (after a crash or reboot). */
export function reconcileMounts(store: Store): void {
  const live = mountPoints();
  const rows = store.db.all<MountRow>('SELECT * FROM mounts');
  const stale = rows.filter((r) => !live.has(r.merged) || !live.has(r.lower));
  if (stale.length === 0) return;
  store.db.tx(() => {
    for (const r of stale) {
      // Half a mount (overlay gone, EROFS still there) is unmounted too.
      if (live.has(r.merged)) tryUnmount(r.merged);
      if (live.has(r.lower)) tryUnmount(r.lower);
      store.db.run('DELETE FROM mounts WHERE composefs = ?', r.composefs);
    }
  });
}

function tryUnmount(dir: string): void {
  try { unmount(dir); } catch { /* reported when it matters: the next mount fails */ }
}

/**
 * Mount an image read-only and return the path of its root. With verify,
 * the image file and every object it needs are re-hashed first (this
 * kernel has no fs-verity to do it on access).
 */
export async function mountImage(store: Store, ref: string, opts: { verify?: boolean } = {}): Promise<string> {
  const info = store.resolveImage(ref);
  if (opts.verify) await verifyImage(store, info.id, info.composefs);
  reconcileMounts(store);
  const existing = store.db.get<MountRow>('SELECT * FROM mounts WHERE composefs = ?', info.composefs);
  if (existing) {
    store.db.tx(() => store.db.run('UPDATE mounts SET refs = refs + 1 WHERE composefs = ?', info.composefs));
    return existing.merged;
  }
  const base = join(store.paths.mounts, info.composefs.slice(0, 16));
  const lower = join(base, 'lower');
  const merged = join(base, 'merged');
  mkdirSync(lower, { recursive: true, mode: 0o700 });
  mkdirSync(merged, { recursive: true, mode: 0o755 });
  mountErofs(store.imagePath(info.composefs), lower);
  try {
    mountOverlay(merged, { lower: [lower], data: [store.paths.objects], readonly: true });
  } catch (e) {
    tryUnmount(lower);
    throw e;
  }
  store.db.tx(() => store.db.run('INSERT INTO mounts (composefs, lower, merged, refs) VALUES (?, ?, ?, 1)', info.composefs, lower, merged));
  return merged;
}

/** Drop one reference; the last one unmounts. `all` unmounts whatever the count. */
export function unmountImage(store: Store, ref: string, opts: { all?: boolean } = {}): boolean {
  const info = store.resolveImage(ref);
  reconcileMounts(store);
  const row = store.db.get<MountRow>('SELECT * FROM mounts WHERE composefs = ?', info.composefs);
  if (!row) throw new CowshedError('EINVAL', `image ${ref} is not mounted`);
  if (row.refs > 1 && !opts.all) {
    store.db.tx(() => store.db.run('UPDATE mounts SET refs = refs - 1 WHERE composefs = ?', info.composefs));
    return false;
  }
  unmount(row.merged);
  unmount(row.lower);
  store.db.tx(() => store.db.run('DELETE FROM mounts WHERE composefs = ?', info.composefs));
  rmSync(join(row.merged, '..'), { recursive: true, force: true });
  return true;
}

/** Userspace verification: the image file's digest, then every object's. */
export async function verifyImage(store: Store, id: string, composefs: string): Promise<void> {
  let image: Buffer;
  try { image = readFileSync(store.imagePath(composefs)); } catch {
    throw new CowshedError('ECORRUPT', `image ${id}: composefs image ${composefs} is missing`);
  }
  const got = toHex(fsverityDigest(image));
  if (got !== composefs) throw new CowshedError('EDIGEST', `image ${id}: composefs image ${composefs} is corrupt (digest ${got})`);
  const objects = store.db.all<{ digest: string }>('SELECT digest FROM image_objects WHERE image_id = ?', id);
  for (const { digest } of objects) {
    const real = await store.objects.verify(digest);
    if (real === undefined) throw new CowshedError('ECORRUPT', `image ${id}: object ${digest} is missing`);
    if (real !== digest) throw new CowshedError('EDIGEST', `image ${id}: object ${digest} is corrupt (digest ${real})`);
  }
}
