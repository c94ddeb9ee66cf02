// Media types cowshed reads and writes. Compression of a layer is detected by
// magic bytes (see compression.ts); the media type only says it is a layer.

export const OCI_LAYOUT_VERSION = '1.0.0';
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_LAYER_TAR_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_TAR_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
// Deprecated by the spec but still found in the wild (Windows base layers).
export const OCI_LAYER_NONDIST_TAR = 'application/vnd.oci.image.layer.nondistributable.v1.tar';
export const OCI_LAYER_NONDIST_TAR_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
export const OCI_LAYER_NONDIST_TAR_ZSTD = 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd';

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER_TAR = 'application/vnd.docker.image.rootfs.diff.tar';
export const DOCKER_LAYER_TAR_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const DOCKER_LAYER_FOREIGN_TAR_GZIP = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';
// Schema 1 is signed JSON with a different shape; named so the error can say so.
export const DOCKER_MANIFEST_V1 = 'application/vnd.docker.distribution.manifest.v1+json';
export const DOCKER_MANIFEST_V1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';

export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([OCI_MANIFEST, DOCKER_MANIFEST]);
export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([OCI_INDEX, DOCKER_MANIFEST_LIST]);
export const CONFIG_MEDIA_TYPES: ReadonlySet<string> = new Set([OCI_CONFIG, DOCKER_CONFIG]);
export const LAYER_MEDIA_TYPES: ReadonlySet<string> = new Set([
  OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD,
  OCI_LAYER_NONDIST_TAR, OCI_LAYER_NONDIST_TAR_GZIP, OCI_LAYER_NONDIST_TAR_ZSTD,
  DOCKER_LAYER_TAR, DOCKER_LAYER_TAR_GZIP, DOCKER_LAYER_FOREIGN_TAR_GZIP,
]);

export function isManifestMediaType(t: string): boolean { return MANIFEST_MEDIA_TYPES.has(t); }
export function isIndexMediaType(t: string): boolean { return INDEX_MEDIA_TYPES.has(t); }
export function isConfigMediaType(t: string): boolean { return CONFIG_MEDIA_TYPES.has(t); }
export function isLayerMediaType(t: string): boolean { return LAYER_MEDIA_TYPES.has(t); }

export type Compression = 'none' | 'gzip' | 'zstd';

/** The OCI layer media type for a compression (what cowshed writes). */
export function ociLayerMediaType(c: Compression): string {
  return c === 'gzip' ? OCI_LAYER_TAR_GZIP : c === 'zstd' ? OCI_LAYER_TAR_ZSTD : OCI_LAYER_TAR;
}
