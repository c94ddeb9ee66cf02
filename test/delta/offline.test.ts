// Offline deltas on the ten-version series: `delta create` in a store that
// has both versions, `delta apply` in a store that has only the older one.
// Any pair works (1→3, 2→7, 9→10), the result is the very image (same
// manifest digest) and mounts as exactly the tree `umoci unpack` gives; bad
// deltas fail in one line and change nothing; a kill during apply leaves
// nothing visible and the next apply finishes.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { zstdCompressSync } from 'node:zlib';
import { cowshed, cowshedOk, lastLine, removeTree, tempDir, REPO } from '../helpers/cli.ts';
import { compareTrees, listTree } from '../helpers/tree-listing.ts';
import { editLayoutDelta, readLayoutDelta, seriesFixture } from './helpers.ts';

const isRoot = process.getuid?.() === 0;

describe('offline deltas (delta create / delta apply)', { skip: isRoot ? false : 'needs root (fixture, mounts)', timeout: 1_800_000 }, () => {
  let work: string;
  let layout: string;
  let pub: string;
  const ids = new Map<number, string>();

  const imagesOf = (store: string): string[] => (JSON.parse(cowshedOk(store, 'images', '--json')) as Array<{ id: string }>).map((i) => i.id).sort();
  const storeWith = (name: string, v: number): string => {
    const s = join(work, name);
    cowshedOk(s, 'import', `oci:${layout}:v${v}`, `series:v${v}`);
    return s;
  };

  before(() => {
    layout = seriesFixture();
    work = tempDir('cowshed-delta-');
    pub = join(work, 'publisher');
    for (const v of [1, 2, 3, 7]) ids.set(v, lastLine(cowshedOk(pub, 'import', `oci:${layout}:v${v}`, `series:v${v}`)));
  });
  after(() => { if (work) removeTree(work); });

  test('any pair: 1→3 (file), 2→7 (oci: layout, mounted = umoci unpack); the same image, far fewer bytes than the layer', async () => {
    for (const [i, j, dest] of [[1, 3, join(work, 'd13.delta')], [2, 7, `oci:${join(work, 'd27')}:v2-v7`]] as const) {
      const made = JSON.parse(cowshedOk(pub, 'delta', 'create', '--json', `series:v${i}`, `series:v${j}`, dest)) as { bytes: number; patches: number; objects: number };
      assert.ok(made.objects > 0 && made.patches > 0, `${i}→${j}: patches made`);
      const client = storeWith(`client-${i}-${j}`, i);
      const r = JSON.parse(cowshedOk(client, 'delta', 'apply', '--json', dest)) as { id: string; name: string; bytesRead: number; objectsRebuilt: number };
      assert.equal(r.id, ids.get(j), `${i}→${j}: the image rebuilt is the one the delta was made to`);
      assert.equal(r.name, `series:v${j}`);
      assert.ok(r.objectsRebuilt > 0);
      const layerBytes = (JSON.parse(cowshedOk(pub, 'inspect', `series:v${j}`)) as { layers: Array<{ size: number }> }).layers.reduce((a, l) => a + l.size, 0);
      assert.ok(r.bytesRead * 20 < layerBytes, `${i}→${j}: ${r.bytesRead} bytes read vs a ${layerBytes}-byte layer`);
      execFileSync(process.execPath, [join(REPO, 'bin/cowshed.js'), '--store', client, 'fsck'], { stdio: 'ignore' });
      if (i === 2) {
        const mnt = lastLine(cowshedOk(client, 'mount', `series:v${j}`));
        try {
          const unpacked = join(work, 'unpacked-v7');
          execFileSync('umoci', ['unpack', '--image', `${layout}:v7`, unpacked], { stdio: 'ignore' });
          const diffs = compareTrees(await listTree(mnt, { nsec: true }), await listTree(join(unpacked, 'rootfs'), { nsec: true }), { ignoreRoot: true });
          assert.deepEqual(diffs, []);
        } finally {
          cowshedOk(client, 'umount', `series:v${j}`);
        }
      }
      if (i !== 1) removeTree(client);
    }
  });

  // Every refusal below leaves the store sound: the kill test at the end
  // checks it with fsck (one full re-hash instead of one per refusal).
  describe('bad input: one line, nothing changed', () => {
    let client: string;
    let before13: string[];
    const layoutCopy = (name: string): string => {
      const dir = join(work, name);
      cpSync(join(work, 'd13-layout'), dir, { recursive: true });
      return dir;
    };
    const refuse = (delta: string, pattern: RegExp, store = client): void => {
      const beforeImages = imagesOf(store);
      const r = cowshed(store, 'delta', 'apply', delta);
      assert.notEqual(r.status, 0, `${delta} was applied`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, pattern);
      assert.deepEqual(imagesOf(store), beforeImages, 'no image appeared');
    };

    before(() => {
      client = join(work, 'client-1-3'); // holds v1 and v3 (from the first test): v3 goes
      cowshedOk(client, 'rmi', 'series:v3');
      cowshedOk(client, 'gc');
      before13 = imagesOf(client);
      cowshedOk(pub, 'delta', 'create', 'series:v1', 'series:v3', `oci:${join(work, 'd13-layout')}`);
    });

    test('a patch that does not reproduce its object', () => {
      const dir = layoutCopy('bad-patch');
      editLayoutDelta(dir, (ix, packs) => {
        const e = ix.entries.find((x) => x.k === 'patch' && x.len > 16)!;
        packs[e.p]![e.off + Math.floor(e.len / 2)] ^= 0xff;
      });
      refuse(`oci:${dir}`, /object [0-9a-f]{12}|does not (reproduce|decompress)/);
    });

    test('an index entry pointing outside its pack', () => {
      const dir = layoutCopy('outside');
      editLayoutDelta(dir, (ix) => { ix.entries[ix.entries.length - 1]!.off = ix.packs[0]!.size + 10; });
      refuse(`oci:${dir}`, /outside pack/);
    });

    test('a pack cut short', () => {
      const dir = layoutCopy('short');
      const d = readLayoutDelta(dir);
      truncateSync(join(dir, 'blobs', 'sha256', d.index.packs[0]!.digest.slice(7)), Math.floor(d.index.packs[0]!.size / 2));
      refuse(`oci:${dir}`, /cut short|cannot be rebuilt/);
    });

    test('a zstd bomb (an entry that decompresses far past its stated size)', () => {
      const dir = layoutCopy('bomb');
      editLayoutDelta(dir, (ix, packs) => {
        const e = ix.entries.find((x) => x.k === 'patch' || x.k === 'zstd')!;
        const bomb = zstdCompressSync(Buffer.alloc(256 << 20));
        e.k = 'zstd';
        delete e.b;
        e.off = packs[e.p]!.length;
        e.len = bomb.length;
        packs[e.p] = Buffer.concat([packs[e.p]!, bomb]);
      });
      refuse(`oci:${dir}`, /does not decompress|cannot be rebuilt/);
    });

    test('a delta whose index is for another target than its manifest names', () => {
      const dir = layoutCopy('other-target');
      const other = readFileSync(join(pub, 'blobs', 'sha256', ids.get(7)!.slice(7)));
      editLayoutDelta(dir, (ix) => { ix.to.manifestBytes = other; ix.to.manifest = ids.get(7)!; });
      refuse(`oci:${dir}`, /disagree/);
    });

    test('a base the host lacks (empty store)', () => {
      const empty = join(work, 'empty');
      cowshedOk(empty, 'images');
      refuse(join(work, 'd13.delta'), /cannot be rebuilt|no delta gives/, empty);
    });

    test('not a delta at all', () => {
      const junk = join(work, 'junk.delta');
      writeFileSync(junk, Buffer.alloc(4096, 7));
      refuse(junk, /not a delta|index\.json/);
    });

    test('a kill during apply leaves nothing visible; the next apply finishes', async () => {
      assert.deepEqual(imagesOf(client), before13);
      const child = spawn(process.execPath, [join(REPO, 'bin/cowshed.js'), '--store', client, 'delta', 'apply', join(work, 'd13.delta')], { stdio: 'ignore' });
      // Kill once it is rebuilding the layer (objects staged under tmp/).
      const tmp = join(client, 'tmp');
      for (let i = 0; i < 600; i++) {
        if (readdirSync(tmp).some((n) => n.startsWith(`objects-${child.pid}-`))) break;
        await sleep(50);
      }
      await sleep(300);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      assert.deepEqual(imagesOf(client), before13, 'nothing half-applied is visible');
      assert.ok(readdirSync(tmp).some((n) => n.startsWith(`objects-${child.pid}-`)), 'killed while staging');
      const r = JSON.parse(cowshedOk(client, 'delta', 'apply', '--json', join(work, 'd13.delta'))) as { id: string };
      assert.equal(r.id, ids.get(3));
      const fsck = cowshed(client, 'fsck');
      assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
    });
  });
});
