// `tar:FILE`: a root filesystem tarball (plain, gzip or zstd) imported as a
// one-layer image. There is no manifest or config, so we write the ones an
// OCI image of that tarball would have; reading the file once beforehand
// gives the blob digest and the diff ID they must name.
import { createReadStream, statSync } from 'node:fs';
import { CowshedError, fail } from '../util/errors.ts';
import { decompress, detectCompression } from '../oci/compression.ts';
import { digestOfStream, verifyDigest } from '../oci/digest.ts';
import { OCI_CONFIG, OCI_MANIFEST, ociLayerMediaType } from '../oci/media-types.ts';
import type { ImageSource } from '../oci/source.ts';
import type { ImageConfig, Manifest } from '../oci/types.ts';
import { sha256Digest } from '../oci/digest.ts';

export async function openTarballSource(file: string): Promise<ImageSource> {
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) fail('EINVAL', `tar:${file} is not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof CowshedError) throw e;
    return fail('ENOENT', `cannot read tar:${file}: ${(e as Error).message}`);
  }
  const head = await readHead(file);
  const compression = detectCompression(head, `tar:${file}`);
  const blob = await digestOfStream(createReadStream(file));
  const diff = compression === 'none' ? blob : await digestOfStream(decompress(createReadStream(file), `tar:${file}`));

  const config: ImageConfig = {
    architecture: process.arch === 'x64' ? 'amd64' : process.arch,
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [diff.digest] },
    history: [{ created_by: `cowshed import tar:${file}` }],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const mediaType = ociLayerMediaType(compression);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: sha256Digest(configBytes), size: configBytes.length },
    layers: [{ mediaType, digest: blob.digest, size }],
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const what = `tar:${file}`;
  return {
    ref: what,
    manifest: { digest: sha256Digest(manifestBytes), mediaType: OCI_MANIFEST, bytes: manifestBytes, parsed: manifest },
    config: { digest: manifest.config.digest, bytes: configBytes, parsed: config },
    layers: [{
      index: 0, digest: blob.digest, mediaType, size, diffId: diff.digest,
      // The file could change between the two reads: verify again.
      openBlob: () => verifyDigest(createReadStream(file), blob.digest, what, size),
      openTar: () => verifyDigest(decompress(verifyDigest(createReadStream(file), blob.digest, what, size), what), diff.digest, `${what} (uncompressed)`),
    }],
    close: async () => {},
  };
}

async function readHead(file: string): Promise<Uint8Array> {
  for await (const chunk of createReadStream(file, { start: 0, end: 15 })) return chunk as Uint8Array;
  return new Uint8Array(0);
}
