// Updates stacked at import (src/store/import.ts, composefs/stack.ts): an
// image whose layers are a stored image's plus a new one gets a composefs
// layer image of the new layer only, on the stored image's. The judge: the
// mounted image is exactly the tree `umoci unpack` makes of it (a whiteout, a
// deleted directory, an opaque directory, a file whose metadata alone changed,
// an implicit parent directory, hardlinks within the layer); the stack is in
// the database; verify flattens it to mkcomposefs's image of the same tree;
// a layer that links to a file of the stored image is built flat, exactly.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk, tempDir, removeTree, lastLine, layoutManifest, REPO } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';
import { buildEdgeImage, umociUnpack } from '../fixtures/edge-image.ts';
import { writeOciLayout } from '../../src/oci/layout-writer.ts';
import { Store } from '../../src/store/store.ts';
import { stackOf } from '../../src/composefs/stack.ts';
import { stackTree } from '../../src/composefs/stack-tree.ts';
import { printDump } from '../../src/composefs/dump.ts';

const MKCOMPOSEFS = join(REPO, '..', 'shared', 'tools', 'composefs-1.0.8', 'mkcomposefs');

// The update layers, written with Python's tarfile (as the edge image's third layer).
const UPDATE_PY = `
import sys, tarfile, io
def layer(path, entries):
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            ti = tarfile.TarInfo(e['name'])
            ti.type = e.get('type', tarfile.REGTYPE); ti.mode = e.get('mode', 0o644); ti.mtime = e.get('mtime', 1750000000)
            ti.uid = e.get('uid', 0); ti.gid = e.get('gid', 0); ti.linkname = e.get('linkname', '')
            if 'xattrs' in e: ti.pax_headers = {'SCHILY.xattr.' + k: v for k, v in e['xattrs'].items()}
            data = e.get('data', b'')
            ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
            t.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
R, D, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE
layer(sys.argv[1], [
    dict(name='files/', type=D, mode=0o755),
    dict(name='files/.wh.empty'),                                  # a whiteout
    dict(name='.wh.names', mtime=1750000001),                      # a deleted directory, deep
    dict(name='links/', type=D, mode=0o750, mtime=1750000002),     # an opaque directory, refilled
    dict(name='links/.wh..wh..opq'),
    dict(name='links/only', data=b'the only file now\\n'),
    dict(name='modes/', type=D, mode=0o755),
    dict(name='modes/setuid', data=b'#!/bin/sh\\n', mode=0o700, uid=7, gid=8, mtime=1750000003,
         xattrs={'user.note': 'metadata only'}),                   # same content, new metadata
    dict(name='owners/dir-1000/implicit-parent', data=b'in a directory the layer does not name\\n'),
    dict(name='update/', type=D, mode=0o755),
    dict(name='update/a', data=b'a' * 5000),
    dict(name='update/b', type=H, linkname='update/a'),            # a hardlink within the layer
])
layer(sys.argv[2], [
    dict(name='files/', type=D, mode=0o755),
    dict(name='files/to-stored', type=H, linkname='files/medium.bin'), # a new name for a stored file: flat
])
`;

