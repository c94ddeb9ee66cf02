// Stacked images (src/composefs/stack.ts): a commit on the composefs driver
// writes only its change as a small layer image mounted above the parent's.
// The judge: the stacked image mounted must be exactly the tree of the same
// image flattened (deleted files and directories, a directory replaced by a
// file and back, a directory emptied and refilled, metadata, xattrs, hardlinks,
// across a stack of three), the flattened image byte-identical to what
// mkcomposefs 1.0.8 makes of that tree, and gc keeps what a stack needs.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk, tempDir, removeTree, lastLine, REPO } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';
import { buildEdgeImage } from '../fixtures/edge-image.ts';
import { Store } from '../../src/store/store.ts';
import { stackOf, ensureFlat } from '../../src/composefs/stack.ts';
import { stackTree } from '../../src/composefs/stack-tree.ts';
import { printDump } from '../../src/composefs/dump.ts';

const sh = (cmd: string, cwd: string): void => { execFileSync('sh', ['-ec', cmd], { cwd, stdio: 'inherit' }); };
const MKCOMPOSEFS = join(REPO, '..', 'shared', 'tools', 'composefs-1.0.8', 'mkcomposefs');

describe('stacked images', () => {
  let work: string;
  let storeDir: string;
  let store: Store;

  before(async () => {
    work = tempDir('cowshed-stacked-');
    storeDir = join(work, 'store');
    const layout = join(work, 'edge-oci');
    await buildEdgeImage(layout);
    cowshedOk(storeDir, 'import', `oci:${layout}:edge`, 'edge');
    store = await Store.open(storeDir);
  });
  after(() => {
    store?.close();
    removeTree(work);
  });

  const composefsOf = (ref: string): string => store.resolveImage(ref).composefs;

  /** Mount an image (as it is now: stacked or flat) and list its tree. */
  const mountedTree = async (ref: string) => {
    const root = lastLine(cowshedOk(storeDir, 'mount', ref));
    try {
      return await listTree(root, { nsec: true, bytes: true });
    } finally {
      cowshedOk(storeDir, 'umount', ref);
    }
  };

  /** The stacked mount of `ref` equals its flattened image's, and that image is mkcomposefs's. */
  const assertFlattensExactly = async (ref: string, depth: number) => {
    const top = composefsOf(ref);
    assert.equal(stackOf(store, top).length, depth, `${ref} is a stack of ${depth}`);
    const stacked = await mountedTree(ref);
    const flat = await ensureFlat(store, store.resolveImage(ref).id);
    assert.notEqual(flat, top);
    assert.equal(composefsOf(ref), flat, 'the image now names its flattened composefs image');
    assert.equal(stackOf(store, flat).length, 1);
    const flatTree = await mountedTree(ref);
    assert.deepEqual(compareTrees(stacked, flatTree), [], 'the stacked mount is exactly the flattened tree');
    if (existsSync(MKCOMPOSEFS)) {
      const dump = join(work, 'tree.dump');
      writeFileSync(dump, printDump(stackTree(store, top)), 'latin1');
      const out = join(work, 'mk.img');
      execFileSync(MKCOMPOSEFS, ['--from-file', dump, out], { stdio: ['ignore', 'ignore', 'pipe'] });
      assert.ok(readFileSync(out).equals(readFileSync(store.imagePath(flat))), 'flattened image = mkcomposefs of the same tree');
    }
  };

  test('a commit is a stack of two; mounted, it is exactly its flattened image', async () => {
    cowshedOk(storeDir, 'create', '--name', 's1', 'edge');
    const r = lastLine(cowshedOk(storeDir, 'mount', 's1'));
    sh([
      'echo added > added.txt',
      'echo more >> files/exactly64',
      'rm files/empty', // a deleted file
      'rm -rf names', // a deleted directory, deep
      'rm -rf links && mkdir links && echo n > links/new', // emptied and refilled
      'rm -rf times && echo now-a-file > times', // a directory replaced by a file
      'rm files/medium.bin && mkdir files/medium.bin && echo x > files/medium.bin/inside', // a file replaced by a directory
      'chmod 0700 modes/setuid',
      'chown 1234:1234 owners/u1000',
      'setfattr -n user.added -v 1 xattrs/user-binary',
      'mkdir -p new/deep && echo a > new/deep/a && ln new/deep/a new/deep/b', // hardlinks within the change
      'setfattr -n user.dir -v v new && mkfifo new/fifo && ln -s ../added.txt new/link',
      'mkdir -p new/gone/deeper && echo g > new/gone/deeper/g',
    ].join('; '), r);
    cowshedOk(storeDir, 'commit', 's1', 'edge:one');
    // Not flattened yet: the commit wrote only its change.
    assert.equal(stackOf(store, composefsOf('edge:one')).length, 2);
    assert.equal(stackOf(store, composefsOf('edge:one'))[1], composefsOf('edge'), 'on top of the parent image');
    // The container's tree is the image's (the root's times aside: the mount point's).
    const committed = await listTree(r, { nsec: true, bytes: true });
    const mounted = await mountedTree('edge:one');
    assert.deepEqual(compareTrees(committed, mounted, { ignoreRoot: true }), []);
    cowshedOk(storeDir, 'rm', 's1');
  });

  test('a commit on a stacked image: a stack of three, exact; gc keeps the stack after its middle image goes', async () => {
    cowshedOk(storeDir, 'create', '--name', 's2', 'edge:one');
    const r = lastLine(cowshedOk(storeDir, 'mount', 's2'));
    sh([
      'rm added.txt', // added by the layer below
      'rm -rf new/gone', // a directory of the layer below
      'rm -rf modes && mkdir modes && echo again > modes/setuid', // emptied across both layers
      'echo second > second.txt',
      'chmod 0750 new',
    ].join('; '), r);
    const diff = cowshedOk(storeDir, 'diff', 's2');
    assert.match(diff, /^D \/added\.txt$/m, 'diff of a container of a stacked image');
    assert.match(diff, /^A \/second\.txt$/m);
    cowshedOk(storeDir, 'commit', 's2', 'edge:two');
    cowshedOk(storeDir, 'rm', 's2');
    const top = composefsOf('edge:two');
    assert.equal(stackOf(store, top).length, 3);
    const before = await mountedTree('edge:two');

    cowshedOk(storeDir, 'rmi', 'edge:one');
    cowshedOk(storeDir, 'gc');
    for (const c of stackOf(store, top)) assert.ok(existsSync(store.imagePath(c)), `gc kept ${c.slice(0, 12)} of the stack`);
    assert.deepEqual(compareTrees(before, await mountedTree('edge:two')), []);
    cowshedOk(storeDir, 'fsck'); // exit 0: no problems
    await assertFlattensExactly('edge:two', 3);
  });

  test('the first stack flattens exactly too; mount --verify mounts the flattened image', async () => {
    cowshedOk(storeDir, 'tag', 'edge:two', 'edge:again');
    cowshedOk(storeDir, 'create', '--name', 's3', 'edge');
    const r = lastLine(cowshedOk(storeDir, 'mount', 's3'));
    sh('echo three > three.txt; rm -rf names', r);
    cowshedOk(storeDir, 'commit', 's3', 'edge:three');
    cowshedOk(storeDir, 'rm', 's3');
    await assertFlattensExactly('edge:three', 2);

    cowshedOk(storeDir, 'create', '--name', 's4', 'edge');
    sh('echo four > four.txt', lastLine(cowshedOk(storeDir, 'mount', 's4')));
    cowshedOk(storeDir, 'commit', 's4', 'edge:four');
    cowshedOk(storeDir, 'rm', 's4');
    const stacked = await mountedTree('edge:four');
    const root = lastLine(cowshedOk(storeDir, 'mount', '--verify', 'edge:four'));
    assert.equal(stackOf(store, composefsOf('edge:four')).length, 1, 'verified as one composefs image');
    assert.ok(root.includes(composefsOf('edge:four').slice(0, 16)), 'and that image is what is mounted');
    assert.deepEqual(compareTrees(stacked, await listTree(root, { nsec: true, bytes: true })), []);
    cowshedOk(storeDir, 'umount', 'edge:four');
  });

  test('a new name for a file of the parent stacks exactly; a file whose parent inode has other names is committed flat', async () => {
    cowshedOk(storeDir, 'create', '--name', 's5', 'edge');
    const r = lastLine(cowshedOk(storeDir, 'mount', 's5'));
    sh('ln files/exactly64 files/exactly64-link', r); // overlayfs copies the file up: both names are in the change
    cowshedOk(storeDir, 'commit', 's5', 'edge:linked');
    assert.equal(stackOf(store, composefsOf('edge:linked')).length, 2);
    const committed = await listTree(r, { nsec: true, bytes: true });
    assert.deepEqual(compareTrees(committed, await mountedTree('edge:linked'), { ignoreRoot: true }), []);
    cowshedOk(storeDir, 'rm', 's5');
    // A changed file whose parent inode has other names (their link count would be wrong in a stack).
    cowshedOk(storeDir, 'create', '--name', 's6', 'edge');
    const r6 = lastLine(cowshedOk(storeDir, 'mount', 's6'));
    sh('echo more >> files/small.txt', r6);
    cowshedOk(storeDir, 'commit', 's6', 'edge:relinked');
    assert.equal(stackOf(store, composefsOf('edge:relinked')).length, 1);
    assert.deepEqual(compareTrees(await listTree(r6, { nsec: true, bytes: true }), await mountedTree('edge:relinked'), { ignoreRoot: true }), []);
    cowshedOk(storeDir, 'rm', 's6');
  });
});
