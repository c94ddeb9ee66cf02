// Making a delta between two stored images (from, to): every object of `to`
// that `from` lacks, as the smallest of a zstd patch against an object of
// `from` (candidates as OSTree picks them: the same path, then the same
// name with a similar size), the object zstd-compressed on its own, or its
// raw bytes; plus each layer's tar-split record (patched against a layer
// record of `from`) and the target's manifest and config.
import { readFileSync } from 'node:fs';
import { zstdCompressSync } from 'node:zlib';
import type { Store } from '../store/store.ts';
import { fsverityDigest, toHex } from '../composefs/fsverity.ts';
import { isReg, walk, type FsNode } from '../tree/node.ts';
import { sha256Hex } from '../oci/digest.ts';
import { PACK_MAX, zstdParams, type DeltaEntry, type DeltaIndex, type EntryKind } from './format.ts';
import { storedSplit } from './split-refs.ts';
import { fail } from '../util/errors.ts';

export interface Delta {
  index: DeltaIndex;
  packs: Buffer[];
}

export interface CreateDeltaStats {
  objects: number;
  patches: number;
  zstd: number;
  raw: number;
  /** Bytes of the new objects, uncompressed. */
  objectBytes: number;
  packBytes: number;
}

interface FileRef { hex: string; size: number }

/** Regular files of a tree: path → object, and basename → objects. */
function fileMaps(tree: FsNode): { byPath: Map<string, FileRef>; byName: Map<string, FileRef[]>; pathOf: Map<string, string> } {
  const byPath = new Map<string, FileRef>();
  const byName = new Map<string, FileRef[]>();
  const pathOf = new Map<string, string>();
  for (const [p, n] of walk(tree)) {
    if (!isReg(n) || n.size === 0) continue;
    const digest = n.digest ?? (n.inline ? fsverityDigest(n.inline) : undefined);
    if (!digest) continue;
    const ref = { hex: toHex(digest), size: n.size };
    byPath.set(p, ref);
    if (!pathOf.has(ref.hex)) pathOf.set(ref.hex, p);
    const name = p.slice(p.lastIndexOf('/') + 1);
    const list = byName.get(name);
    if (list) list.push(ref); else byName.set(name, [ref]);
  }
  return { byPath, byName, pathOf };
}

/** Already-compressed content (gzip, xz, zstd, bzip2, zip/jar, PNG, JPEG): a patch against another file cannot win. */
function looksCompressed(b: Uint8Array): boolean {
  if (b.length < 4) return false;
  const m = (...x: number[]) => x.every((v, i) => b[i] === v);
  return m(0x1f, 0x8b) || m(0xfd, 0x37, 0x7a, 0x58) || m(0x28, 0xb5, 0x2f, 0xfd) || m(0x42, 0x5a, 0x68) || m(0x50, 0x4b, 0x03, 0x04)
    || m(0x89, 0x50, 0x4e, 0x47) || m(0xff, 0xd8, 0xff);
}

/** The smallest encoding of `data`: patch against each candidate, zstd alone, raw. */
export function encodeObject(data: Buffer, candidates: Buffer[]): { kind: EntryKind; bytes: Buffer; base?: number } {
  let best: { kind: EntryKind; bytes: Buffer; base?: number } = { kind: 'raw', bytes: data };
  candidates.forEach((dict, i) => {
    const bytes = zstdCompressSync(data, { params: zstdParams(data.length, dict.length), dictionary: dict });
    if (bytes.length < best.bytes.length) best = { kind: 'patch', bytes, base: i };
  });
  // A patch of a few percent of the object leaves nothing for plain zstd to win.
  if (best.kind !== 'patch' || best.bytes.length * 20 > data.length) {
    const z = zstdCompressSync(data, { params: zstdParams(data.length, 0) });
    if (z.length < best.bytes.length) best = { kind: 'zstd', bytes: z };
  }
  return best;
}

const SIMILAR = (a: number, b: number): boolean => a <= b * 2 && b <= a * 2;

export interface CreateDeltaOptions {
  /**
   * The target's manifest as published (a push writes its own manifest for
   * the same config and layers): the delta then leads to that manifest.
   */
  toManifest?: { bytes: Buffer; mediaType: string };
  /** The base's manifest digest as published (recorded, for clients choosing a delta). */
  fromManifest?: string;
}

