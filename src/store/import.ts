// Import: an image source's layers, streamed and flattened into one tree;
// new file contents into the object store; one composefs image for the
// whole tree; the manifest, config and a tar-split record per layer kept so
// each layer can be rebuilt byte for byte. An image whose layers are a stored
// image's plus new ones (an update) reads only the new layers and, with the
// composefs driver, stacks a layer image of their change on the stored image's
// composefs image (composefs/stack.ts). Nothing becomes visible until the
// final database transaction; a failure leaves the store as it was (at most
// garbage under tmp/ that gc and fsck clean).
import { fromHost } from '../util/names.ts';
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzipSync, gzip } from 'node:zlib';
import type { Store } from './store.ts';
import { explainLayerFailure, type ImageSource, type LayerRef } from '../oci/source.ts';
import { readTar } from '../tar/reader.ts';
import { TarSplitWriter } from '../tar/split.ts';
import { LayerTreeBuilder, type EntryMeta, type FileContent } from '../tree/layers.ts';
import { type FsNode, isReg, walk } from '../tree/node.ts';
import { FsVerityHasher, fsverityDigest, toHex } from '../composefs/fsverity.ts';
import { writeComposefsImage } from '../composefs/erofs-writer.ts';
import { fail } from '../util/errors.ts';
import { planLayerImage, imagesView, stackTree, flattenImage, type ParentView } from '../composefs/stack-tree.ts';
import { stackOf, STACK_MAX } from '../composefs/stack.ts';
import { readComposefsImage } from '../composefs/erofs-reader.ts';
import { freeBytes, formatBytes, writeFileAtomic } from '../util/fs.ts';
import { objectRelPath, type ObjectBatch } from './objects.ts';

/** Files up to this size live inside the composefs image, as mkcomposefs does. */
export const INLINE_MAX = 64;
/** Files up to this size are hashed in memory before deciding to write them. */
const BUFFER_MAX = 1 << 20;

export interface ImportProgress {
  layer: number;
  layers: number;
  bytes: number;       // uncompressed bytes read of this layer
  files: number;
}

export interface ImportOptions {
  onProgress?: (p: ImportProgress) => void;
  /** Called with the composefs digest before anything is recorded; throwing refuses the image (trust: the signed digest). */
  beforeCommit?: (composefs: string) => void;
  /** Called inside the final transaction with the image id (trust: keep the verified signatures). */
  inTransaction?: (db: Store['db'], imageId: string) => void;
  /** One-line notices (a zstd:chunked layer read whole after all, and why). */
  onNotice?: (message: string) => void;
  /** The image must be one flat composefs image (beforeCommit checks a signed digest): never stack it. */
  singleImage?: boolean;
}

export interface ImportResult {
  id: string;
  name: string;
  composefs: string;
  entries: number;
  logicalSize: number;
  objectsWritten: number;
  bytesWritten: number;
  reused: boolean;     // true when an earlier build of the same manifest was reused
}

export interface LayerRecord {
  idx: number;
  /** blobs/sha256: the layer's entries as applied to the tree, so a later image with this layer need not read it. */
  entries_digest?: string | null;
  blob_digest: string;
  media_type: string;
  blob_size: number;
  diff_id: string;
  tar_size: number;
  split_digest: string;
}

interface BuildRecord {
  composefs: string;
  entries: number;
  logical_size: number;
  layers_json: string;
  objects_blob: string;
}

