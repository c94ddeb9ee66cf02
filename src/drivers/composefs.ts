// composefs driver: an image is its EROFS metadata image, loop-mounted
// read-only once (the "lower"), with the object store as overlayfs's
// data-only layer. The lower is shared by the image's read-only mount and
// every mounted container of the image, and stays mounted while any of them
// needs it (derived from the database, not counted separately).
//
// Mounts are runtime state: before each mount operation the database is
// reconciled with /proc/self/mountinfo, so mounts lost to a crash or reboot
// are simply made again when next needed. Mount operations run inside a
// write transaction, so two processes never mount the same thing twice.
import { mkdirSync, mkdtempSync, rmSync, readFileSync, createReadStream } from 'node:fs';
import { digestOfStream } from '../oci/digest.ts';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { mountErofs, mountOverlay, mountPoints, unmount } from '../util/mount.ts';
import { CowshedError } from '../util/errors.ts';
import { fsverityDigest, toHex } from '../composefs/fsverity.ts';
import { registerDriver, type StorageDriver } from './driver.ts';
import { diffUpper } from '../containers/diff.ts';
import { ensureFlat, isStacked, stackOf, withStacks } from '../composefs/stack.ts';

export interface ContainerPaths { dir: string; upper: string; work: string; merged: string }

export function containerPaths(store: Store, id: string): ContainerPaths {
  const dir = join(store.paths.containers, id);
  return { dir, upper: join(dir, 'upper'), work: join(dir, 'work'), merged: join(dir, 'merged') };
}

function tryUnmount(dir: string): void {
  try { unmount(dir); } catch { /* not mounted, or busy: reported when it matters */ }
}

/**
 * A process killed between its mount and its commit leaves a mount the
 * database does not know about: take it down before mounting there again
 * (mounts would stack) or removing the directory (rm would walk into it).
 */
function clearStaleMount(dir: string): void {
  for (let i = 0; i < 8 && mountPoints().has(dir); i++) unmount(dir);
}

/** Bring the mount tables in line with what is really mounted. Call inside a transaction. */
function reconcile(store: Store): void {
  const { db } = store;
  const live = mountPoints();
  for (const r of db.all<{ composefs: string; path: string }>('SELECT composefs, path FROM lower_mounts')) {
    if (!live.has(r.path)) db.run('DELETE FROM lower_mounts WHERE composefs = ?', r.composefs);
  }
  const mounted = new Set(db.all<{ composefs: string }>('SELECT composefs FROM lower_mounts').map((r) => r.composefs));
  // A stacked image needs every image of its stack mounted.
  const lowers = { has: (composefs: string): boolean => stackOf(store, composefs).every((c) => mounted.has(c)) };
  for (const r of db.all<{ composefs: string; path: string }>('SELECT composefs, path FROM image_mounts')) {
    if (!live.has(r.path) || !lowers.has(r.composefs)) {
      if (live.has(r.path)) tryUnmount(r.path);
      db.run('DELETE FROM image_mounts WHERE composefs = ?', r.composefs);
    }
  }
  // Containers of the other drivers are not overlay mounts of this kind.
  const overlayContainers = store.driver === 'composefs' || store.driver === 'overlay'
    ? db.all<{ id: string; composefs: string }>('SELECT id, composefs FROM containers WHERE mounted = 1') : [];
  for (const c of overlayContainers) {
    const merged = containerPaths(store, c.id).merged;
    if (!live.has(merged) || !lowers.has(c.composefs)) {
      if (live.has(merged)) tryUnmount(merged);
      db.run('UPDATE containers SET mounted = 0 WHERE id = ?', c.id);
    }
  }
}

/** Run a mount operation with the mount tables reconciled, inside one write transaction. */
export function withMountLock<T>(store: Store, fn: () => T): T {
  return store.db.tx(() => {
    reconcile(store);
    return fn();
  });
}

