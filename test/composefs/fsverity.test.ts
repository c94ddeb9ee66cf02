// fs-verity digests of bytes in memory (fsverityDigest, level by level) and
// streamed (FsVerityHasher, any chunking) agree with each other and with the
// `fsverity digest` tool (fsverity-utils) at the sizes where the Merkle tree
// changes shape: one block, one level of digests, two and three levels.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FsVerityHasher, fsverityDigest } from '../../src/composefs/fsverity.ts';
import { tempDir } from '../helpers/cli.ts';

const hasTool = ((): boolean => { try { execFileSync('fsverity', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; } })();
const B = 4096;
const SIZES = [0, 1, 100, B - 1, B, B + 1, 2 * B, 128 * B - 1, 128 * B, 128 * B + 1, 129 * B, 128 * 128 * B, 128 * 128 * B + 7, 3_000_001];

test('fsverityDigest equals the streaming hasher (odd chunks) and the fsverity tool', () => {
  const dir = tempDir('cowshed-fsverity-');
  try {
    for (const size of SIZES) {
      const data = randomBytes(size);
      // An offset view: the one-shot path must honour byteOffset.
      const padded = Buffer.concat([Buffer.alloc(3), data]).subarray(3);
      const oneShot = fsverityDigest(padded).toString('hex');
      const h = new FsVerityHasher();
      for (let off = 0; off < size; off += 12345) h.update(data.subarray(off, Math.min(size, off + 12345)));
      assert.equal(oneShot, h.digest().toString('hex'), `size ${size}`);
      if (hasTool) {
        const file = join(dir, `f${size}`);
        writeFileSync(file, data);
        assert.equal(execFileSync('fsverity', ['digest', '--compact', file], { encoding: 'utf8' }).trim(), oneShot, `size ${size} (fsverity digest)`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fsverityDigest after a larger input reuses its buffers without carrying bytes over', () => {
  const big = randomBytes(128 * 128 * B + 1);
  const small = randomBytes(129 * B);
  const before = fsverityDigest(small).toString('hex');
  fsverityDigest(big);
  assert.equal(fsverityDigest(small).toString('hex'), before);
  assert.equal(new FsVerityHasher().update(small).digest().toString('hex'), before);
});