export async function importFromSource(store: Store, src: ImageSource, name: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const id = src.manifest.digest;
  const { db } = store;

  // Re-import of a manifest already built: no layer needs reading.
  const build = db.get<BuildRecord>('SELECT * FROM builds WHERE manifest_digest = ?', id);
  if (build && existsSync(store.imagePath(build.composefs))) {
    const objects = store.blobs.has(build.objects_blob) ? JSON.parse(unzipRecord(store.blobs.get(build.objects_blob)).toString()) as string[] : undefined;
    const layerRows = JSON.parse(build.layers_json) as LayerRecord[];
    // Everything the image needs must still be here: objects and the layers' tar-split records.
    if (objects?.every((o) => store.objects.has(o)) && layerRows.every((l) => store.blobs.has(l.split_digest))) {
      opts.beforeCommit?.(build.composefs);
      store.blobs.put(src.manifest.bytes, id);
      store.blobs.put(src.config.bytes, src.config.digest);
      db.tx(() => {
        recordImage(store, metaOf(src), name, build.composefs, build.entries, build.logical_size, JSON.parse(build.layers_json) as LayerRecord[], { all: objects });
        opts.inTransaction?.(db, id);
      });
      return { id, name, composefs: build.composefs, entries: build.entries, logicalSize: build.logical_size, objectsWritten: 0, bytesWritten: 0, reused: true };
    }
  }

  // A stacked image already here (it has no build record): only the name moves.
  const here = db.get<{ composefs: string; entries: number; logical_size: number }>('SELECT composefs, entries, logical_size FROM images WHERE id = ?', id);
  const hereStack = here ? stackOf(store, here.composefs) : [];
  if (here && hereStack.length > 1 && hereStack.every((c) => existsSync(store.imagePath(c)))) {
    const composefs = opts.singleImage ? flattenImage(store, id) : here.composefs;
    opts.beforeCommit?.(composefs);
    db.tx(() => {
      tagImage(store, name, id);
      opts.inTransaction?.(db, id);
    });
    return { id, name, composefs, entries: here.entries, logicalSize: here.logical_size, objectsWritten: 0, bytesWritten: 0, reused: true };
  }

  // An update of a stored image: its layers are not read again; with the composefs driver the new ones are stacked on it.
  const base = store.driver === 'composefs' && !opts.singleImage ? stackBase(store, src.layers) : undefined;
  const layers = base ? src.layers.slice(base.layers.length) : src.layers;
  // Refuse up front what cannot fit: the layers' stored size is a floor
  // for what the new content needs (less only when files dedup).
  const need = layers.reduce((a, l) => a + l.size, 0);
  const have = freeBytes(store.paths.root);
  if (need > have) fail('ENOSPC', `not enough space: need ${formatBytes(need)}, have ${formatBytes(have)}`);
  return buildImage(store, { ...(base ? { base } : {}), layers, name, meta: () => metaOf(src) }, opts);
}

/**
 * The stored image to stack an update on: the one with the most layers that
 * are exactly the first layers of `layers` (same diff IDs, in order), fewer
 * than all of them, whose composefs images and layer records are all here.
 * Undefined when there is none, or when the best one's stack is STACK_MAX
 * deep (then the image is built flat, as a commit on it would be).
 */
function stackBase(store: Store, layers: LayerRef[]): BaseImage | undefined {
  if (layers.length < 2 || layers.some((l) => !l.diffId)) return undefined;
  const { db } = store;
  const candidates = db.all<{ image_id: string; n: number }>(
    'SELECT image_id, COUNT(*) AS n FROM layers WHERE image_id IN (SELECT image_id FROM layers WHERE idx = 0 AND diff_id = ?) GROUP BY image_id HAVING n < ? ORDER BY n DESC',
    layers[0]!.diffId, layers.length,
  );
  let best: { imageId: string; rows: LayerRecord[]; composefs: string; depth: number; entries: number; logicalSize: number } | undefined;
  for (const c of candidates) {
    if (best && c.n < best.rows.length) break;
    const rows = db.all<LayerRecord>('SELECT idx, blob_digest, media_type, blob_size, diff_id, tar_size, split_digest, entries_digest FROM layers WHERE image_id = ? ORDER BY idx', c.image_id);
    if (!rows.every((r, i) => r.idx === i && r.diff_id === layers[i]!.diffId)) continue;
    const img = db.get<{ composefs: string; entries: number; logical_size: number }>('SELECT composefs, entries, logical_size FROM images WHERE id = ?', c.image_id);
    if (!img) continue;
    const chain = stackOf(store, img.composefs);
    if (!chain.every((f) => existsSync(store.imagePath(f))) || !rows.every((r) => store.blobs.has(r.split_digest))) continue;
    if (!best || chain.length < best.depth) best = { imageId: c.image_id, rows, composefs: img.composefs, depth: chain.length, entries: img.entries, logicalSize: img.logical_size };
  }
  if (!best || best.depth >= STACK_MAX) return undefined;
  const { imageId, composefs } = best;
  return {
    imageId,
    // The new manifest's descriptors (the same diff ID may come compressed differently).
    layers: best.rows.map((r, i) => {
      const l = layers[i]!;
      return { ...r, blob_digest: l.digest || r.blob_digest, media_type: l.mediaType, blob_size: l.digest ? l.size : r.blob_size };
    }),
    tree: () => stackTree(store, composefs),
    objects: () => new Map(db.all<{ digest: string; size: number }>(
      'SELECT o.digest, o.size FROM image_objects io JOIN objects o ON o.digest = io.digest WHERE io.image_id = ?', imageId,
    ).map((r) => [r.digest, r.size] as [string, number])),
    stack: { composefs, view: imagesView(store, composefs), entries: best.entries, logicalSize: best.logicalSize },
  };
}

