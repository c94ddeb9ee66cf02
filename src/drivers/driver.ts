// Storage drivers: how a container's root filesystem is made. One per store,
// chosen when the store is created. Images are always imported the same way
// (objects + a composefs image + layer records); a driver decides what a
// container is:
//   composefs  an overlay over the image's shared EROFS mount (default)
//   overlay    overlay2-style: one directory per layer, stacked as lowerdirs
//   btrfs      a writable snapshot of a read-only subvolume holding the image
//   vfs        a full copy of the image (reflinks where the filesystem can)
//   zfs        a clone of a snapshot of a dataset holding the image (zfs-fuse here)
// Commit and export work from a container's root and the store's records,
// so they are the same for every driver.
import { createRequire } from 'node:module';
import type { Store } from '../store/store.ts';
import type { Change } from '../containers/diff.ts';

export interface ContainerRef { id: string; imageId: string; composefs: string }

export interface StorageDriver {
  /** Refuse, with a clear error naming the fix, when this host or filesystem cannot serve the driver. */
  check(store: Store): void;
  /** Make the container's storage, and mount it where the driver mounts unless `mount` is false. */
  create(store: Store, c: ContainerRef, opts?: { mount?: boolean }): void | Promise<void>;
  /** Mount (idempotent) and return the root filesystem path. */
  mount(store: Store, c: ContainerRef): string;
  unmount(store: Store, c: ContainerRef): void;
  /** Unmount and delete the container's storage. */
  remove(store: Store, c: ContainerRef): void;
  /** The root filesystem path (valid while mounted). */
  rootfs(store: Store, c: ContainerRef): string;
  diff(store: Store, c: ContainerRef): Change[];
  /** Drop what the driver keeps per image (subvolumes, layer directories); called by gc. */
  pruneImages?(store: Store, liveComposefs: Set<string>): void;
}

const drivers = new Map<string, StorageDriver>();
// .ts from source (a checkout), .js from the built package (dist/).
const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const MODULES: Record<string, string> = { composefs: `./composefs${EXT}`, overlay: `./overlay${EXT}`, btrfs: `./btrfs${EXT}`, vfs: `./vfs${EXT}`, zfs: `./zfs${EXT}` };
const requireHere = createRequire(import.meta.url);

/** Each driver module registers itself when loaded. */
export function registerDriver(name: string, d: StorageDriver): void {
  drivers.set(name, d);
}

/** The store's driver; its module is loaded on first use (synchronously). */
export function driverFor(store: Store): StorageDriver {
  let d = drivers.get(store.driver);
  if (!d && MODULES[store.driver]) {
    requireHere(MODULES[store.driver]!);
    d = drivers.get(store.driver);
  }
  if (!d) throw new Error(`storage driver ${store.driver} is not available`);
  return d;
}
