// vfs: every container is a full copy of its image, reflinked from the
// object store where the filesystem can (btrfs, xfs with reflink=1), copied
// byte for byte otherwise. Simple and slow to create; works anywhere.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { registerDriver, type ContainerRef, type StorageDriver } from './driver.ts';
import { materializeTree } from './materialize.ts';
import { stackTree } from '../composefs/stack-tree.ts';
import { diffAgainstTree } from '../containers/tree-diff.ts';
import { pidAlive } from '../store/leases.ts';
import { CowshedError } from '../util/errors.ts';

export const imageTreeOf = (store: Store, composefs: string) => stackTree(store, composefs);
const rootfsOf = (store: Store, c: ContainerRef): string => join(store.paths.containers, c.id, 'rootfs');

/**
 * The container's root, copied now if it is not there yet. The copy is made
 * beside it (rootfs.partial-<pid>) and renamed into place when complete, so
 * a create killed part way leaves no half-copied root in use: the container
 * row exists (it is written before the driver runs), and the next mount or
 * diff makes the copy again, after removing what the killed process left.
 */
function ensureRoot(store: Store, c: ContainerRef): string {
  const root = rootfsOf(store, c);
  if (existsSync(root)) return root;
  const dir = join(store.paths.containers, c.id);
  for (const name of readdirSync(dir)) {
    const m = /^rootfs\.partial-(\d+)$/.exec(name);
    if (!m) continue;
    if (Number(m[1]) !== process.pid && pidAlive(Number(m[1]))) {
      throw new CowshedError('EBUSY', `container ${c.id.slice(0, 12)} is still being created (by process ${m[1]}); try again when it is done`);
    }
    rmSync(join(dir, name), { recursive: true, force: true });
  }
  const partial = join(dir, `rootfs.partial-${process.pid}`);
  mkdirSync(partial, { mode: 0o755 });
  try {
    materializeTree(imageTreeOf(store, c.composefs), partial, store.paths.objects, 'reflink');
    renameSync(partial, root);
  } catch (e) {
    rmSync(partial, { recursive: true, force: true });
    throw e;
  }
  return root;
}

export const vfsDriver: StorageDriver = {
  check() { /* any filesystem */ },
  create(store, c) {
    ensureRoot(store, c);
    store.db.tx(() => store.db.run('UPDATE containers SET mounted = 1 WHERE id = ?', c.id));
  },
  mount: ensureRoot,
  unmount() { /* nothing is mounted */ },
  remove(store, c) {
    rmSync(join(store.paths.containers, c.id), { recursive: true, force: true });
  },
  rootfs: rootfsOf,
  diff: (store, c) => diffAgainstTree(ensureRoot(store, c), imageTreeOf(store, c.composefs)),
};
registerDriver('vfs', vfsDriver);