/** What an image is recorded as: its manifest and config (blobs) and where it came from. */
export interface ImageMeta {
  ref: string;
  manifest: { digest: string; mediaType: string; bytes: Buffer };
  config: { digest: string; bytes: Buffer };
}

const metaOf = (src: ImageSource): ImageMeta => ({ ref: src.ref, manifest: src.manifest, config: src.config });

/** An image to build on (commit): its tree, layers and objects (read only if the image is built flat). */
export interface BaseImage {
  imageId: string;
  tree: () => FsNode;
  layers: LayerRecord[];
  objects: () => Map<string, number>;
  /** Build a stacked image (composefs/stack.ts) on this composefs image where the change allows. */
  stack?: { composefs: string; view: ParentView; entries: number; logicalSize: number };
}

export interface BuildSpec {
  base?: BaseImage;
  /** Layers to read, in order; a layer with an empty diffId gets it computed. */
  layers: LayerRef[];
  name: string;
  /** Manifest and config, made once the layers are read (commit needs their diff IDs). */
  meta: (layers: LayerRecord[]) => ImageMeta;
}

/**
 * The one path by which images enter the store (import, and commit on top
 * of a base image): layers streamed into objects and a tree, one composefs
 * image, then a single transaction. A failure stages nothing visible.
 */
