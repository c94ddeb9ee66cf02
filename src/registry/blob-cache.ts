// What cowshed knows of blobs in registries: for each registry, the blobs it
// pulled or pushed (digest, size, media type, the layer's diff ID, the
// repositories holding it). Compression is not byte-stable, so a layer
// pushed once must be named by the same compressed digest next time; and a
// blob known in another repository of the same registry can be mounted
// instead of uploaded. A cache: losing it costs uploads, never correctness
// (every use is checked with a HEAD or a mount first).
//
// File: <store>/registry-blobs.json, written atomically.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { isDigest } from '../oci/digest.ts';

export interface KnownBlob {
  digest: string; size: number; mediaType: string; diffId: string; repos: string[];
  /** Layer annotations the blob needs (zstd:chunked TOC digest and positions). */
  annotations?: Record<string, string>;
}

interface CacheFile { version: 1; registries: Record<string, Record<string, Omit<KnownBlob, 'digest'>>> }

const FILE = 'registry-blobs.json';
const MAX_REPOS = 64;

function cachePath(store: Store): string { return join(store.paths.root, FILE); }

function load(store: Store): CacheFile {
  const p = cachePath(store);
  if (!existsSync(p)) return { version: 1, registries: {} };
  try {
    const v = JSON.parse(readFileSync(p, 'utf8')) as CacheFile;
    if (v && v.version === 1 && typeof v.registries === 'object' && v.registries !== null) return v;
  } catch { /* damaged: start again, it is only a cache */ }
  return { version: 1, registries: {} };
}

/** Blobs of this registry whose uncompressed content is `diffId`. */
export function knownBlobs(store: Store, registry: string, diffId: string): KnownBlob[] {
  const blobs = load(store).registries[registry] ?? {};
  return Object.entries(blobs)
    .filter(([digest, b]) => b.diffId === diffId && isDigest(digest) && Array.isArray(b.repos))
    .map(([digest, b]) => ({ digest, ...b }));
}

/** Remembers that these blobs are in `repo` of `registry`. */
export function recordBlobs(store: Store, registry: string, repo: string, blobs: Array<Omit<KnownBlob, 'repos'>>): void {
  if (blobs.length === 0) return;
  const cache = load(store);
  const reg = (cache.registries[registry] ??= {});
  for (const b of blobs) {
    const entry = (reg[b.digest] ??= { size: b.size, mediaType: b.mediaType, diffId: b.diffId, repos: [] });
    if (b.annotations) entry.annotations = b.annotations;
    entry.repos = [repo, ...entry.repos.filter((r) => r !== repo)].slice(0, MAX_REPOS);
  }
  writeFileAtomic(cachePath(store), JSON.stringify(cache), store.paths.tmp);
}
