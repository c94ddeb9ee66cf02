// One conformance suite for every storage driver, each on a filesystem that
// suits it (loop-mounted btrfs and xfs made by the test): a new container is
// exactly the image's tree, diff lists the same kinds of change, commit then
// export then umoci unpack gives exactly the container's tree, and many
// containers come and go leaving a clean store.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';
import { buildEdgeImage } from '../fixtures/edge-image.ts';
import { loopFs } from '../helpers/loop-fs.ts';

interface Case { name: string; driver: string; fs?: 'btrfs' | 'xfs'; exactTimes: boolean }
const CASES: Case[] = [
  { name: 'composefs', driver: 'composefs', exactTimes: true },
  { name: 'overlay', driver: 'overlay', exactTimes: false },
  { name: 'btrfs', driver: 'btrfs', fs: 'btrfs', exactTimes: false },
  { name: 'vfs (reflink, xfs)', driver: 'vfs', fs: 'xfs', exactTimes: false },
  { name: 'vfs (copy, ext4)', driver: 'vfs', exactTimes: false },
];

const sh = (cmd: string, cwd: string): void => { execFileSync('sh', ['-ec', cmd], { cwd, stdio: 'inherit' }); };

describe('storage driver conformance', () => {
  let work: string;
  let layout: string;
  let gzLayout: string;
  let unpacked: string;

  before(async () => {
    work = tempDir();
    layout = join(work, 'edge-oci');
    await buildEdgeImage(layout);
    // umoci 0.4 reads gzip layers only.
    gzLayout = join(work, 'edge-gz');
    execFileSync('skopeo', ['copy', '-q', '--dest-compress', '--dest-compress-format', 'gzip', `oci:${layout}:edge`, `oci:${gzLayout}:edge`]);
    execFileSync('umoci', ['unpack', '--image', `${gzLayout}:edge`, join(work, 'edge-unpacked')], { stdio: 'ignore' });
    unpacked = join(work, 'edge-unpacked', 'rootfs');
  });
  after(() => removeTree(work));

  for (const c of CASES) {
    describe(c.name, () => {
      let store: string;
      // Drivers that write the tree out keep times to the microsecond only.
      const opts = { nsec: c.exactTimes };
      // umoci drops xattrs whose value is empty; the image has one and we keep it.
      const ignoreXattrs = (name: string) => name === 'user.empty';
      // Layer directories cannot share an inode across layers: layer 3's
      // hardlink to a layer-1 file is a copy in the overlay driver, as with overlay2.
      const known = (diffs: string[]): string[] => c.driver !== 'overlay' ? diffs
        : diffs.filter((d) => !/^\/(l3\/hardlink-to-layer1|files\/shared-target): hardlinked with/.test(d));

      before(() => {
        const base = join(work, c.name.replace(/\W+/g, '-'));
        store = join(c.fs ? loopFs(base, c.fs) : (mkdirSync(base), base), 'store');
        cowshedOk(store, '--driver', c.driver, 'import', `oci:${layout}:edge`, 'edge');
      });

      test('refuses nothing it can do, and a new container is exactly the image', async () => {
        cowshedOk(store, 'create', '--name', 'c', 'edge');
        const root = lastLine(cowshedOk(store, 'mount', 'c'));
        assert.deepEqual(known(compareTrees(await listTree(root, { ...opts, ignoreXattrs }), await listTree(unpacked, { ...opts, ignoreXattrs }), { ignoreRoot: true })), []);
        assert.equal(cowshedOk(store, 'diff', 'c').trim(), '', 'an untouched container has no changes');
      });

      test('diff lists each kind of change', () => {
        const root = lastLine(cowshedOk(store, 'mount', 'c'));
        sh([
          'echo added > added.txt', 'echo more >> files/small.txt', 'rm files/empty',
          'rm -rf links && mkdir links && echo n > links/new', 'chmod 0700 modes/setuid', 'chown 1234:1234 owners/u1000',
          'setfattr -n user.added -v 1 xattrs/user-binary',
        ].join('; '), root);
        const out = cowshedOk(store, 'diff', 'c').trim().split('\n');
        for (const line of ['A /added.txt', 'C /files', 'C /files/small.txt', 'D /files/empty', 'C /links', 'A /links/new', 'C /modes/setuid',
          'C /owners/u1000', 'C /xattrs/user-binary', 'D /links/relative']) {
          assert.ok(out.includes(line), `${c.name}: missing "${line}" in:\n${out.join('\n')}`);
        }
        assert.ok(!out.includes('C /times'), 'untouched directories are not listed');
      });

      test('commit, export and umoci unpack give exactly the container\'s tree', async () => {
        const root = lastLine(cowshedOk(store, 'mount', 'c'));
        cowshedOk(store, 'commit', 'c', 'edge:changed');
        const out = join(store, '..', 'exported');
        cowshedOk(store, 'export', 'edge:changed', `oci:${out}:changed`);
        execFileSync('umoci', ['unpack', '--image', `${out}:changed`, join(store, '..', 'unpacked')], { stdio: 'ignore' });
        assert.deepEqual(known(compareTrees(await listTree(root, { ...opts, ignoreXattrs }), await listTree(join(store, '..', 'unpacked', 'rootfs'), { ...opts, ignoreXattrs }), { ignoreRoot: true })), []);
      });

      test('ten containers come and go; the store checks clean', () => {
        const ids: string[] = [];
        for (let i = 0; i < 10; i++) ids.push(lastLine(cowshedOk(store, 'create', 'edge:changed')));
        for (const id of ids) assert.match(readFileSync(join(lastLine(cowshedOk(store, 'mount', id)), 'added.txt'), 'utf8'), /^added/);
        cowshedOk(store, 'rm', 'c', ...ids);
        assert.deepEqual(readdirSync(join(store, 'containers')), []);
        const f = cowshed(store, 'fsck');
        assert.equal(f.status, 0, f.stdout);
        cowshedOk(store, 'rmi', 'edge:changed');
        cowshedOk(store, 'gc');
        assert.equal(cowshed(store, 'fsck').status, 0);
      });
    });
  }

  test('the btrfs driver refuses a store that is not on btrfs, and records nothing', () => {
    const store = join(work, 'not-btrfs');
    const r = cowshed(store, '--driver', 'btrfs', 'images');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^cowshed: the btrfs driver needs the store on a btrfs filesystem/);
    // The directory was made, but no driver was chosen for it.
    assert.equal(cowshed(store, '--driver', 'vfs', 'images').status, 0);
  });

  test('a store keeps the driver it was created with', () => {
    const store = join(work, 'composefs', 'store');
    const r = cowshed(store, '--driver', 'vfs', 'images');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /was created with the composefs driver/);
  });
});