export async function buildImage(store: Store, spec: BuildSpec, opts: ImportOptions = {}): Promise<ImportResult> {
  const { db } = store;
  // One batch per layer (named by diff ID, so a killed run's finished layers can be taken over).
  const layerBatches: ObjectBatch[] = [];
  try {
    const layers: LayerRecord[] = [...(spec.base?.layers ?? [])];
    // Every layer's file contents, hidden ones too: rebuilding a layer for
    // export needs the files that later layers deleted or replaced.
    // (On top of a base image: the new layers' only.)
    const objects = new Map<string, number>();
    // Layers are read side by side (downloads overlap, decompression runs on
    // other threads); their entries are then applied to the tree in order.
    const read = await mapLimit(spec.layers, LAYER_CONCURRENCY, async (layer) => {
      const stored = storedLayerRead(store, layer, objects);
      if (stored) return stored;
      // Each layer stages into a directory named by its diff ID, and marks it
      // complete when read: a run killed later leaves it for the next run.
      const name = layer.diffId ? `layer-${layer.diffId.replace(/^sha256:/, '')}` : undefined;
      const adopted = name ? await store.objects.adopt(name, LAYER_MARKER) : undefined;
      if (adopted) {
        layerBatches.push(adopted.batch);
        return resumedLayerRead(adopted.marker, layer, objects);
      }
      const b = store.objects.batch(name);
      layerBatches.push(b);
      return importLayer(store, b, layer, spec.layers.length, objects, opts);
    });
    for (const r of read) {
      if (r.split) store.blobs.put(r.split, r.record.split_digest);
      if (r.entriesBytes) store.blobs.put(r.entriesBytes, r.record.entries_digest ?? undefined);
      layers.push(r.record);
    }
    const base = spec.base;
    // New layers on a base that allows it: only their change is written (a stack).
    // Several new layers make one layer image of their entries in order (the plan
    // refuses whatever a single layer would show differently: a name in two of them).
    const stackOn = base?.stack;
    const stackEntries = read.length === 1 ? read[0]!.entries : read.flatMap((r) => r.entries);
    const plan = stackOn && read.length > 0 && read.every((r) => r.record.entries_digest)
      ? planLayerImage(stackEntries, stackOn.view.dirNode?.('') ?? readComposefsImage(readFileSync(store.imagePath(stackOn.composefs)), { rootOnly: true }), stackOn.view)
      : undefined;
    const stackEntriesDigest = !plan ? undefined
      : read.length === 1 ? read[0]!.record.entries_digest! : store.blobs.put(await encodeEntries(stackEntries));
    let image: Buffer;
    let logicalSize: number;
    let entries: number;
    let baseObjects: Map<string, number> | undefined;
    // The object list is gzipped on the thread pool while the composefs image is
    // written. A stacked image's build is not recorded (a re-import of its
    // manifest builds it flat), so it has none.
    let objectList: Promise<Buffer> | undefined;
    if (plan) {
      image = writeComposefsImage(plan.root, { layer: { ...plan.layer, parent: Buffer.from(stackOn!.composefs, 'hex') } });
      entries = stackOn!.entries + plan.entriesDelta;
      logicalSize = stackOn!.logicalSize + plan.sizeDelta;
    } else {
      const builder = new LayerTreeBuilder(base?.tree());
      for (const [i, r] of read.entries()) {
        const layer = spec.layers[i]!;
        builder.beginLayer(`layer ${layer.index + 1}${layer.digest ? ` (${layer.digest.slice(0, 19)})` : ''}`);
        for (const [entry, content] of r.entries) builder.apply(entry, content);
      }
      const root = builder.finish();
      ({ logicalSize, entries } = summarize(root));
      baseObjects = base?.objects();
      objectList = gzipAsync(JSON.stringify([...new Set([...baseObjects?.keys() ?? [], ...objects.keys()])]));
      image = writeComposefsImage(root);
    }
    const meta = spec.meta(layers);
    const id = meta.manifest.digest;
    const cfs = toHex(fsverityDigest(image));
    opts.beforeCommit?.(cfs);
    const imgPath = store.imagePath(cfs);
    if (!existsSync(imgPath)) writeFileAtomic(imgPath, image, store.paths.tmp);
    store.blobs.put(meta.manifest.bytes, id);
    store.blobs.put(meta.config.bytes, meta.config.digest);
    const objectsBlob = objectList ? store.blobs.put(await objectList) : undefined;
    for (const b of layerBatches) await b.commit();

    // On top of a base, only the new objects need rows; the rest are the base's.
    const added = baseObjects ? [...objects].filter(([hex]) => !baseObjects.has(hex)) : [...objects];
    db.tx(() => {
      if (plan) {
        db.run('INSERT OR IGNORE INTO composefs_stack (composefs, parent, entries_digest) VALUES (?, ?, ?)', cfs, stackOn!.composefs, stackEntriesDigest!);
      } else db.run(
        `INSERT INTO builds (manifest_digest, composefs, entries, logical_size, layers_json, objects_blob) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(manifest_digest) DO UPDATE SET composefs = excluded.composefs, entries = excluded.entries,
           logical_size = excluded.logical_size, layers_json = excluded.layers_json, objects_blob = excluded.objects_blob`,
        id, cfs, entries, logicalSize, JSON.stringify(layers), objectsBlob!,
      );
      for (const [hex, size] of added) db.run('INSERT OR IGNORE INTO objects (digest, size) VALUES (?, ?)', hex, size);
      recordImage(store, meta, spec.name, cfs, entries, logicalSize, layers,
        base ? { copyFrom: base.imageId, added: added.map(([hex]) => hex) } : { all: [...objects.keys()] });
      opts.inTransaction?.(db, id);
    });
    return {
      id, name: spec.name, composefs: cfs, entries, logicalSize, reused: false,
      objectsWritten: layerBatches.reduce((a, b) => a + b.objectsWritten, 0), bytesWritten: layerBatches.reduce((a, b) => a + b.bytesWritten, 0),
    };
  } catch (e) {
    for (const b of layerBatches) b.discard();
    throw e;
  }
}

