// The edge-case fixture image: readable by openImageSource (each layer in its
// own compression), and unpacked by umoci into the tree the importer's
// output will be compared with. Also the hostile tars exist and do what
// their names say (GNU tar is the judge).

import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD } from '../../src/oci/media-types.ts';
import { openImageSource } from '../../src/oci/source.ts';
import { buildEdgeImage, buildHostileTars, EDGE, EDGE_TAG, gzipLayoutCopy, umociUnpack } from '../fixtures/edge-image.ts';
import { listTree, type EntryInfo } from '../helpers/tree-listing.ts';
import { collect, run, streamDigest, tempDir } from './tools.ts';

let work: string;
let layout: string;

before(async () => {
  work = await tempDir('edge');
  layout = join(work, 'edge');
  await buildEdgeImage(layout);
});
after(async () => { await rm(work, { recursive: true, force: true }); });

void test('the edge image opens; layers are gzip, zstd and plain, and verify', async () => {
  const src = await openImageSource(`oci:${layout}:${EDGE_TAG}`);
  assert.deepEqual(src.layers.map((l) => l.mediaType), [OCI_LAYER_TAR_GZIP, OCI_LAYER_TAR_ZSTD, OCI_LAYER_TAR]);
  assert.deepEqual(src.config.parsed.config?.Cmd, ['/bin/sh']);
  for (const l of src.layers) assert.equal((await streamDigest(l.openTar())).digest, l.diffId);
  // GNU tar lists what openTar yields; the tricky members are there.
  const listings: string[] = [];
  for (const l of src.layers) {
    const f = join(work, `layer${l.index}.tar`);
    await writeFile(f, await collect(l.openTar()));
    listings.push(await run('tar', ['-tvf', f]));
  }
  assert.match(listings[0], /\.\/dev\/char-null/);
  assert.match(listings[0], /\.\/files\/small-hardlink link to \.\/files\/small\.txt/);
  assert.ok(listings[0].includes(EDGE.longPath));
  assert.ok(listings[0].includes(EDGE.nonAscii));
  assert.match(listings[1], /\.\/del\/\.wh\.file-gone/);
  assert.match(listings[1], /\.\/opaque\/\.wh\.\.wh\.\.opq/);
  assert.match(listings[2], /\.\/l3\/hardlink-to-layer1 link to \.\/files\/shared-target/);
});

void test('the edge image copied by skopeo to oci-archive and docker-archive reads with the same diff IDs', async () => {
  const ociArchive = join(work, 'edge-oci.tar');
  await run('skopeo', ['copy', '-q', `oci:${layout}:${EDGE_TAG}`, `oci-archive:${ociArchive}:${EDGE_TAG}`]);
  // Docker images cannot carry zstd: go through a gzip copy.
  const gz = join(work, 'edge-gz');
  await gzipLayoutCopy(layout, EDGE_TAG, gz);
  const dockerArchive = join(work, 'edge-docker.tar');
  await run('skopeo', ['copy', '-q', `oci:${gz}:${EDGE_TAG}`, `docker-archive:${dockerArchive}:edge:latest`]);
  const ours = await openImageSource(`oci:${layout}:${EDGE_TAG}`);
  for (const ref of [`oci-archive:${ociArchive}:${EDGE_TAG}`, `docker-archive:${dockerArchive}:edge`]) {
    const theirs = await openImageSource(ref);
    assert.deepEqual(theirs.layers.map((l) => l.diffId), ours.layers.map((l) => l.diffId), ref);
    for (const l of theirs.layers) assert.equal((await streamDigest(l.openTar())).digest, l.diffId, ref);
  }
});

