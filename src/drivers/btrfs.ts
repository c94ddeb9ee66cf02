// btrfs: each image's tree is written once into a read-only subvolume (file
// contents reflinked from the object store, on the same filesystem); a
// container is a writable snapshot of it: one ioctl, constant time. Its diff
// compares the snapshot with the image's recorded tree, so deletions and
// metadata-only changes are exact (btrfs find-new would miss deletions).
import { existsSync, mkdirSync, renameSync, statfsSync, readdirSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Store } from '../store/store.ts';
import { registerDriver, type ContainerRef, type StorageDriver } from './driver.ts';
import { materializeTree } from './materialize.ts';
import { imageTreeOf } from './vfs.ts';
import { diffAgainstTree } from '../containers/tree-diff.ts';
import { CowshedError } from '../util/errors.ts';
import { tmpOfLiveProcess } from '../store/leases.ts';

const BTRFS_MAGIC = 0x9123683e;

function btrfs(args: string[], what: string): string {
  try {
    return execFileSync('btrfs', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const msg = String((e as { stderr?: string }).stderr ?? (e as Error).message).trim().split('\n').pop();
    throw new CowshedError('ETOOL', `${what} failed: ${msg}`, { cause: e });
  }
}

const imagesDir = (store: Store): string => join(store.paths.root, 'btrfs-images');
const rootfsOf = (store: Store, c: ContainerRef): string => join(store.paths.containers, c.id, 'rootfs');

/**
 * The container's snapshot, taken now if it is not there yet: the container
 * row is written before the driver runs, so a create killed before its
 * snapshot leaves a container without one. A snapshot is one ioctl, whole
 * or absent, so taking it later gives the container it should have had.
 */
function ensureSnapshot(store: Store, c: ContainerRef): string {
  const root = rootfsOf(store, c);
  if (existsSync(root)) return root;
  const image = imageSubvolume(store, c.composefs);
  btrfs(['subvolume', 'snapshot', image, root], 'snapshotting the image');
  return root;
}

/** The image's read-only subvolume, made on first use. */
function imageSubvolume(store: Store, composefs: string): string {
  const dir = imagesDir(store);
  const path = join(dir, composefs);
  if (existsSync(path)) return path;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  btrfs(['subvolume', 'create', tmp], 'creating a btrfs subvolume');
  try {
    materializeTree(imageTreeOf(store, composefs), tmp, store.paths.objects, 'reflink');
    btrfs(['property', 'set', '-ts', tmp, 'ro', 'true'], 'making the image subvolume read-only');
    renameSync(tmp, path);
  } catch (e) {
    try { btrfs(['property', 'set', '-ts', tmp, 'ro', 'false'], 'cleanup'); } catch { /* not made read-only yet */ }
    try { btrfs(['subvolume', 'delete', tmp], 'cleanup'); } catch { /* nothing to delete */ }
    throw e;
  }
  return path;
}

/** Warn, well before it bites, when btrfs is running out of room for metadata. */
function metadataWarning(store: Store): void {
  let out: string;
  try { out = btrfs(['filesystem', 'usage', '-b', store.paths.root], 'btrfs filesystem usage'); } catch { return; }
  const unallocated = Number(/Device unallocated:\s+(\d+)/.exec(out)?.[1] ?? NaN);
  const meta = /Metadata,[^:]*: Size:(\d+), Used:(\d+)/.exec(out);
  if (!meta || Number.isNaN(unallocated)) return;
  const [size, used] = [Number(meta[1]), Number(meta[2])];
  if (used / size > 0.75 && unallocated < 1 << 30) {
    process.stderr.write(`cowshed: warning: btrfs metadata is ${Math.round((100 * used) / size)}% full and only ${Math.round(unallocated / 2 ** 20)} MiB is unallocated; free chunks with: btrfs balance start -dusage=50 ${store.paths.root}\n`);
  }
}

export const btrfsDriver: StorageDriver = {
  check(store) {
    const type = statfsSync(store.paths.root).type;
    if (type !== BTRFS_MAGIC) {
      throw new CowshedError('EUNSUPPORTED', `the btrfs driver needs the store on a btrfs filesystem; ${store.paths.root} is not (use --driver composefs, overlay, vfs or zfs)`);
    }
  },
  create(store, c) {
    ensureSnapshot(store, c);
    store.db.tx(() => store.db.run('UPDATE containers SET mounted = 1 WHERE id = ?', c.id));
    metadataWarning(store);
  },
  mount: ensureSnapshot,
  unmount() { /* snapshots are always there */ },
  remove(store, c) {
    const root = rootfsOf(store, c);
    if (existsSync(root)) btrfs(['subvolume', 'delete', root], 'deleting the container snapshot');
    rmSync(join(store.paths.containers, c.id), { recursive: true, force: true });
  },
  rootfs: rootfsOf,
  diff: (store, c) => diffAgainstTree(ensureSnapshot(store, c), imageTreeOf(store, c.composefs)),
  pruneImages(store, live) {
    const dir = imagesDir(store);
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      if (live.has(name) || tmpOfLiveProcess(name)) continue;
      const path = join(dir, name);
      try { btrfs(['property', 'set', '-ts', path, 'ro', 'false'], 'unlocking an image subvolume'); } catch { /* a half-made one */ }
      btrfs(['subvolume', 'delete', path], 'deleting an image subvolume');
    }
  },
};
registerDriver('btrfs', btrfsDriver);