/**
 * A layer some stored image already has (same diff ID): its entries come
 * from the record kept at its import, so nothing is fetched, decompressed or
 * hashed again. Undefined when anything it needs is gone.
 */
function storedLayerRead(store: Store, layer: LayerRef, objects: Map<string, number>): LayerRead | undefined {
  if (!layer.diffId) return undefined;
  const row = store.db.get<LayerRecord>(
    'SELECT idx, blob_digest, media_type, blob_size, diff_id, tar_size, split_digest, entries_digest FROM layers WHERE diff_id = ? AND entries_digest IS NOT NULL LIMIT 1',
    layer.diffId,
  );
  if (!row?.entries_digest || !store.blobs.has(row.entries_digest) || !store.blobs.has(row.split_digest)) return undefined;
  const entries = decodeEntries(store.blobs.get(row.entries_digest));
  const needed = new Map<string, number>();
  for (const [e, c] of entries) if (c?.digest && e.size > 0) needed.set(toHex(c.digest), e.size);
  for (const [e, c] of entries) if (c?.inline && e.size > 0) needed.set(toHex(fsverityDigest(c.inline)), e.size);
  for (const hex of needed.keys()) if (!store.objects.has(hex)) return undefined;
  for (const [hex, size] of needed) objects.set(hex, size);
  return {
    record: { ...row, idx: layer.index, blob_digest: layer.digest || row.blob_digest, media_type: layer.mediaType, blob_size: layer.digest ? layer.size : row.blob_size },
    entries,
  };
}

/**
 * The JSON records kept per layer and per image (entries, object lists) are
 * stored gzipped: as plain JSON they were the biggest thing in a store after
 * the files themselves (2.3 MB per Debian layer, issue 15's store-size
 * bench). Records written before are plain JSON, which never starts with
 * gzip's magic: both read.
 */
function unzipRecord(buf: Buffer): Buffer {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b ? gunzipSync(buf) : buf;
}

const gzipAsync = promisify(gzip);

/**
 * Entries as gzipped JSON, `{"v":2,"e":[...]}`: byte fields (xattr values, digests,
 * inline contents) in base64; names, link targets and xattr names are
 * binary strings (one char per byte, util/names.ts), which JSON keeps exactly.
 * Gzipped on the thread pool: the other layers' reads go on meanwhile.
 */
function encodeEntries(entries: Array<[EntryMeta, FileContent | undefined]>): Promise<Buffer> {
  const b64 = (u: Uint8Array | undefined) => (u ? Buffer.from(u).toString('base64') : undefined);
  return gzipAsync(JSON.stringify({ v: 2, e: entries.map(([e, c]) => [
    { ...e, xattrs: [...e.xattrs].map(([k, v]) => [k, b64(v)]) },
    c && { digest: b64(c.digest), inline: b64(c.inline), payload: c.payload },
  ]) }));
}

export function decodeEntries(buf: Buffer): Array<[EntryMeta, FileContent | undefined]> {
  const bytes = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64'));
  type Raw = [Omit<EntryMeta, 'xattrs'> & { xattrs: Array<[string, string]> }, { digest?: string; inline?: string; payload?: string } | null];
  const parsed = JSON.parse(unzipRecord(buf).toString()) as Raw[] | { v: 2; e: Raw[] };
  // Records written before names were bytes (a bare array) held names decoded as UTF-8: encode them back.
  const old = Array.isArray(parsed);
  const name = (s: string): string => (old ? fromHost(s) : s);
  return (old ? parsed : parsed.e).map(([e, c]) => [
    { ...e, path: name(e.path), linkname: name(e.linkname), xattrs: new Map(e.xattrs.map(([k, v]) => [name(k), Buffer.from(v, 'base64')])) },
    c ? { digest: bytes(c.digest), inline: bytes(c.inline), payload: c.payload } : undefined,
  ]);
}