void test('umoci unpacks the edge image: the reference tree for the importer', async () => {
  const bundle = join(work, 'bundle');
  await umociUnpack(layout, EDGE_TAG, bundle);
  const tree = await listTree(join(bundle, 'rootfs'), { nsec: true });
  const at = (p: string): EntryInfo => {
    const e = tree.get('/' + p);
    assert.ok(e, `${p} missing from umoci's unpack`);
    return e;
  };
  // Whiteouts and opaque directories applied; no whiteout files left.
  for (const gone of ['del/file-gone', 'del/dir-gone', 'opaque/old-1', 'opaque/old-2', 'opaque/new-2']) assert.ok(!tree.has('/' + gone), gone);
  assert.ok(![...tree.keys()].some((p) => p.includes('.wh.')));
  assert.equal(at('del/kept').type, 'file');
  assert.deepEqual([...tree.keys()].filter((p) => p.startsWith('/opaque/')), ['/opaque/new-file']);
  // Replacements across layers.
  assert.equal(at('replace/file-becomes-dir').type, 'dir');
  assert.equal(at('replace/file-becomes-dir/child').type, 'file');
  assert.equal(at('replace/dir-becomes-file').type, 'file');
  assert.equal(at('replace/dir-becomes-file').mode, 0o600);
  // Hardlinks: within layer 1, and layer 3's link to a layer-1 file.
  assert.equal(at('files/small-hardlink').linkGroup, at('files/small.txt').linkGroup);
  assert.ok(at('files/multi-1').linkGroup !== undefined);
  assert.equal(at('files/sub/multi-2').linkGroup, at('files/multi-1').linkGroup);
  assert.equal(at('files/multi-3').linkGroup, at('files/multi-1').linkGroup);
  assert.equal(at('l3/hardlink-to-layer1').linkGroup, at('files/shared-target').linkGroup);
  // Sizes, modes, owners.
  assert.equal(at('files/empty').size, 0);
  assert.equal(at('files/big.bin').size, 5 << 20);
  assert.equal(at('files/medium.bin').size, 70_000); // layer 2's version
  assert.equal(at('modes/setuid').mode, 0o4755);
  assert.equal(at('modes/setgid').mode, 0o2755);
  assert.equal(at('modes/all-bits').mode, 0o7777);
  assert.equal(at('modes/no-bits').mode, 0);
  assert.equal(at('modes/sticky-dir').mode, 0o1777);
  assert.deepEqual([at('owners/u1000').uid, at('owners/u1000').gid], [1000, 1000]);
  assert.deepEqual([at('owners/nobody').uid, at('owners/nobody').gid], [65534, 65534]);
  assert.deepEqual([at('owners/big-ids').uid, at('owners/big-ids').gid], [3_000_000, 3_000_000]);
  assert.deepEqual([at('owners/dir-1000').uid, at('owners/dir-1000').gid, at('owners/dir-1000').mode], [1000, 1001, 0o750]);
  // Links and special files.
  assert.equal(at('links/relative').target, '../files/small.txt');
  assert.equal(at('links/relative').uid, 1000);
  assert.equal(at('links/absolute').target, '/files/small.txt');
  assert.equal(at('links/long-target').target, EDGE.longLinkTarget);
  assert.ok(EDGE.longLinkTarget.length > 100);
  assert.deepEqual([at('dev/char-null').type, at('dev/char-null').rdevMajor, at('dev/char-null').rdevMinor], ['chardev', 1, 3]);
  assert.deepEqual([at('dev/block-loop').type, at('dev/block-loop').rdevMajor, at('dev/block-loop').rdevMinor], ['blockdev', 7, 0]);
  assert.equal(at('dev/fifo').type, 'fifo');
  // Names.
  assert.equal(at(EDGE.longName150).type, 'file');
  assert.ok(EDGE.longPath.length > 255);
  assert.equal(at(EDGE.longPath).type, 'file');
  assert.equal(at(EDGE.nonAscii).type, 'file');
  assert.equal(at(EDGE.nonAsciiDir).type, 'file');
  // Xattrs, binary values intact.
  assert.equal(at('xattrs/cap-file').xattrs['security.capability'], EDGE.capability);
  assert.equal(at('xattrs/user-binary').xattrs['user.binary'], EDGE.userBinaryXattr);
  assert.equal(at('xattrs/user-binary').xattrs['user.text'], Buffer.from('hello').toString('hex'));
  assert.equal(at('xattrs/dir-with-xattr').xattrs['user.on-dir'], '0001');
  // Times, to the nanosecond.
  assert.deepEqual([at('times/nanos').mtimeSec, at('times/nanos').mtimeNsec], [EDGE.nanoMtime.sec, EDGE.nanoMtime.nsec]);
  assert.equal(at('times/epoch').mtimeSec, 0);
  assert.equal(at('times/future').mtimeSec, 4102444800);
  assert.equal(at('times/future').mtimeNsec, 500_000_000);
  assert.deepEqual([at('times').mtimeSec, at('times').mtimeNsec], [1643767322, 222222222]);
});

void test('hostile tars: one trick each, as GNU tar sees them', async () => {
  const tars = await buildHostileTars(join(work, 'hostile'));
  const list = async (f: string): Promise<string> => {
    try { return await run('tar', ['-tvf', f]); } catch (e) { return `FAILED ${(e as { stderr?: string }).stderr ?? ''}`; }
  };
  assert.match(await list(tars.dotdot), /\.\.\/escape/);
  assert.match(await list(tars.absolute), /\/abs\/path/);
  assert.match(await list(tars['symlink-escape']), /link -> \/tmp[\s\S]*link\/file/);
  assert.match(await list(tars['hardlink-missing']), /h link to does-not-exist/);
  assert.match(await list(tars['hardlink-outside']), /h link to \.\.\/outside|h link to outside/);
  const dup = await list(tars['duplicate-types']);
  assert.equal(dup.trim().split('\n').length, 4);
  assert.match(dup, /^d.* dup\/$/m);
  assert.match(dup, /^l.* dup -> target$/m);
  assert.match(await list(tars.truncated), /FAILED[\s\S]*Unexpected EOF/);
  assert.match(await list(tars.device), /^c.* 1,3 .*dev\/evil$/m);
});