/** The EROFS mount of an image, mounting it if needed. Call inside a transaction. */
export function ensureLower(store: Store, composefs: string): string {
  const row = store.db.get<{ path: string }>('SELECT path FROM lower_mounts WHERE composefs = ?', composefs);
  if (row) return row.path;
  const path = join(store.paths.mounts, composefs.slice(0, 16), 'lower');
  mkdirSync(path, { recursive: true, mode: 0o700 });
  clearStaleMount(path);
  mountErofs(store.imagePath(composefs), path);
  store.db.run('INSERT INTO lower_mounts (composefs, path) VALUES (?, ?)', composefs, path);
  return path;
}

/** The EROFS mounts of an image's stack, top first (one for a flat image). Call inside a transaction. */
export function ensureLowers(store: Store, composefs: string): string[] {
  return stackOf(store, composefs).map((c) => ensureLower(store, c));
}

/**
 * Unmount the EROFS mounts of an image's stack that nothing uses any more
 * (the images of a stack are shared with its parent images). Call inside a transaction.
 */
export function releaseLower(store: Store, composefs: string): void {
  const chain = stackOf(store, composefs);
  if (chain.length === 1) return releaseOne(store, composefs);
  const used = withStacks(store, store.db.all<{ composefs: string }>(
    'SELECT composefs FROM image_mounts UNION SELECT composefs FROM containers WHERE mounted = 1').map((r) => r.composefs));
  for (const c of chain) if (!used.has(c)) releaseOne(store, c, true);
}

function releaseOne(store: Store, composefs: string, checked = false): void {
  const { db } = store;
  const used = !checked && (db.get('SELECT 1 FROM image_mounts WHERE composefs = ?', composefs)
    ?? db.get('SELECT 1 FROM containers WHERE composefs = ? AND mounted = 1', composefs)
    // A flat image can be the base of a stack something mounts.
    ?? (db.get('SELECT 1 FROM composefs_stack WHERE parent = ?', composefs) && withStacks(store, db.all<{ composefs: string }>(
      'SELECT composefs FROM image_mounts UNION SELECT composefs FROM containers WHERE mounted = 1').map((r) => r.composefs)).has(composefs)));
  if (used) return;
  const row = db.get<{ path: string }>('SELECT path FROM lower_mounts WHERE composefs = ?', composefs);
  if (!row) return;
  clearStaleMount(join(row.path, '..', 'merged'));
  unmount(row.path);
  db.run('DELETE FROM lower_mounts WHERE composefs = ?', composefs);
  rmSync(join(row.path, '..'), { recursive: true, force: true });
}

/** Drop stale mount rows (after a crash or reboot). */
export function reconcileMounts(store: Store): void {
  store.db.tx(() => reconcile(store));
}

/**
 * Mount an image read-only and return the path of its root. With verify,
 * the image file and every object it needs are re-hashed first (this
 * kernel has no fs-verity to do it on access).
 */
export async function mountImage(store: Store, ref: string, opts: { verify?: boolean } = {}): Promise<string> {
  let info = store.resolveImage(ref);
  if (opts.verify) {
    await verifyImage(store, info.id, info.composefs);
    info = store.resolveImage(ref); // a stacked image was flattened to be verified: mount what was verified
  }
  return store.db.tx(() => {
    // rmi may have removed the image since it was resolved (verify takes a while): gc would then take its objects from under the mount.
    if (!store.db.get('SELECT 1 FROM images WHERE id = ?', info.id)) throw new CowshedError('ENOENT', `image ${ref} was removed while it was being mounted`);
    reconcile(store);
    const existing = store.db.get<{ path: string }>('SELECT path FROM image_mounts WHERE composefs = ?', info.composefs);
    if (existing) {
      store.db.run('UPDATE image_mounts SET refs = refs + 1 WHERE composefs = ?', info.composefs);
      return existing.path;
    }
    const lower = ensureLowers(store, info.composefs);
    const path = join(store.paths.mounts, info.composefs.slice(0, 16), 'merged');
    mkdirSync(path, { recursive: true, mode: 0o755 });
    clearStaleMount(path);
    try {
      mountOverlay(path, { lower, data: [store.paths.objects], readonly: true });
    } catch (e) {
      releaseLower(store, info.composefs);
      throw e;
    }
    store.db.run('INSERT INTO image_mounts (composefs, path, refs) VALUES (?, ?, 1)', info.composefs, path);
    return path;
  });
}