/** The file that marks a layer's staging directory complete. */
const LAYER_MARKER = 'layer.json';

/** A layer a killed run had read completely: nothing is fetched again. */
function resumedLayerRead(marker: Buffer, layer: LayerRef, objects: Map<string, number>): LayerRead {
  const m = JSON.parse(marker.toString()) as { record: LayerRecord; digests: Array<[string, number]>; split: string; entries: string };
  for (const [hex, size] of m.digests) objects.set(hex, size);
  const entriesBytes = Buffer.from(m.entries, 'base64');
  return {
    record: { ...m.record, idx: layer.index }, entries: decodeEntries(entriesBytes),
    split: Buffer.from(m.split, 'base64'), entriesBytes,
  };
}

/** Layers read at once. */
const LAYER_CONCURRENCY = 3;

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (next < items.length && failed === undefined) {
      const i = next++;
      try { out[i] = await fn(items[i]!); } catch (e) { failed ??= e; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
  return out;
}

/** A layer read: its record, and its entries to apply to the tree in layer order. */
interface LayerRead {
  record: LayerRecord;
  entries: Array<[EntryMeta, FileContent | undefined]>;
  /** A resumed layer's tar-split and entries records, written to the blobs when the image is. */
  split?: Buffer;
  entriesBytes?: Buffer;
}

async function importLayer(
  store: Store, batch: ObjectBatch, layer: LayerRef, layerCount: number,
  objects: Map<string, number>, opts: ImportOptions,
): Promise<LayerRead> {
  const applied: Array<[EntryMeta, FileContent | undefined]> = [];
  const layerDigests: Array<[string, number]> = [];
  const split = new TarSplitWriter();
  let tarSize = 0;
  let files = 0;
  // A layer made here (commit) has no diff ID yet: hash it as it streams.
  const diffHash = layer.diffId === '' ? createHash('sha256') : undefined;
  const counted = async function* (src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of src) {
      tarSize += chunk.length;
      diffHash?.update(chunk);
      yield chunk;
    }
  };
  let lastReport = 0;
  try {
    for await (const entry of readTar(counted(layer.openTar()), { split })) {
      let content: FileContent | undefined;
      if (entry.type === 'file') {
        const stored = await storeContent(batch, entry.body(), entry.size);
        entry.setContentDigest(stored.digest);
        if (entry.size > 0) {
        objects.set(toHex(stored.digest), entry.size);
        layerDigests.push([toHex(stored.digest), entry.size]);
      }
        content = stored.content;
        files++;
      }
      // A plain copy: the tar entry object holds on to the reader.
      applied.push([{
        path: entry.path, type: entry.type, linkname: entry.linkname, mode: entry.mode, uid: entry.uid, gid: entry.gid,
        size: entry.size, mtimeSec: entry.mtimeSec, mtimeNsec: entry.mtimeNsec, devmajor: entry.devmajor, devminor: entry.devminor,
        xattrs: entry.xattrs,
      }, content]);
      if (opts.onProgress && tarSize - lastReport > 4 << 20) {
        lastReport = tarSize;
        opts.onProgress({ layer: layer.index, layers: layerCount, bytes: tarSize, files });
      }
    }
  } catch (e) {
    // A damaged blob can break the tar before its digest is checked at the
    // end: name the real cause.
    throw await explainLayerFailure(layer, e);
  }
  opts.onProgress?.({ layer: layer.index, layers: layerCount, bytes: tarSize, files });
  const splitBytes = split.finish();
  const splitDigest = store.blobs.put(splitBytes);
  const entriesBytes = await encodeEntries(applied);
  const entriesDigest = store.blobs.put(entriesBytes);
  const diffId = diffHash ? `sha256:${diffHash.digest('hex')}` : layer.diffId;
  const record: LayerRecord = {
    idx: layer.index, blob_digest: layer.digest || diffId, media_type: layer.mediaType, blob_size: layer.digest ? layer.size : tarSize,
    diff_id: diffId, tar_size: tarSize, split_digest: splitDigest, entries_digest: entriesDigest,
  };
  // The layer is complete: say so, with all the next run would need.
  batch.writeMarker(LAYER_MARKER, Buffer.from(JSON.stringify({
    record, staged: batch.stagedFiles(), digests: layerDigests,
    split: splitBytes.toString('base64'), entries: entriesBytes.toString('base64'),
  })));
  // A layer made here is stored as an uncompressed tar: its blob is its diff.
  return {
    record: {
      idx: layer.index, blob_digest: layer.digest || diffId, media_type: layer.mediaType, blob_size: layer.digest ? layer.size : tarSize,
      diff_id: diffId, tar_size: tarSize, split_digest: splitDigest, entries_digest: entriesDigest,
    },
    entries: applied,
  };
}

