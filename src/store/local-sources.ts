// Sources without a manifest: `tar:FILE` (a root filesystem tarball, plain,
// gzip or zstd) and `dir:PATH` (a directory). Each is an ImageSource
// (transport/types.ts) like any other: a one-layer image with the manifest
// and config an OCI image of it would have, imported through the same
// planner and store import (Store.importSource). Its layer is made on the
// fly (the file read again, the directory walked into a tar again) and
// serves no byte ranges, so the planner reads it whole. Reading the content
// once beforehand gives the blob digest and diff ID they must name; the
// import then verifies the second read against them.
import { createReadStream, statSync } from 'node:fs';
import { CowshedError, fail } from '../util/errors.ts';
import { decompress, detectCompression } from '../oci/compression.ts';
import { digestOfStream, verifyDigest, sha256Digest } from '../oci/digest.ts';
import { OCI_CONFIG, OCI_MANIFEST, ociLayerMediaType } from '../oci/media-types.ts';
import type { ImageSource, LayerRef } from '../transport/types.ts';
import type { ImageConfig, Manifest } from '../oci/types.ts';
import { writeTar } from '../tar/writer.ts';
import { treeToTarEntries } from '../tree/to-tar.ts';

/** The layer, made on the fly: its blob (as stored) and its tar (decompressed where it is compressed). */
interface LayerSpec {
  blob: { digest: string; size: number };
  diffId: string;
  mediaType: string;
  openBlob(): AsyncIterable<Uint8Array>;
  /** The tar, from the blob as `blob` reads it (counted for the planner's report). */
  openTar(blob: () => AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array>;
}

function singleLayerSource(ref: string, layer: LayerSpec): ImageSource {
  let read = 0;
  const counted = async function* (src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const c of src) { read += c.length; yield c; }
  };
  const blob = (): AsyncIterable<Uint8Array> => counted(layer.openBlob());
  const ref0: LayerRef = {
    index: 0, digest: layer.blob.digest, mediaType: layer.mediaType, size: layer.blob.size, diffId: layer.diffId,
    openBlob: () => verifyDigest(blob(), layer.blob.digest, ref, layer.blob.size),
    openTar: () => verifyDigest(layer.openTar(blob), layer.diffId, `${ref} (uncompressed)`),
    bytesRead: () => read,
  };
  const config: ImageConfig = {
    architecture: process.arch === 'x64' ? 'amd64' : process.arch,
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created_by: `cowshed import ${ref}` }],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: sha256Digest(configBytes), size: configBytes.length },
    layers: [{ mediaType: layer.mediaType, digest: layer.blob.digest, size: layer.blob.size }],
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  return {
    ref,
    manifest: { digest: sha256Digest(manifestBytes), mediaType: OCI_MANIFEST, bytes: manifestBytes, parsed: manifest },
    config: { digest: manifest.config.digest, bytes: configBytes, parsed: config },
    layers: [ref0],
    close: async () => {},
  };
}

function statKind(path: string, ref: string): 'file' | 'dir' {
  try {
    const st = statSync(path);
    if (st.isFile()) return 'file';
    if (st.isDirectory()) return 'dir';
  } catch (e) {
    return fail('ENOENT', `cannot read ${ref}: ${(e as Error).message}`);
  }
  return fail('EINVAL', `${ref} is neither a regular file nor a directory`);
}

export async function openTarballSource(file: string): Promise<ImageSource> {
  const ref = `tar:${file}`;
  if (statKind(file, ref) !== 'file') fail('EINVAL', `${ref} is not a regular file`);
  const compression = detectCompression(await readHead(file), ref);
  const blob = await digestOfStream(createReadStream(file));
  const diff = compression === 'none' ? blob : await digestOfStream(decompress(createReadStream(file), ref));
  const openBlob = () => createReadStream(file);
  return singleLayerSource(ref, {
    blob, diffId: diff.digest, mediaType: ociLayerMediaType(compression), openBlob,
    openTar: (read) => decompress(verifyDigest(read(), blob.digest, ref, blob.size), ref),
  });
}

export async function openDirectorySource(dir: string): Promise<ImageSource> {
  const ref = `dir:${dir}`;
  if (statKind(dir, ref) !== 'dir') fail('EINVAL', `${ref} is not a directory`);
  const { treeFromDirectory } = await import('../composefs/from-dir.ts');
  // treeFromDirectory names non-inline files by digest path (XX/rest), not by their path in dir:
  // remember where each digest's content came from (hardlinks and equal files share one).
  const sources = new Map<string, Buffer>();
  const root = await treeFromDirectory(dir, { hardlinks: true, storeObject: async (src, digest) => { sources.set(Buffer.from(digest).toString('hex'), src); } });
  const tar = () => writeTar(treeToTarEntries(root, (node, path) => {
    const src = node.digest && sources.get(Buffer.from(node.digest).toString('hex'));
    if (!src) throw new CowshedError('EFORMAT', `${ref}: no source path for ${path}`);
    return createReadStream(src);
  }));
  const blob = await digestOfStream(tar());
  return singleLayerSource(ref, { blob, diffId: blob.digest, mediaType: ociLayerMediaType('none'), openBlob: tar, openTar: (read) => read() });
}

async function readHead(file: string): Promise<Uint8Array> {
  for await (const chunk of createReadStream(file, { start: 0, end: 15 })) return chunk as Uint8Array;
  return new Uint8Array(0);
}
