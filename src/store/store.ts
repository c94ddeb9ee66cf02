// The store: the library's front door. Everything the CLI does goes through
// a Store; programs use it directly:
//
//   const store = await Store.open('/var/lib/cowshed');
//   await store.importImage('oci:/tmp/layout:v1', 'debian:v1');
//   const path = await store.mountImage('debian:v1');
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Db } from './db.ts';
import { ObjectStore } from './objects.ts';
import { BlobStore } from './blobs.ts';
import { storePaths, defaultStoreDir, type StorePaths } from './paths.ts';
import { acquireLease } from './leases.ts';
import { uniqueObjectBytes } from './gc.ts';
import { normalizeName, defaultNameFor } from './names.ts';
import type { ImportOptions, ImportResult } from './import.ts';
import type { ImageSource } from '../transport/types.ts';
import type { LayerReport, PlanHooks } from '../plan/layers.ts';
import { CowshedError, fail } from '../util/errors.ts';
import type { FsNode } from '../tree/node.ts';
import { toHex } from '../composefs/fsverity.ts';
import { driverFor } from '../drivers/driver.ts';
import type { Manifest, ImageConfig } from '../oci/types.ts';

// The import machinery (tar, OCI, EROFS writer) loads on first use: most
// commands never need it, and every module costs CLI start-up time.
const lazy = {
  import: () => import('./import.ts'),
  source: () => import('../oci/source.ts'),
  local: () => import('./local-sources.ts'),
  reader: () => import('../composefs/erofs-reader.ts'),
  stack: () => import('../composefs/stack.ts'),
  stackTree: () => import('../composefs/stack-tree.ts'),
  split: () => import('../tar/split.ts'),
  digest: () => import('../oci/digest.ts'),
  plan: () => import('../plan/layers.ts'),
  contentIndex: () => import('../chunked/content-index.ts'),
};

/** How the import planner (src/plan/layers.ts) reads a source's layers. */
export interface PlanOptions {
  /** Layers to take as the store's, by diff ID (pull: those the deltas rebuild). */
  storedLayer?: PlanHooks['storedLayer'];
  /**
   * Reading only what the store lacks of zstd:chunked layers (on by
   * default); false reads every layer whole; chunks: false fetches a file
   * the store lacks whole even when stored objects hold some of its chunks.
   */
  files?: false | { chunks?: false };
  /** Other per-file sources for zstd:chunked layers (pull: deltas, for the per-file plan). */
  fileSources?: PlanHooks['fileSources'];
  /** A layer's report, as soon as it is known. */
  onReport?: PlanHooks['onReport'];
}

export interface SourceImportResult extends ImportResult {
  /** Per layer, how it came in (layers the store did not need to read: reused). */
  layers: LayerReport[];
}

export type DriverName = 'composefs' | 'overlay' | 'btrfs' | 'vfs' | 'zfs';
const DRIVERS: readonly DriverName[] = ['composefs', 'overlay', 'btrfs', 'vfs', 'zfs'];

export interface ImageInfo {
  id: string;
  names: string[];
  composefs: string;
  created: number;
  entries: number;
  logicalSize: number;
  source: string;
}

/** An image's records: what push, export and run read. */
export interface ImageRecord extends ImageInfo {
  configDigest: string;
  manifest: Manifest;
  config: ImageConfig;
  layers: Array<{ digest: string; mediaType: string; size: number; diffId: string; tarSize: number }>;
  imageFileSize: number;
}

/** What inspect shows: the records and what removing the image would free. */
export interface ImageDetails extends ImageRecord {
  /** Bytes of objects only this image needs. */
  uniqueSize: number;
}

export interface StoreOptions {
  /** Driver for a new store; an existing store keeps the one it was created with. */
  driver?: DriverName;
}

export class Store {
  readonly paths: StorePaths;
  readonly db: Db;
  readonly objects: ObjectStore;
  readonly blobs: BlobStore;
  readonly driver: DriverName;