/** Drop one reference; the last one unmounts. `all` unmounts whatever the count. */
export function unmountImage(store: Store, ref: string, opts: { all?: boolean } = {}): boolean {
  const info = store.resolveImage(ref);
  return store.db.tx(() => {
    reconcile(store);
    // Mounted as a stack before it was flattened: that mount is the one to drop.
    const composefs = store.db.get<{ composefs: string }>('SELECT composefs FROM image_mounts WHERE composefs = ?', info.composefs)?.composefs
      ?? store.db.get<{ composefs: string }>('SELECT s.composefs FROM composefs_stack s JOIN image_mounts m ON m.composefs = s.composefs WHERE s.flat = ?', info.composefs)?.composefs
      ?? info.composefs;
    const row = store.db.get<{ path: string; refs: number }>('SELECT path, refs FROM image_mounts WHERE composefs = ?', composefs);
    if (!row) throw new CowshedError('EINVAL', `image ${ref} is not mounted`);
    if (row.refs > 1 && !opts.all) {
      store.db.run('UPDATE image_mounts SET refs = refs - 1 WHERE composefs = ?', composefs);
      return false;
    }
    unmount(row.path);
    store.db.run('DELETE FROM image_mounts WHERE composefs = ?', composefs);
    rmSync(row.path, { recursive: true, force: true });
    releaseLower(store, composefs);
    return true;
  });
}

/** Mount a container's writable root (idempotent); returns its path. */
export function mountContainer(store: Store, id: string): string {
  return store.db.tx(() => {
    reconcile(store);
    const c = store.db.get<{ composefs: string; mounted: number }>('SELECT composefs, mounted FROM containers WHERE id = ?', id);
    if (!c) throw new CowshedError('ENOENT', `no such container: ${id}`);
    const p = containerPaths(store, id);
    if (c.mounted) return p.merged;
    // The container row is written before the driver runs: a create killed before its
    // directories were made leaves them to make here (an empty upper is what it would have had).
    mkdirSync(p.upper, { recursive: true, mode: 0o755 });
    mkdirSync(p.work, { recursive: true, mode: 0o700 });
    mkdirSync(p.merged, { recursive: true, mode: 0o755 });
    clearStaleMount(p.merged);
    const lower = ensureLowers(store, c.composefs);
    try {
      mountOverlay(p.merged, { lower, data: [store.paths.objects], upper: p.upper, work: p.work });
    } catch (e) {
      releaseLower(store, c.composefs);
      throw e;
    }
    store.db.run('UPDATE containers SET mounted = 1 WHERE id = ?', id);
    return p.merged;
  });
}

export function unmountContainer(store: Store, id: string): void {
  store.db.tx(() => {
    reconcile(store);
    const c = store.db.get<{ composefs: string; mounted: number }>('SELECT composefs, mounted FROM containers WHERE id = ?', id);
    if (!c) throw new CowshedError('ENOENT', `no such container: ${id}`);
    if (!c.mounted) { clearStaleMount(containerPaths(store, id).merged); return; }
    unmount(containerPaths(store, id).merged);
    store.db.run('UPDATE containers SET mounted = 0 WHERE id = ?', id);
    releaseLower(store, c.composefs);
  });
}

/**
 * The tree of an image, read-only, for reading alongside its containers
 * (diff): a flat image's EROFS mount as it is; for a stack, an
 * overlay of its EROFS mounts made for the caller and taken down by close().
 */
