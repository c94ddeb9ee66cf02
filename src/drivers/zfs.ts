// zfs: each image's tree is written once into a dataset and snapshotted; a
// container is a clone of that snapshot. On this kind of host there is no ZFS
// kernel module, only zfs-fuse (Debian), which works (datasets, snapshots,
// clones, devices) but stores no extended attributes: images that carry any
// (security.capability, user.*) are refused rather than silently changed.
// The store's directory must be inside a mounted ZFS dataset; the pool and
// the zfs-fuse daemon are the administrator's.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { registerDriver, type ContainerRef, type StorageDriver } from './driver.ts';
import { materializeTree } from './materialize.ts';
import { imageTreeOf } from './vfs.ts';
import { diffAgainstTree } from '../containers/tree-diff.ts';
import { CowshedError } from '../util/errors.ts';
import { walk } from '../tree/node.ts';

function zfs(args: string[], what: string): string {
  // zfs-fuse reports a dataset busy for a moment after its files were used.
  for (let attempt = 1; ; attempt++) {
    try {
      return execFileSync('zfs', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    } catch (e) {
      const msg = String((e as { stderr?: string }).stderr ?? (e as Error).message).trim().split('\n').pop() ?? '';
      if (/busy/.test(msg) && attempt < 10) {
        execFileSync('sleep', ['0.5']);
        continue;
      }
      throw new CowshedError('ETOOL', `${what} failed: ${msg}`, { cause: e });
    }
  }
}

/** The dataset mounted at or above the store directory (from /proc/self/mounts). */
function storeDataset(store: Store): string {
  let best: { ds: string; mnt: string } | undefined;
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [ds, mnt, type] = line.split(' ');
    if (!ds || !mnt || (type !== 'zfs' && type !== 'fuse.zfs')) continue;
    if ((store.paths.root === mnt || store.paths.root.startsWith(mnt + '/')) && (!best || mnt.length > best.mnt.length)) best = { ds, mnt };
  }
  if (!best) throw new CowshedError('EUNSUPPORTED', `the zfs driver needs the store inside a mounted ZFS dataset; ${store.paths.root} is not (use --driver composefs, overlay, btrfs or vfs)`);
  return best.ds;
}

const imageDataset = (store: Store, composefs: string): string => `${storeDataset(store)}/cowshed-img-${composefs.slice(0, 16)}`;
const containerDataset = (store: Store, c: ContainerRef): string => `${storeDataset(store)}/cowshed-ctr-${c.id.slice(0, 16)}`;
const rootfsOf = (store: Store, c: ContainerRef): string => join(store.paths.containers, c.id, 'rootfs');

function exists(ds: string): boolean {
  try { execFileSync('zfs', ['list', '-H', '-o', 'name', ds], { stdio: 'ignore', timeout: 60_000 }); return true; } catch { return false; }
}

function imageSnapshot(store: Store, composefs: string): string {
  const ds = imageDataset(store, composefs);
  const snap = `${ds}@image`;
  if (exists(snap)) return snap;
  const tree = imageTreeOf(store, composefs);
  for (const [path, n] of walk(tree)) {
    if (n.xattrs.size > 0) {
      throw new CowshedError('EUNSUPPORTED', `zfs-fuse stores no extended attributes, and this image has some (${path}: ${[...n.xattrs.keys()][0]}); use another driver`);
    }
  }
  if (exists(ds)) zfs(['destroy', '-r', ds], 'removing a half-made image dataset');
  const mnt = join(store.paths.root, 'zfs-images', composefs.slice(0, 16));
  mkdirSync(mnt, { recursive: true, mode: 0o700 });
  zfs(['create', '-o', `mountpoint=${mnt}`, ds], 'creating the image dataset');
  materializeTree(tree, mnt, store.paths.objects, 'copy');
  zfs(['snapshot', snap], 'snapshotting the image dataset');
  return snap;
}

export const zfsDriver: StorageDriver = {
  check(store) { storeDataset(store); },
  create(store, c) {
    const snap = imageSnapshot(store, c.composefs);
    const root = rootfsOf(store, c);
    mkdirSync(root, { recursive: true, mode: 0o755 });
    zfs(['clone', '-o', `mountpoint=${root}`, snap, containerDataset(store, c)], 'cloning the image');
    store.db.tx(() => store.db.run('UPDATE containers SET mounted = 1 WHERE id = ?', c.id));
  },
  mount: (store, c) => rootfsOf(store, c),
  unmount() { /* clones stay mounted */ },
  remove(store, c) {
    const ds = containerDataset(store, c);
    if (exists(ds)) zfs(['destroy', '-f', ds], 'destroying the container clone');
    rmSync(join(store.paths.containers, c.id), { recursive: true, force: true });
  },
  rootfs: rootfsOf,
  diff: (store, c) => diffAgainstTree(rootfsOf(store, c), imageTreeOf(store, c.composefs)),
  pruneImages(store, live) {
    const dir = join(store.paths.root, 'zfs-images');
    if (!existsSync(dir)) return;
    const keep = new Set([...live].map((h) => h.slice(0, 16)));
    for (const line of zfs(['list', '-H', '-o', 'name', '-r', storeDataset(store)], 'listing datasets').split('\n')) {
      const m = /\/cowshed-img-([0-9a-f]{16})$/.exec(line);
      if (m && !keep.has(m[1]!)) {
        try { zfs(['destroy', '-r', line], 'destroying an image dataset'); } catch { /* clones still use it */ }
      }
    }
  },
};
registerDriver('zfs', zfsDriver);