  private constructor(root: string, opts: StoreOptions) {
    this.paths = storePaths(root);
    const p = this.paths;
    for (const d of [p.root, p.images, p.blobs, p.tmp, p.mounts, p.containers]) mkdirSync(d, { recursive: true, mode: 0o700 });
    // A directory made beforehand (mkdir -m 755) must not expose the database
    // and every image's files to other users.
    chmodSync(p.root, 0o700);
    this.objects = new ObjectStore(p.objects, p.tmp);
    this.objects.ensure();
    this.blobs = new BlobStore(p.blobs, p.tmp);
    this.db = new Db(p.db);
    const recorded = this.db.getMeta('driver') as DriverName | undefined;
    if (opts.driver && !DRIVERS.includes(opts.driver)) fail('EINVAL', `unknown driver ${JSON.stringify(opts.driver)}: use one of ${DRIVERS.join(', ')}`);
    if (recorded && opts.driver && recorded !== opts.driver) {
      fail('EINVAL', `store ${root} was created with the ${recorded} driver; it cannot switch to ${opts.driver}`);
    }
    this.driver = recorded ?? opts.driver ?? 'composefs';
    driverFor(this).check(this);
    if (!recorded) this.db.tx(() => this.db.setMeta('driver', this.driver));
  }

  static async open(root: string = defaultStoreDir(), opts: StoreOptions = {}): Promise<Store> {
    return new Store(resolve(root), opts);
  }

  close(): void {
    this.db.close();
  }

  imagePath(composefsHex: string): string {
    return join(this.paths.images, composefsHex);
  }

  // ---- images ----

  /** Import from `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`, `tar:FILE` or `dir:PATH`. */
  async importImage(source: string, name?: string, opts: ImportOptions & { plan?: PlanOptions } = {}): Promise<SourceImportResult> {
    const src = await this.openSource(source);
    try {
      return await this.importSource(src, name ? normalizeName(name) : defaultNameFor(sourcePath(source), sourceTag(source)), opts);
    } finally {
      await src.close();
    }
  }

  /**
   * Import from an already opened ImageSource (any transport: oci:, the
   * archives, tar:, dir:, the registry client, a delta) under a normalised
   * name: the one way in. The planner decides per layer what to read
   * (opts.plan); the store's import reads what it hands on. The caller
   * closes src (whose layers are replaced by the planned ones).
   */
  async importSource(src: ImageSource, name: string, opts: ImportOptions & { plan?: PlanOptions } = {}): Promise<SourceImportResult> {
    const [{ planLayers }, index] = await Promise.all([lazy.plan(), lazy.contentIndex()]);
    const p = opts.plan ?? {};
    const plan = planLayers(src, {
      storedLayer: p.storedLayer,
      files: p.files === false ? undefined : index.storeFileHooks(this, p.files),
      fileSources: p.fileSources,
      onNotice: opts.onNotice,
      onReport: p.onReport,
    });
    src.layers = plan.layers;
    const lease = await acquireLease(this.db, 'write');
    let result: ImportResult;
    try {
      result = await (await lazy.import()).importFromSource(this, src, normalizeName(name), opts);
    } finally {
      lease.release();
    }
    // What the layers taught the indexes (files fetched, chunks of zstd:chunked
    // TOCs), once the import is committed; an index failing costs reuse only.
    try {
      index.recordContent(this, plan.reports.flatMap((r) => (r.fetched ?? []).map((f) => ({ object: f.object, sha256: f.digest.replace(/^sha256:/, ''), size: f.size }))));
      index.recordChunks(this, plan.reports.flatMap((r) => r.chunks ?? []));
    } catch { /* see above */ }
    const reported = new Set(plan.reports.map((r) => r.layer));
    // Layers the store had (by diff ID, or the whole build) were not read at all.
    for (const l of src.layers) if (!reported.has(l.index)) plan.reports.push({ layer: l.index, digest: l.digest, method: 'reused', bytesFetched: 0, plan: 'store' });
    const layers = plan.reports.sort((a, b) => a.layer - b.layer).map(({ fetched: _, chunks: _c, ...r }) => r);
    return { ...result, layers };
  }