/**
 * Hash a file's content and stage it as an object unless already stored.
 * Small files are also kept inline in the composefs image (no object lookup
 * when reading them); their object serves layer rebuilds and verification.
 */
async function storeContent(batch: ObjectBatch, body: AsyncIterable<Uint8Array>, size: number): Promise<{ digest: Buffer; content: FileContent }> {
  if (size <= BUFFER_MAX) {
    const chunks: Uint8Array[] = [];
    for await (const c of body) chunks.push(c);
    const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const digest = fsverityDigest(data);
    const hex = toHex(digest);
    if (size > 0) batch.putBuffer(hex, data);
    if (size <= INLINE_MAX) return { digest, content: { inline: Uint8Array.from(data) } };
    return { digest, content: { digest, payload: objectRelPath(hex) } };
  }
  const out = batch.startStream();
  const h = new FsVerityHasher();
  try {
    for await (const c of body) {
      h.update(c);
      out.write(c);
    }
  } catch (e) {
    out.abort();
    throw e;
  }
  const digest = h.digest();
  const hex = toHex(digest);
  out.finish(hex);
  return { digest, content: { digest, payload: objectRelPath(hex) } };
}

/** An image's content size (each inode once) and its entry count. */
export function summarize(root: FsNode): { logicalSize: number; entries: number } {
  const seen = new Set<FsNode>();
  let logicalSize = 0;
  let entries = 0;
  for (const [, n] of walk(root)) {
    entries++;
    if (!isReg(n) || seen.has(n)) continue;
    seen.add(n);
    logicalSize += n.size;
  }
  return { logicalSize, entries };
}

/** The objects an image needs: a full list, or a base image's plus some. */
type ObjectRefs = { all: string[] } | { copyFrom: string; added: string[] };

function recordImage(
  store: Store, src: ImageMeta, name: string, cfs: string, entries: number, logicalSize: number,
  layers: LayerRecord[], objects: ObjectRefs,
): void {
  const { db } = store;
  const id = src.manifest.digest;
  {
    const exists = db.get('SELECT 1 FROM images WHERE id = ?', id);
    if (!exists) {
      db.run(
        'INSERT INTO images (id, manifest_media_type, config_digest, composefs, source, created, entries, logical_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        id, src.manifest.mediaType, src.config.digest, cfs, src.ref, Date.now(), entries, logicalSize,
      );
      for (const l of layers) {
        db.run(
          'INSERT INTO layers (image_id, idx, blob_digest, media_type, blob_size, diff_id, tar_size, split_digest, entries_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
          id, l.idx, l.blob_digest, l.media_type, l.blob_size, l.diff_id, l.tar_size, l.split_digest, l.entries_digest ?? null,
        );
      }
      if ('copyFrom' in objects) {
        db.run('INSERT OR IGNORE INTO image_objects (image_id, digest) SELECT ?, digest FROM image_objects WHERE image_id = ?', id, objects.copyFrom);
      }
      for (const o of 'all' in objects ? objects.all : objects.added) db.run('INSERT OR IGNORE INTO image_objects (image_id, digest) VALUES (?, ?)', id, o);
    }
    tagImage(store, name, id);
  }
}

function tagImage(store: Store, name: string, id: string): void {
  store.db.run('INSERT INTO tags (name, image_id) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id', name, id);
}
