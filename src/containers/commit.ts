// commit: a new image from a container, storing only what changed. The
// changes (diff.ts) become one OCI layer: deletions as `.wh.` whiteouts,
// everything added or changed as it now is in the container, read through
// its mount. That layer goes through the same import path as any layer, on
// top of the parent image's tree: only changed files are hashed and stored,
// one new composefs image is written, and the parent's layers are reused.
import { createReadStream } from 'node:fs';
import type { Store } from '../store/store.ts';
import { buildImage, type ImportResult, type LayerRecord } from '../store/import.ts';
import { diffOf, resolveContainer, type ContainerRow } from './containers.ts';
import { driverFor } from '../drivers/driver.ts';
import type { Change } from './diff.ts';
import { stackOf, STACK_MAX } from '../composefs/stack.ts';
import { stackTree, imagesView } from '../composefs/stack-tree.ts';
import type { FsNode } from '../tree/node.ts';
import { writeTar, type TarHeaderInput } from '../tar/writer.ts';
import { readXattrs } from '../util/xattrs.ts';
import { BeneathRoot } from '../util/beneath.ts';
import { normalizeName } from '../store/names.ts';
import { sha256Digest } from '../oci/digest.ts';
import {
  OCI_CONFIG, OCI_MANIFEST, OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP, DOCKER_LAYER_TAR, DOCKER_LAYER_TAR_GZIP,
} from '../oci/media-types.ts';
import type { ImageConfig, Manifest, Descriptor } from '../oci/types.ts';
import { acquireLease } from '../store/leases.ts';
import { fail } from '../util/errors.ts';
import { major, minor } from '../tree/node.ts';

export interface CommitOptions {
  message?: string;
  author?: string;
  /** Freeze a running container while it is read (default true, as podman commit). */
  pause?: boolean;
}

const TO_OCI: Record<string, string> = { [DOCKER_LAYER_TAR]: OCI_LAYER_TAR, [DOCKER_LAYER_TAR_GZIP]: OCI_LAYER_TAR_GZIP };

export async function commitContainer(store: Store, ref: string, name: string, opts: CommitOptions = {}): Promise<ImportResult> {
  const c = resolveContainer(store, ref);
  const finalName = normalizeName(name);
  if (c.state === 'running' && opts.pause !== false) {
    const { whilePaused } = await import('./runtime.ts');
    return whilePaused(c.id, () => commitResolved(store, c, finalName, opts));
  }
  return commitResolved(store, c, finalName, opts);
}

async function commitResolved(store: Store, c: ContainerRow, finalName: string, opts: CommitOptions): Promise<ImportResult> {
  const driver = driverFor(store);
  const cref = { id: c.id, imageId: c.image_id, composefs: c.composefs };
  const rootfs = driver.mount(store, cref);
  const changes = diffOf(store, cref, c.name);

  const parentManifest = JSON.parse(store.blobs.get(c.image_id).toString()) as Manifest;
  const parentConfigDigest = store.db.get<{ config_digest: string }>('SELECT config_digest FROM images WHERE id = ?', c.image_id)?.config_digest;
  if (!parentConfigDigest) fail('ENOENT', `the image of container ${c.name} is gone`);
  const parentConfig = JSON.parse(store.blobs.get(parentConfigDigest!).toString()) as ImageConfig;
  const baseLayers = store.db.all<LayerRecord>('SELECT idx, blob_digest, media_type, blob_size, diff_id, tar_size, split_digest, entries_digest FROM layers WHERE image_id = ? ORDER BY idx', c.image_id);
  const baseObjects = (): Map<string, number> => new Map(store.db.all<{ digest: string; size: number }>(
    'SELECT o.digest, o.size FROM image_objects io JOIN objects o ON o.digest = io.digest WHERE io.image_id = ?', c.image_id,
  ).map((r) => [r.digest, r.size] as [string, number]));
  // The parent's tree: only read when the new image is built flat.
  const tree = (): FsNode => stackTree(store, c.composefs);

  const layerEntries = changeEntries(changes, rootfs, `container ${c.name}`);
  const lease = await acquireLease(store.db, 'write');
  // With the composefs driver the new image is a stack on the container's (see composefs/stack.ts).
  const stacking = store.driver === 'composefs' && stackOf(store, c.composefs).length < STACK_MAX;
  // The parent's tree is looked up in its image files (only the paths the change names), nothing mounted.
  const view = stacking ? imagesView(store, c.composefs) : undefined;
  try {
    const counts = store.db.get<{ entries: number; logical_size: number }>('SELECT entries, logical_size FROM images WHERE id = ?', c.image_id)!;
    return await buildImage(store, {
      base: {
        imageId: c.image_id, tree, layers: baseLayers, objects: baseObjects,
        ...(view ? { stack: { composefs: c.composefs, view, entries: counts.entries, logicalSize: counts.logical_size } } : {}),
      },
      layers: [{
        index: baseLayers.length, digest: '', mediaType: OCI_LAYER_TAR, size: 0, diffId: '',
        openBlob: () => writeTar(layerEntries()), openTar: () => writeTar(layerEntries()),
      }],
      name: finalName,
      meta: (layers) => {
        const added = layers[layers.length - 1]!;
        const now = new Date().toISOString();
        const config: ImageConfig = {
          ...parentConfig,
          created: now,
          ...(opts.author ? { author: opts.author } : {}),
          rootfs: { type: 'layers', diff_ids: [...parentConfig.rootfs.diff_ids, added.diff_id] },
          history: [...(parentConfig.history ?? []), {
            created: now, created_by: `cowshed commit ${c.name}`, ...(opts.message ? { comment: opts.message } : {}),
          }],
        };
        const configBytes = Buffer.from(JSON.stringify(config));
        const manifest: Manifest = {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: OCI_CONFIG, digest: sha256Digest(configBytes), size: configBytes.length },
          layers: [
            ...parentManifest.layers.map((l): Descriptor => ({ mediaType: TO_OCI[l.mediaType] ?? l.mediaType, digest: l.digest, size: l.size })),
            { mediaType: OCI_LAYER_TAR, digest: added.diff_id, size: added.tar_size },
          ],
        };
        const manifestBytes = Buffer.from(JSON.stringify(manifest));
        return {
          ref: `container:${c.name}`,
          manifest: { digest: sha256Digest(manifestBytes), mediaType: OCI_MANIFEST, bytes: manifestBytes },
          config: { digest: manifest.config.digest, bytes: configBytes },
        };
      },
    });
  } finally {
    lease.release();
  }
}

