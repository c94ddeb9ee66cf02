// Writes an OCI image layout (oci-layout, index.json, blobs/sha256/…) from
// layer files and a config. Used by tests to build fixture images, and by
// building fixtures. Layers are hashed and copied streaming; index.json keeps the
// layout's other images and replaces only the entry with the same tag.

import { createReadStream } from 'node:fs';
import { copyFile, mkdir, rename, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../util/fs.ts';
import { join } from 'node:path';
import { decompress, detectCompression, MAGIC_BYTES } from './compression.ts';
import { digestOfStream, sha256Digest, validateDigest } from './digest.ts';
import { OCI_CONFIG, OCI_MANIFEST, ociLayerMediaType } from './media-types.ts';
import { addToIndex, initLayout } from './layout-index.ts';
import type { Descriptor } from './types.ts';

export interface LayoutLayerInput {
  /** A tar, tar.gz or tar.zst file (compression detected by magic). */
  path: string;
  /** Default: the OCI layer type for the detected compression. */
  mediaType?: string;
  /** Default: computed by decompressing the file. */
  diffId?: string;
}

export interface LayoutImageInput {
  /** An object gets rootfs.diff_ids (and os/architecture if absent) filled in; a Buffer is written as is. */
  config: object | Buffer;
  layers: LayoutLayerInput[];
  tag?: string;
  /** Manifest annotations. */
  annotations?: Record<string, string>;
}

async function writeBlob(dir: string, data: Uint8Array): Promise<string> {
  const digest = sha256Digest(data);
  const path = join(dir, 'blobs', 'sha256', digest.slice(7));
  const exists = await stat(path).then(() => true, () => false);
  if (!exists) writeFileAtomic(path, data);
  return digest;
}

async function readHead(path: string): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const c of createReadStream(path, { start: 0, end: MAGIC_BYTES - 1 })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function writeOciLayout(dir: string, img: LayoutImageInput): Promise<{ manifestDigest: string }> {
  await initLayout(dir);

  const layerDescriptors: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const layer of img.layers) {
    const compression = detectCompression(await readHead(layer.path), layer.path);
    const { digest, size } = await digestOfStream(createReadStream(layer.path, { highWaterMark: 1 << 20 }));
    const diffId = layer.diffId !== undefined
      ? validateDigest(layer.diffId, `${layer.path}: diffId`)
      : compression === 'none' ? digest : (await digestOfStream(decompress(createReadStream(layer.path, { highWaterMark: 1 << 20 }), layer.path))).digest;
    const blob = join(dir, 'blobs', 'sha256', digest.slice(7));
    if (!(await stat(blob).then(() => true, () => false))) {
      const tmp = `${blob}.tmp-${process.pid}`;
      await copyFile(layer.path, tmp);
      await rename(tmp, blob);
    }
    layerDescriptors.push({ mediaType: layer.mediaType ?? ociLayerMediaType(compression), digest, size });
    diffIds.push(diffId);
  }

  let configBytes: Buffer;
  if (Buffer.isBuffer(img.config)) {
    configBytes = img.config;
  } else {
    const c: Record<string, unknown> = { architecture: 'amd64', os: 'linux', ...(img.config as Record<string, unknown>) };
    c.rootfs = { type: 'layers', diff_ids: diffIds };
    configBytes = Buffer.from(JSON.stringify(c));
  }
  const configDigest = await writeBlob(dir, configBytes);

  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: configBytes.length },
    layers: layerDescriptors,
  };
  if (img.annotations !== undefined) manifest.annotations = img.annotations;
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await writeBlob(dir, manifestBytes);

  await addToIndex(dir, { mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifestBytes.length }, img.tag);
  return { manifestDigest };
}

/** Writes one blob (for tests that hand-build indexes or broken images). */
export async function writeOciBlob(dir: string, data: Uint8Array): Promise<string> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  return writeBlob(dir, data);
}
