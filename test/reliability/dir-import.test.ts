// Regression (found by the crash campaign): `import dir:` failed with ENOENT for any
// file above the 64-byte inline limit, because the directory source opened files by
// their digest path instead of their path in the directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, linkSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';

test('import dir: stores files of every size, hardlinks included, and they read back', () => {
  const work = tempDir();
  try {
    const src = join(work, 'src');
    mkdirSync(join(src, 'sub'), { recursive: true });
    const files: Record<string, Buffer> = {
      tiny: Buffer.from('tiny\n'),
      'sub/medium': pseudoRandomBytes(5000, 1),
      big: pseudoRandomBytes(300_000, 2),
    };
    for (const [p, data] of Object.entries(files)) writeFileSync(join(src, p), data);
    linkSync(join(src, 'big'), join(src, 'big-link'));
    const store = join(work, 'store');
    cowshedOk(store, 'import', `dir:${src}`, 'dir:1');
    const root = lastLine(cowshedOk(store, 'mount', 'dir:1'));
    try {
      for (const [p, data] of Object.entries(files)) assert.ok(readFileSync(join(root, p)).equals(data), p);
      assert.ok(readFileSync(join(root, 'big-link')).equals(files.big));
    } finally {
      cowshedOk(store, 'umount', 'dir:1');
    }
    cowshedOk(store, 'fsck');
  } finally {
    removeTree(work);
  }
});