  private async openSource(source: string): Promise<ImageSource> {
    const colon = source.indexOf(':');
    const transport = colon > 0 ? source.slice(0, colon) : '';
    switch (transport) {
      case 'oci':
      case 'oci-archive':
      case 'docker-archive':
        return (await lazy.source()).openImageSource(source);
      case 'tar':
        return (await lazy.local()).openTarballSource(source.slice(colon + 1));
      case 'dir':
        return (await lazy.local()).openDirectorySource(source.slice(colon + 1));
      default:
        return fail('EINVAL', `unknown image source ${JSON.stringify(source)}: use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, tar:FILE or dir:PATH`);
    }
  }

  images(): ImageInfo[] {
    const rows = this.db.all<{ id: string; composefs: string; created: number; entries: number; logical_size: number; source: string }>(
      'SELECT id, composefs, created, entries, logical_size, source FROM images ORDER BY created DESC',
    );
    return rows.map((r) => this.info(r));
  }

  private info(r: { id: string; composefs: string; created: number; entries: number; logical_size: number; source: string }): ImageInfo {
    const names = this.db.all<{ name: string }>('SELECT name FROM tags WHERE image_id = ? ORDER BY name', r.id).map((t) => t.name);
    return { id: r.id, names, composefs: r.composefs, created: r.created, entries: r.entries, logicalSize: r.logical_size, source: r.source };
  }

  /** Find an image by name (`repo[:tag]`), id (`sha256:…`) or a unique id prefix. */
  resolveImage(ref: string): ImageInfo {
    const row = (q: string, ...a: string[]) =>
      this.db.get<{ id: string; composefs: string; created: number; entries: number; logical_size: number; source: string }>(q, ...a);
    let byName: string | undefined;
    try { byName = normalizeName(ref); } catch { byName = undefined; }
    if (byName) {
      const r = row('SELECT i.* FROM images i JOIN tags t ON t.image_id = i.id WHERE t.name = ?', byName);
      if (r) return this.info(r);
    }
    const hex = ref.replace(/^sha256:/, '');
    if (/^[0-9a-f]{4,64}$/.test(hex)) {
      const rows = this.db.all<{ id: string; composefs: string; created: number; entries: number; logical_size: number; source: string }>(
        "SELECT * FROM images WHERE id LIKE ? || '%'", `sha256:${hex}`,
      );
      if (rows.length === 1) return this.info(rows[0]!);
      if (rows.length > 1) fail('EINVAL', `image id prefix ${ref} is ambiguous`);
    }
    return fail('ENOENT', `no such image: ${ref}`);
  }

  /** The image with its unique size, which scans every image's objects (the cost grows with the store): for inspect. */
  inspectImage(ref: string): ImageDetails {
    const r = this.imageRecord(ref);
    return { ...r, uniqueSize: uniqueObjectBytes(this, r.id) };
  }

  /** The image's manifest, config and layers, read from its records only. */
  imageRecord(ref: string): ImageRecord {
    const info = this.resolveImage(ref);
    const r = this.db.get<{ manifest_media_type: string; config_digest: string }>('SELECT manifest_media_type, config_digest FROM images WHERE id = ?', info.id)!;
    const manifest = JSON.parse(this.blobs.get(info.id).toString()) as Manifest;
    const config = JSON.parse(this.blobs.get(r.config_digest).toString()) as ImageConfig;
    const layers = this.db.all<{ blob_digest: string; media_type: string; blob_size: number; diff_id: string; tar_size: number }>(
      'SELECT * FROM layers WHERE image_id = ? ORDER BY idx', info.id,
    ).map((l) => ({ digest: l.blob_digest, mediaType: l.media_type, size: l.blob_size, diffId: l.diff_id, tarSize: l.tar_size }));
    let imageFileSize = 0;
    try { imageFileSize = statSync(this.imagePath(info.composefs)).size; } catch { /* reported by fsck */ }
    return { ...info, configDigest: r.config_digest, manifest, config, layers, imageFileSize };
  }

  /** The image's flattened tree, read back from its composefs image (or its stack's). */
  async imageTree(ref: string): Promise<FsNode> {
    const info = this.resolveImage(ref);
    return (await lazy.stackTree()).stackTree(this, info.composefs);
  }

