// Where things live inside a store directory (see docs/ARCHITECTURE.md).
import { join } from 'node:path';

export interface StorePaths {
  root: string;
  db: string;
  objects: string;
  images: string;
  blobs: string;
  tmp: string;
  mounts: string;
  containers: string;
}

export function storePaths(root: string): StorePaths {
  return {
    root,
    db: join(root, 'meta.db'),
    objects: join(root, 'objects'),
    images: join(root, 'images'),
    blobs: join(root, 'blobs', 'sha256'),
    tmp: join(root, 'tmp'),
    mounts: join(root, 'mounts'),
    containers: join(root, 'containers'),
  };
}

export function defaultStoreDir(): string {
  if (process.env.COWSHED_STORE) return process.env.COWSHED_STORE;
  if (process.getuid?.() === 0) return '/var/lib/cowshed';
  const data = process.env.XDG_DATA_HOME || join(process.env.HOME ?? '/tmp', '.local', 'share');
  return join(data, 'cowshed');
}