describe('an update imported on a stored image', () => {
  let work: string;
  let storeDir: string;
  let store: Store;
  let layout: string;

  before(async () => {
    work = tempDir('cowshed-stacked-import-');
    storeDir = join(work, 'store');
    const edge = join(work, 'edge-oci');
    await buildEdgeImage(edge);
    const upd = [join(work, 'update.tar'), join(work, 'relink.tar')];
    execFileSync('python3', ['-c', UPDATE_PY, ...upd]);
    // The edge image's layers as they are, plus one update layer each.
    const base = layoutManifest(edge, 'edge').layers.map((l) => ({ path: join(edge, 'blobs', 'sha256', l.digest.slice(7)) }));
    layout = join(work, 'updates-oci');
    for (const [tag, tar] of [['update', upd[0]!], ['relink', upd[1]!]] as const) {
      await writeOciLayout(layout, { config: { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] } }, layers: [...base, { path: tar }], tag });
    }
    cowshedOk(storeDir, 'import', `oci:${edge}:edge`, 'edge');
    store = await Store.open(storeDir);
  });
  after(() => {
    store?.close();
    removeTree(work);
  });

  const composefsOf = (ref: string): string => store.resolveImage(ref).composefs;

  // umoci drops xattrs whose value is empty; the edge image has one and cowshed keeps it.
  const LIST = { nsec: true, bytes: true, ignoreXattrs: (name: string, path: string) => name === 'user.empty' && path === '/xattrs/user-binary' };

  const mountedTree = async (ref: string) => {
    const root = lastLine(cowshedOk(storeDir, 'mount', ref));
    try {
      return await listTree(root, LIST);
    } finally {
      cowshedOk(storeDir, 'umount', ref);
    }
  };

  /** umoci's unpack of a tag of the updates layout (through a gzip copy: umoci 0.4 reads no zstd). */
  const umociTree = async (tag: string) => {
    const bundle = join(work, `umoci-${tag}`);
    await umociUnpack(layout, tag, bundle);
    return listTree(join(bundle, 'rootfs'), LIST);
  };
  const sameAsUmoci = (mounted: Awaited<ReturnType<typeof listTree>>, ref: Awaited<ReturnType<typeof listTree>>): string[] => compareTrees(mounted, ref);

  test('one new layer is stacked on the stored image, and mounts as exactly the tree umoci unpacks', async () => {
    const before = store.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM composefs_stack')!.n;
    cowshedOk(storeDir, 'import', `oci:${layout}:update`, 'edge:update');
    const top = composefsOf('edge:update');
    assert.deepEqual(stackOf(store, top), [top, composefsOf('edge')], 'a layer image on the stored image\'s composefs image');
    const row = store.db.get<{ parent: string; entries_digest: string }>('SELECT parent, entries_digest FROM composefs_stack WHERE composefs = ?', top)!;
    assert.equal(row.parent, composefsOf('edge'));
    assert.equal(store.db.get<{ n: number }>('SELECT COUNT(*) AS n FROM composefs_stack')!.n, before + 1);
    assert.ok(readFileSync(store.imagePath(top)).length < readFileSync(store.imagePath(composefsOf('edge'))).length / 4, 'the layer image holds the change only');
    // The image's figures are the flattened tree's.
    const flatTree = stackTree(store, top);
    let entries = 0;
    const walk = (n: typeof flatTree): void => { for (const c of n.children?.values() ?? []) { entries++; walk(c); } };
    walk(flatTree);
    assert.equal(store.resolveImage('edge:update').entries, entries + 1, 'entry count (the root included)');

    const mounted = await mountedTree('edge:update');
    for (const gone of ['/files/empty', '/names', '/links/relative']) assert.ok(!mounted.has(gone), `${gone} is gone`);
    assert.equal(mounted.get('/modes/setuid')!.mode & 0o7777, 0o700, 'metadata-only change');
    assert.deepEqual([...mounted.keys()].filter((p) => p.startsWith('/links/')), ['/links/only'], 'the opaque directory shows only its new file');
    assert.deepEqual(sameAsUmoci(mounted, await umociTree('update')), [], 'the mount is exactly umoci\'s unpack');
    cowshedOk(storeDir, 'fsck');
  });

  test('a pull of the same image again only tags it; image verify flattens it to mkcomposefs\'s image of the tree', async () => {
    cowshedOk(storeDir, 'import', `oci:${layout}:update`, 'edge:again');
    assert.equal(composefsOf('edge:again'), composefsOf('edge:update'));
    const top = composefsOf('edge:update');
    const stacked = await mountedTree('edge:update');
    const root = lastLine(cowshedOk(storeDir, 'mount', '--verify', 'edge:update'));
    try {
      const flat = composefsOf('edge:update');
      assert.notEqual(flat, top);
      assert.equal(stackOf(store, flat).length, 1, 'verified as one composefs image');
      assert.deepEqual(compareTrees(stacked, await listTree(root, LIST)), [], 'the flattened mount is the stacked one');
      if (existsSync(MKCOMPOSEFS)) {
        const dump = join(work, 'tree.dump');
        writeFileSync(dump, printDump(stackTree(store, top)), 'latin1');
        const out = join(work, 'mk.img');
        execFileSync(MKCOMPOSEFS, ['--from-file', dump, out], { stdio: ['ignore', 'ignore', 'pipe'] });
        assert.ok(readFileSync(out).equals(readFileSync(store.imagePath(flat))), 'flattened image = mkcomposefs of the same tree');
      }
    } finally {
      cowshedOk(storeDir, 'umount', 'edge:update');
    }
  });

  test('a new name for a stored image\'s file is built flat, and exact', async () => {
    cowshedOk(storeDir, 'import', `oci:${layout}:relink`, 'edge:relink');
    assert.equal(stackOf(store, composefsOf('edge:relink')).length, 1);
    const mounted = await mountedTree('edge:relink');
    assert.equal(mounted.get('/files/to-stored')!.linkGroup, '/files/medium.bin', 'one inode, two names');
    assert.deepEqual(sameAsUmoci(mounted, await umociTree('relink')), []);
  });
});