  /**
   * The digest of the image's single composefs image, flattening a stacked
   * image first (signatures, verification: see composefs/stack.ts).
   */
  async flatComposefs(ref: string): Promise<string> {
    return (await lazy.stack()).ensureFlat(this, this.resolveImage(ref).id);
  }

  /**
   * A stored layer's uncompressed tar, rebuilt byte for byte from its
   * tar-split record and the object store. Its sha256 is the layer's diff ID
   * (verified while streaming: a damaged store fails instead of lying).
   */
  async *layerTar(ref: string, index: number): AsyncGenerator<Uint8Array> {
    const info = this.resolveImage(ref);
    const layer = this.db.get<{ split_digest: string; diff_id: string }>(
      'SELECT split_digest, diff_id FROM layers WHERE image_id = ? AND idx = ?', info.id, index,
    );
    if (!layer) fail('ENOENT', `image ${ref} has no layer ${index + 1}`);
    const split = this.blobs.get(layer!.split_digest);
    const tar = (await lazy.split()).rebuildTar(split, (digest) => this.objects.open(toHex(digest)));
    yield* (await lazy.digest()).verifyDigest(tar, layer!.diff_id, `layer ${index + 1} of ${ref}`);
  }

  /**
   * A layer some stored image has (by diff ID), rebuilt as its uncompressed
   * tar, or undefined. Registry pulls use it so that layers already here are
   * not fetched again.
   */
  storedLayer(diffId: string): (() => AsyncIterable<Uint8Array>) | undefined {
    const row = this.db.get<{ image_id: string; idx: number }>('SELECT image_id, idx FROM layers WHERE diff_id = ? LIMIT 1', diffId);
    if (!row) return undefined;
    return () => this.layerTar(row.image_id, row.idx);
  }

  tag(src: string, dst: string): void {
    const info = this.resolveImage(src);
    const name = normalizeName(dst);
    this.db.tx(() => this.db.run('INSERT INTO tags (name, image_id) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id', name, info.id));
  }

  /**
   * Remove names; an image whose last name goes (or named by id) is removed.
   * Its objects stay until gc, so importing it again is instant.
   */
  removeImage(ref: string, opts: { force?: boolean } = {}): { untagged: string[]; deleted?: string } {
    const info = this.resolveImage(ref);
    return this.db.tx(() => {
      let byName: string | undefined;
      try { byName = normalizeName(ref); } catch { byName = undefined; }
      const named = byName !== undefined && info.names.includes(byName);
      const untag = named && !opts.force ? [byName!] : info.names;
      for (const n of untag) this.db.run('DELETE FROM tags WHERE name = ?', n);
      const left = this.db.get<{ c: number }>('SELECT COUNT(*) AS c FROM tags WHERE image_id = ?', info.id)!.c;
      if (left > 0) return { untagged: untag };
      if (this.db.get('SELECT 1 FROM image_mounts WHERE composefs = ?', info.composefs)) {
        throw new CowshedError('EBUSY', `image ${ref} is mounted; run cowshed umount ${ref} first`);
      }
      const users = this.db.all<{ name: string }>('SELECT name FROM containers WHERE image_id = ?', info.id);
      if (users.length > 0) {
        throw new CowshedError('EBUSY', `image ${ref} is used by container${users.length > 1 ? 's' : ''} ${users.map((u) => u.name).join(', ')}; remove ${users.length > 1 ? 'them' : 'it'} first`);
      }
      this.db.run('DELETE FROM images WHERE id = ?', info.id);
      return { untagged: untag, deleted: info.id };
    });
  }
}

/** The path part of a source reference (for default names). */
function sourcePath(source: string): string {
  const rest = source.slice(source.indexOf(':') + 1);
  if (source.startsWith('oci:') || source.startsWith('oci-archive:')) {
    const i = rest.lastIndexOf(':');
    return i > 0 && !existsSync(rest) ? rest.slice(0, i) : rest;
  }
  return rest;
}

function sourceTag(source: string): string | undefined {
  if (!source.startsWith('oci:') && !source.startsWith('oci-archive:')) return undefined;
  const rest = source.slice(source.indexOf(':') + 1);
  const i = rest.lastIndexOf(':');
  return i > 0 && !existsSync(rest) ? rest.slice(i + 1) : undefined;
}