export function openImageView(store: Store, composefs: string): { dir: string; close: () => void } {
  const lower = withMountLock(store, () => ensureLowers(store, composefs));
  if (lower.length === 1) return { dir: lower[0]!, close: () => {} };
  const dir = mkdtempSync(join(store.paths.mounts, `view-${process.pid}-`));
  try {
    mountOverlay(dir, { lower, data: [store.paths.objects], readonly: true });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return { dir, close: () => { unmount(dir); rmSync(dir, { recursive: true, force: true }); } };
}

/** Where a mounted container's image tree is (its EROFS mount; a flat image only: see openImageView). */
export function containerLower(store: Store, id: string): string {
  const path = mountContainer(store, id) && store.db.get<{ path: string }>(
    'SELECT l.path FROM lower_mounts l JOIN containers c ON c.composefs = l.composefs WHERE c.id = ?', id,
  )?.path;
  if (!path) throw new CowshedError('ECORRUPT', `container ${id}: its image is not mounted`);
  return path;
}

/** Userspace verification: the image file's digest, then every object's. */
export async function verifyImage(store: Store, id: string, stackTop: string): Promise<void> {
  // A stacked image is verified (and then mounted) as its single composefs image.
  const composefs = isStacked(store, stackTop) ? await ensureFlat(store, id) : stackTop;
  let image: Buffer;
  try { image = readFileSync(store.imagePath(composefs)); } catch {
    throw new CowshedError('ECORRUPT', `image ${id}: composefs image ${composefs} is missing`);
  }
  const got = toHex(fsverityDigest(image));
  if (got !== composefs) throw new CowshedError('EDIGEST', `image ${id}: composefs image ${composefs} is corrupt (digest ${got})`);
  // The manifest, config and tar-split records define the image as much as its files do (export rebuilds from them).
  const blobs = [
    { digest: id, what: 'manifest' },
    ...store.db.all<{ config_digest: string }>('SELECT config_digest FROM images WHERE id = ?', id).map((r) => ({ digest: r.config_digest, what: 'config' })),
    ...store.db.all<{ idx: number; split_digest: string }>('SELECT idx, split_digest FROM layers WHERE image_id = ? ORDER BY idx', id)
      .map((r) => ({ digest: r.split_digest, what: `tar-split record of layer ${r.idx + 1}` })),
  ];
  for (const b of blobs) {
    let real: string;
    try { real = (await digestOfStream(createReadStream(store.blobs.path(b.digest)))).digest; } catch {
      throw new CowshedError('ECORRUPT', `image ${id}: ${b.what} ${b.digest} is missing`);
    }
    if (real !== b.digest) throw new CowshedError('EDIGEST', `image ${id}: ${b.what} ${b.digest} is corrupt (digest ${real})`);
  }
  const objects = store.db.all<{ digest: string }>('SELECT digest FROM image_objects WHERE image_id = ?', id);
  for (const { digest } of objects) {
    const real = await store.objects.verify(digest);
    if (real === undefined) throw new CowshedError('ECORRUPT', `image ${id}: object ${digest} is missing`);
    if (real !== digest) throw new CowshedError('EDIGEST', `image ${id}: object ${digest} is corrupt (digest ${real})`);
  }
}

export const composefsDriver: StorageDriver = {
  check() { /* overlay and erofs are checked by mounting */ },
  create(store, c, opts) {
    const p = containerPaths(store, c.id);
    mkdirSync(p.upper, { mode: 0o755 });
    mkdirSync(p.work, { mode: 0o700 });
    mkdirSync(p.merged, { mode: 0o755 });
    if (opts?.mount !== false) mountContainer(store, c.id);
  },
  mount: (store, c) => mountContainer(store, c.id),
  unmount: (store, c) => unmountContainer(store, c.id),
  remove: (store, c) => unmountContainer(store, c.id),
  rootfs: (store, c) => containerPaths(store, c.id).merged,
  diff: (store, c) => {
    mountContainer(store, c.id);
    const view = openImageView(store, c.composefs);
    try { return diffUpper(containerPaths(store, c.id).upper, view.dir); } finally { view.close(); }
  },
};
registerDriver('composefs', composefsDriver);