/** Changes whose xattrs are read by one getfattr. */
const XATTR_BATCH = 512;

/**
 * The layer's entries: whiteouts for deletions, the container's current
 * state for the rest. Everything is read through `BeneathRoot`, so a
 * container that swaps a directory for a symlink while this runs makes the
 * commit fail instead of putting host files in the image.
 */
export function changeEntries(changes: Change[], merged: string, what: string): () => AsyncGenerator<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> {
  return async function* () {
    const root = new BeneathRoot(merged, what);
    try {
      const firstName = new Map<bigint, string>();
      const notDirs = new Set<string>();
      for (let i = 0; i < changes.length; i += XATTR_BATCH) {
        root.trim();
        const batch = changes.slice(i, i + XATTR_BATCH);
        const present = batch.filter((ch) => ch.kind !== 'D').map((ch) => ch.path);
        const procPaths = present.map((p) => root.path(p, true));
        const byProcPath = readXattrs(procPaths);
        const xattrs = new Map(present.map((p, k) => [p, byProcPath.get(procPaths[k]!)] as const));
        for (const ch of batch) {
          const rel = ch.path.slice(1);
          if (ch.kind === 'D') {
            const slash = rel.lastIndexOf('/');
            yield { header: { path: `${rel.slice(0, slash + 1)}.wh.${rel.slice(slash + 1)}`, type: 'file', mode: 0o644, size: 0 } };
            continue;
          }
          // A directory seen as something else earlier in this read has changed since the diff.
          for (let k = rel.indexOf('/'); k > 0; k = rel.indexOf('/', k + 1)) {
            if (notDirs.has(rel.slice(0, k))) throw root.changed(rel.slice(0, k), 'it was a directory when the changes were listed');
          }
          const st = root.lstat(rel);
          if (!st.isDirectory()) notDirs.add(rel);
          const base: TarHeaderInput = {
            path: rel, type: 'file', mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid),
            mtimeSec: Number(st.mtimeNs / 1_000_000_000n), mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
            xattrs: xattrs.get(ch.path) ?? new Map(),
          };
          if (st.isDirectory()) {
            yield { header: { ...base, type: 'dir' } };
          } else if (st.isSymbolicLink()) {
            yield { header: { ...base, type: 'symlink', linkname: root.readlink(rel) } };
          } else if (st.isFile()) {
            if (st.nlink > 1n) {
              const first = firstName.get(st.ino);
              if (first !== undefined) {
                yield { header: { ...base, type: 'hardlink', linkname: first, xattrs: new Map() } };
                continue;
              }
              firstName.set(st.ino, rel);
            }
            // Read exactly the size recorded: a file that shrinks meanwhile fails the tar writer's length check.
            const body = st.size > 0n ? createReadStream('', { fd: root.openFile(rel, st), start: 0, end: Number(st.size) - 1 }) : undefined;
            yield { header: { ...base, size: Number(st.size) }, body };
          } else if (st.isCharacterDevice() || st.isBlockDevice()) {
            const rdev = Number(st.rdev);
            yield { header: { ...base, type: st.isCharacterDevice() ? 'char' : 'block', devmajor: major(rdev), devminor: minor(rdev) } };
          } else if (st.isFIFO()) {
            yield { header: { ...base, type: 'fifo' } };
          }
          // Sockets cannot be put in a layer (nor does podman commit them).
        }
      }
    } finally {
      root.close();
    }
  };
}
