// Deltas with names that are bytes: two versions of an image whose files
// have Latin-1 names (two that differ only in a byte that is not UTF-8, of
// the same size), 0xff, a 255-byte Latin-1 name and a UTF-8 name. `delta
// create` patches each edited file against its own previous version (found
// by its exact path), and `delta apply` in a store holding only v1 rebuilds
// exactly v2: the same manifest, the same composefs image, and mounted, the
// same tree as the directory it was made from, names byte for byte.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { compareTrees, listTree } from '../helpers/tree-listing.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';

const isRoot = process.getuid?.() === 0;
const B = (s: string): Buffer => Buffer.from(s, 'latin1');
/** A binary-string (one char per byte) path below a host dir, as a Buffer for fs calls. */
const at = (dir: string, rel: string): Buffer => Buffer.concat([Buffer.from(dir), B('/'), B(rel)]);
const UTF8 = Buffer.from('café.bin', 'utf8').toString('latin1');
const EDITED = ['caf\xe9.bin', 'caf\xe8.bin', '\xff', '\xe9'.repeat(255), UTF8];

describe('deltas: names are bytes', { skip: isRoot ? false : 'needs root (mounts)' }, () => {
  let work: string;
  let root: string;
  before(() => {
    work = tempDir('cowshed-delta-bytes-');
    root = join(work, 'root');
    mkdirSync(at(root, 'd\xe9j\xe0'), { recursive: true });
    EDITED.forEach((n, i) => writeFileSync(at(root, n), pseudoRandomBytes(100_000, i + 1)));
    writeFileSync(at(root, 'd\xe9j\xe0/inner'), 'inner\n');
    symlinkSync(B('caf\xe9.bin'), at(root, 'lien-\xe9'));
  });
  after(() => { if (work) removeTree(work); });

  test('delta create patches each file against its exact path; delta apply rebuilds exactly v2', async () => {
    const tar = (name: string): string => {
      const f = join(work, name);
      execFileSync('tar', ['--format=gnu', '--sort=name', '--mtime=@1700000000', '-C', root, '-cf', f, '.']);
      return f;
    };
    const pub = join(work, 'pub');
    const client = join(work, 'client');
    const v1 = tar('v1.tar');
    cowshedOk(pub, 'import', `tar:${v1}`, 'bytes:v1');
    cowshedOk(client, 'import', `tar:${v1}`, 'bytes:v1');
    // v2: one byte changed in each file; the twins caf\xe9 and caf\xe8 are as alike in size as in (lossy) name.
    for (const n of EDITED) {
      const b = readFileSync(at(root, n));
      b[5000] ^= 0xff;
      writeFileSync(at(root, n), b);
    }
    const v2 = lastLine(cowshedOk(pub, 'import', `tar:${tar('v2.tar')}`, 'bytes:v2'));
    const made = JSON.parse(cowshedOk(pub, 'delta', 'create', '--json', 'bytes:v1', 'bytes:v2', join(work, 'd.delta'))) as { patches: number; objects: number; bytes: number };
    assert.equal(made.objects, EDITED.length);
    assert.equal(made.patches, EDITED.length, 'each file patched against its previous version');
    assert.ok(made.bytes < 50_000, `${made.bytes} bytes for ${EDITED.length} one-byte edits of 100 kB random files`);
    const r = JSON.parse(cowshedOk(client, 'delta', 'apply', '--json', join(work, 'd.delta'))) as { id: string };
    assert.equal(r.id, v2);
    const composefs = (s: string): string => (JSON.parse(cowshedOk(s, 'inspect', 'bytes:v2')) as { composefs: string }).composefs;
    assert.equal(composefs(client), composefs(pub));
    const mnt = lastLine(cowshedOk(client, 'mount', 'bytes:v2'));
    try {
      const diffs = compareTrees(await listTree(root, { bytes: true }), await listTree(mnt, { bytes: true }), { ignoreRoot: true, ignoreMtime: true });
      assert.deepEqual(diffs, [], diffs.join('\n'));
    } finally {
      cowshedOk(client, 'umount', 'bytes:v2');
    }
  });
});
