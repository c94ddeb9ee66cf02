// vfs: every container is a full copy of its image, reflinked from the
// object store where the filesystem can (btrfs, xfs with reflink=1), copied
// byte for byte otherwise. Simple and slow to create; works anywhere.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { registerDriver, type ContainerRef, type StorageDriver } from './driver.ts';
import { materializeTree } from './materialize.ts';
import { readComposefsImage } from '../composefs/erofs-reader.ts';
import { diffAgainstTree } from '../containers/tree-diff.ts';

export const imageTreeOf = (store: Store, composefs: string) => readComposefsImage(readFileSync(store.imagePath(composefs)));
const rootfsOf = (store: Store, c: ContainerRef): string => join(store.paths.containers, c.id, 'rootfs');

export const vfsDriver: StorageDriver = {
  check() { /* any filesystem */ },
  create(store, c) {
    const root = rootfsOf(store, c);
    mkdirSync(root, { mode: 0o755 });
    materializeTree(imageTreeOf(store, c.composefs), root, store.paths.objects, 'reflink');
    store.db.tx(() => store.db.run('UPDATE containers SET mounted = 1 WHERE id = ?', c.id));
  },
  mount: (store, c) => rootfsOf(store, c),
  unmount() { /* nothing is mounted */ },
  remove(store, c) {
    rmSync(join(store.paths.containers, c.id), { recursive: true, force: true });
  },
  rootfs: rootfsOf,
  diff: (store, c) => diffAgainstTree(rootfsOf(store, c), imageTreeOf(store, c.composefs)),
};
registerDriver('vfs', vfsDriver);