/** Builds the delta from image `fromRef` to image `toRef`, both in the store. */
export async function createDelta(store: Store, fromRef: string, toRef: string, stats?: CreateDeltaStats, opts: CreateDeltaOptions = {}): Promise<Delta> {
  const from = store.imageRecord(fromRef);
  const to = store.imageRecord(toRef);
  const objectsOf = (id: string) => store.db.all<{ digest: string; size: number }>(
    'SELECT io.digest, o.size FROM image_objects io JOIN objects o ON o.digest = io.digest WHERE io.image_id = ? ORDER BY io.digest', id,
  );
  const fromObjects = new Set(objectsOf(from.id).map((r) => r.digest));
  const needed = objectsOf(to.id).filter((r) => !fromObjects.has(r.digest));
  const fromFiles = fileMaps(await store.imageTree(from.id));
  const toFiles = fileMaps(await store.imageTree(to.id));

  const packs: Buffer[][] = [[]];
  const packSizes = [0];
  const entries: DeltaEntry[] = [];
  const add = (e: Omit<DeltaEntry, 'p' | 'off' | 'len'>, bytes: Buffer): number => {
    let p = packs.length - 1;
    if (packSizes[p] > 0 && packSizes[p] + bytes.length > PACK_MAX) { packs.push([]); packSizes.push(0); p++; }
    entries.push({ ...e, p, off: packSizes[p], len: bytes.length });
    packs[p].push(bytes);
    packSizes[p] += bytes.length;
    return entries.length - 1;
  };

  // Tar-split records first: a client needs them before it knows which objects it lacks.
  const layers: DeltaIndex['layers'] = [];
  for (let i = 0; i < to.layers.length; i++) {
    const diffId = to.layers[i].diffId;
    const raw = storedSplit(store, diffId) ?? fail('ECORRUPT', `the tar-split record of layer ${i + 1} of ${toRef} is missing (run cowshed fsck)`);
    const baseLayer = from.layers[Math.min(i, from.layers.length - 1)];
    const dict = baseLayer ? storedSplit(store, baseLayer.diffId) : undefined;
    const enc = encodeObject(raw, dict ? [dict] : []);
    const k: EntryKind = enc.kind === 'patch' ? 'split-patch' : 'split-zstd';
    const bytes = enc.kind === 'raw' ? zstdCompressSync(raw, { params: zstdParams(raw.length, 0) }) : enc.bytes;
    const e = k === 'split-patch' ? { o: sha256Hex(raw), s: raw.length, b: baseLayer!.diffId.slice(7), k } : { o: sha256Hex(raw), s: raw.length, k };
    layers.push({ diffId, split: add(e, bytes) });
  }

  const st: CreateDeltaStats = stats ?? { objects: 0, patches: 0, zstd: 0, raw: 0, objectBytes: 0, packBytes: 0 };
  for (const obj of needed) {
    const data = readFileSync(store.objects.path(obj.digest));
    const cands: FileRef[] = [];
    const path = toFiles.pathOf.get(obj.digest);
    if (data.length > 64 && path !== undefined) {
      const same = fromFiles.byPath.get(path);
      if (same && same.hex !== obj.digest) cands.push(same);
      if (!looksCompressed(data)) {
        const name = path.slice(path.lastIndexOf('/') + 1);
        const similar = (fromFiles.byName.get(name) ?? [])
          .filter((r) => r.hex !== same?.hex && SIMILAR(r.size, data.length))
          .sort((a, b) => Math.abs(a.size - data.length) - Math.abs(b.size - data.length));
        if (similar[0]) cands.push(similar[0]);
      }
    }
    const dicts = cands.map((c) => readFileSync(store.objects.path(c.hex)));
    const enc = encodeObject(data, dicts);
    const e = enc.kind === 'patch' ? { o: obj.digest, s: data.length, b: cands[enc.base!].hex, k: enc.kind } : { o: obj.digest, s: data.length, k: enc.kind };
    add(e, enc.bytes);
    st.objects++;
    st.objectBytes += data.length;
    if (enc.kind === 'patch') st.patches++; else if (enc.kind === 'zstd') st.zstd++; else st.raw++;
  }
  const packBufs = packs.map((p) => Buffer.concat(p));
  st.packBytes = packBufs.reduce((a, p) => a + p.length, 0);

  const index: DeltaIndex = {
    version: 1,
    from: { manifest: opts.fromManifest ?? from.id, layers: from.layers.map((l) => l.diffId) },
    to: opts.toManifest
      ? { manifest: `sha256:${sha256Hex(opts.toManifest.bytes)}`, mediaType: opts.toManifest.mediaType, manifestBytes: opts.toManifest.bytes, configBytes: store.blobs.get(to.configDigest) }
      : { manifest: to.id, mediaType: store.db.get<{ t: string }>('SELECT manifest_media_type AS t FROM images WHERE id = ?', to.id)!.t, manifestBytes: store.blobs.get(to.id), configBytes: store.blobs.get(to.configDigest) },
    packs: packBufs.map((p) => ({ digest: `sha256:${sha256Hex(p)}`, size: p.length })),
    layers,
    entries,
  };
  if (to.names[0] !== undefined) index.name = to.names[0];
  return { index, packs: packBufs };
}
