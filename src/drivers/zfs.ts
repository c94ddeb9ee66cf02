// zfs: each image's tree is written once into a dataset and snapshotted; a
// container is a clone of that snapshot. On this kind of host there is no ZFS
// kernel module, only zfs-fuse (Debian), which works (datasets, snapshots,
// clones, devices, names of any bytes up to 255) but cannot hold all of an
// image (see zfsFuseCannotHold): such images are refused, naming the first
// entry, rather than silently changed.
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
import { walk, type FsNode } from '../tree/node.ts';
import { escapeName } from '../util/names.ts';

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

const INT32_MAX = 2 ** 31 - 1;

/**
 * What zfs-fuse 0.7 (the only ZFS on a kernel without the module) cannot
 * hold, found by trying on a pool, most telling first. Xattrs: setxattr
 * fails (ENOTSUP; EINVAL for security.*). Times: it keeps whole seconds (a
 * set nanosecond part reads back as 0) and refuses those outside a signed
 * 32-bit count (EOVERFLOW). Owners: it refuses uid and gid of 2^31 and above
 * (EINVAL; ZFS keeps those for ephemeral ids). Names of any bytes and
 * 255-byte names, link targets, devices, fifos and setuid/sticky modes it
 * holds exactly.
 */
const LIMITS: Array<{ lacks: string; has: string; test: (n: FsNode) => string | undefined }> = [
  { lacks: 'stores no extended attributes', has: 'some', test: (n) => (n.xattrs.size > 0 ? escapeName([...n.xattrs.keys()][0]!) : undefined) },
  { lacks: 'keeps whole-second times only', has: 'finer ones', test: (n) => (n.mtimeNsec !== 0 ? `mtime ${n.mtimeSec}.${String(n.mtimeNsec).padStart(9, '0')}` : undefined) },
  {
    lacks: 'keeps times within a signed 32-bit second count only (1901 to 2038)', has: 'one outside it',
    test: (n) => (n.mtimeSec > INT32_MAX || n.mtimeSec < -INT32_MAX - 1 ? `mtime ${n.mtimeSec}` : undefined),
  },
  { lacks: 'refuses owner ids of 2^31 and above', has: 'one', test: (n) => (n.uid > INT32_MAX || n.gid > INT32_MAX ? `${n.uid}:${n.gid}` : undefined) },
];

/** The one-line reason zfs-fuse cannot hold this tree exactly (the first entry of the first limit it passes), if any. */
export function zfsFuseCannotHold(tree: FsNode): string | undefined {
  const first: Array<string | undefined> = [];
  for (const [path, n] of walk(tree)) {
    for (const [i, l] of LIMITS.entries()) {
      if (first[i] !== undefined) continue;
      const detail = l.test(n);
      if (detail !== undefined) first[i] = `zfs-fuse ${l.lacks}, and this image has ${l.has} (${escapeName(path)}: ${detail})`;
    }
    if (first[0] !== undefined) break;
  }
  return first.find((m) => m !== undefined);
}

function imageSnapshot(store: Store, composefs: string): string {
  const ds = imageDataset(store, composefs);
  const snap = `${ds}@image`;
  if (exists(snap)) return snap;
  const tree = imageTreeOf(store, composefs);
  const why = zfsFuseCannotHold(tree);
  if (why) throw new CowshedError('EUNSUPPORTED', `${why}; use another driver`);
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
