// The EROFS reader on damaged images: every corruption gives a typed
// EFORMAT error or a tree, never a crash from an out-of-range read or a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseDump } from '../../src/composefs/dump.ts';
import { writeComposefsImage } from '../../src/composefs/erofs-writer.ts';
import { readComposefsImage } from '../../src/composefs/erofs-reader.ts';
import { CowshedError } from '../../src/util/errors.ts';
import { sharedPath } from '../helpers/cli.ts';

/** mulberry32: a small seeded PRNG so failures reproduce. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Images written from mkcomposefs's test vectors (shared data beside the repository).
const vectors = sharedPath('vectors', 'composefs');
const vector = (f: string): string => join(vectors.path, f);
const images = vectors.skip ? [] : [
  writeComposefsImage(parseDump(readFileSync(vector('special_v1.dump')))),
  writeComposefsImage(parseDump(gunzipSync(readFileSync(vector('config-with-hard-link.dump.gz'))))),
  writeComposefsImage(parseDump(readFileSync(vector('longlink.dump')), { lenient: true })),
];

function tryRead(img: Uint8Array): void {
  try {
    readComposefsImage(img);
  } catch (e) {
    if (!(e instanceof CowshedError) || e.code !== 'EFORMAT') throw e;
  }
}

test('not a composefs image', () => {
  for (const b of [Buffer.alloc(0), Buffer.alloc(100), Buffer.alloc(8192), Buffer.from('hello world')]) {
    assert.throws(() => readComposefsImage(b), (e: unknown) => e instanceof CowshedError && e.code === 'EFORMAT');
  }
});

test('truncated images give EFORMAT', { skip: vectors.skip }, () => {
  const img = images[0]!;
  for (let len = 0; len < img.length; len += 97) {
    assert.throws(() => readComposefsImage(img.subarray(0, len)), (e: unknown) => e instanceof CowshedError && e.code === 'EFORMAT', `length ${len}`);
  }
});

test('random corruption never crashes the reader', { skip: vectors.skip }, () => {
  const rand = prng(0xc0ffee);
  for (let round = 0; round < 2000; round++) {
    // The big image is slow to read: corrupt it less often.
    const src = images[round % 20 === 0 ? 1 : round % 2 === 0 ? 0 : 2]!;
    const img = Buffer.from(src);
    const flips = 1 + Math.floor(rand() * 8);
    // Mostly hit the metadata (superblock, inodes, xattrs, dirents) where the structure lives.
    const hot = Math.min(img.length, 3 * 4096);
    for (let i = 0; i < flips; i++) {
      const at = rand() < 0.8 ? 1024 + Math.floor(rand() * (hot - 1024)) : Math.floor(rand() * img.length);
      img[at] = Math.floor(rand() * 256);
    }
    tryRead(img);
  }
});
