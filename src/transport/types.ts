// The one way images come in, whatever the transport: an image source gives
// a manifest, a config and its layers' blobs, and where it can, byte ranges
// of those blobs (as containers/image's ImageSource and its GetBlobAt).
//
//   oci:, oci-archive:, docker-archive:   src/oci/source.ts (ranges: file reads)
//   tar:, dir:                            src/store/local-sources.ts (no ranges: made on the fly)
//   docker:// (pull)                      src/registry/pull.ts (ranges: HTTP Range requests)
//   a delta's target                      src/delta/apply.ts (no ranges: rebuilt from the delta)
//
// Every source enters the store the same way, Store.importSource: above the
// source, src/plan/layers.ts decides per layer (reuse what the store has,
// read only the missing files, or chunks of files, of a zstd:chunked layer,
// or read the blob whole) and per file (store or blob); the store's import
// reads whatever the plan hands it, verified against the diff ID.
import { closeSync, openSync, readSync } from 'node:fs';
import { CowshedError } from '../util/errors.ts';
import type { Manifest, ImageConfig } from '../oci/types.ts';

/** [start, end) bytes of a blob. */
export interface ByteRange { start: number; end: number }

export interface LayerRef {
  /** Position in the manifest, 0 = bottom layer. */
  index: number;
  digest: string;
  mediaType: string;
  size: number;
  diffId: string;
  /** The layer descriptor's annotations (zstd:chunked TOC digest and positions). */
  annotations?: Record<string, string>;
  /** Compressed (as stored) bytes, verified against digest and size while streaming. */
  openBlob(): AsyncIterable<Uint8Array>;
  /** Uncompressed tar stream: blob digest verified, decompressed by magic, diff ID verified at the end. */
  openTar(): AsyncIterable<Uint8Array>;
  /**
   * Where the transport can: the bytes of `ranges` of the blob (unverified:
   * the caller checks them against the digests it knows), handed to put()
   * as they come. Returns true when the transport sent the whole blob
   * instead (then every byte of it went to put()).
   */
  readRanges?(ranges: ByteRange[], put: (offset: number, bytes: Buffer) => void): Promise<boolean>;
  /** Blob bytes this layer took from its transport so far (for reports). */
  bytesRead?(): number;
}

export interface ImageSource {
  ref: string;
  manifest: { digest: string; mediaType: string; bytes: Buffer; parsed: Manifest };
  config: { digest: string; bytes: Buffer; parsed: ImageConfig };
  layers: LayerRef[];
  close(): Promise<void>;
}

/** Reads ranges of a blob stored at `start` in `file` (layouts, archives). */
export function readFileRanges(file: string, start: number, size: number, ranges: ByteRange[], put: (offset: number, bytes: Buffer) => void, what: string): void {
  const fd = openSync(file, 'r');
  try {
    for (const r of ranges) {
      if (r.start < 0 || r.end > size || r.end < r.start) throw new CowshedError('EFORMAT', `${what}: range ${r.start}-${r.end} is outside the blob (${size} bytes)`);
      const b = Buffer.alloc(r.end - r.start);
      let done = 0;
      while (done < b.length) {
        const n = readSync(fd, b, done, b.length - done, start + r.start + done);
        if (n === 0) throw new CowshedError('EFORMAT', `${what}: file ends inside the blob`);
        done += n;
      }
      put(r.start, b);
    }
  } finally {
    closeSync(fd);
  }
}
