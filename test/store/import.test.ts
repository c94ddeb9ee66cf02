// Import, end to end through the CLI, judged against umoci: the real Debian
// image and the edge-case image must mount as exactly the tree umoci unpacks.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { cowshed, cowshedOk, tempDir, removeTree, debianFixture, lastLine } from '../helpers/cli.ts';
import { listTree, compareTrees, type ListTreeOptions } from '../helpers/tree-listing.ts';
import { buildEdgeImage, buildHostileTars, type HostileTarName } from '../fixtures/edge-image.ts';
import { Store } from '../../src/store/store.ts';
import { digestOfStream } from '../../src/oci/digest.ts';

function countObjects(store: string): number {
  let n = 0;
  for (const d of readdirSync(join(store, 'objects'))) n += readdirSync(join(store, 'objects', d)).length;
  return n;
}

async function assertSameTree(mounted: string, reference: string, opts: ListTreeOptions = {}): Promise<void> {
  const diffs = compareTrees(await listTree(mounted, { nsec: true, ...opts }), await listTree(reference, { nsec: true, ...opts }));
  assert.deepEqual(diffs, [], `mounted image differs from umoci unpack:\n${diffs.join('\n')}`);
}

function umociUnpack(image: string, into: string): string {
  execFileSync('umoci', ['unpack', '--image', image, into], { stdio: 'ignore' });
  return join(into, 'rootfs');
}

describe('the Debian image', () => {
  let work: string;
  let store: string;
  let fx: { layout: string; rootfsTar: string };

  before(() => {
    fx = debianFixture();
    work = tempDir();
    store = join(work, 'store');
  });
  after(() => removeTree(work));

  test('imports, and mounts as exactly the tree umoci unpacks', async () => {
    const id = lastLine(cowshedOk(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1'));
    assert.match(id, /^sha256:[0-9a-f]{64}$/);
    const mnt = lastLine(cowshedOk(store, 'mount', 'debian:v1'));
    try {
      await assertSameTree(mnt, umociUnpack(`${fx.layout}:v1`, join(work, 'umoci-v1')));
    } finally {
      cowshedOk(store, 'umount', 'debian:v1');
    }
    assert.equal(existsSync(join(mnt, 'etc')), false, 'umount leaves nothing mounted');
  });

  test('importing the same image again writes no object', () => {
    const before = countObjects(store);
    cowshedOk(store, 'import', `oci:${fx.layout}:v1`, 'debian:again');
    assert.equal(countObjects(store), before);
    const images = JSON.parse(cowshedOk(store, 'images', '--json')) as Array<{ names: string[] }>;
    assert.equal(images.length, 1, 'one image with two names');
    assert.deepEqual(images[0]!.names.sort(), ['debian:again', 'debian:v1']);
  });

  test('after rmi, import again reuses everything', () => {
    cowshedOk(store, 'rmi', 'debian:again');
    const out = cowshedOk(store, 'rmi', 'debian:v1');
    assert.match(out, /Deleted: [0-9a-f]{64}/);
    assert.equal(JSON.parse(cowshedOk(store, 'images', '--json')).length, 0);
    const before = countObjects(store);
    const r = cowshed(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /already built, nothing read/);
    assert.equal(countObjects(store), before);
  });

  test('a second version stores only its new files, and df shows the sharing', () => {
    const before = countObjects(store);
    cowshedOk(store, 'import', `oci:${fx.layout}:v2`, 'debian:v2');
    const added = countObjects(store) - before;
    assert.ok(added > 0 && added < before / 5, `v2 added ${added} objects to ${before}`);
    const df = JSON.parse(cowshedOk(store, 'df', '--json')) as { logicalSize: number; storedSize: number; dedupRatio: number; images: Array<{ uniqueSize: number; logicalSize: number }> };
    assert.equal(df.images.length, 2);
    assert.ok(df.dedupRatio > 1.4, `dedup ratio ${df.dedupRatio}`);
    assert.ok(df.storedSize < df.logicalSize / 1.4);
    const v1 = df.images[0]!;
    assert.ok(v1.uniqueSize < v1.logicalSize / 10, 'v1 shares nearly everything with v2');
  });

  test('docker-archive: (docker save format) imports as the same tree', () => {
    // skopeo cannot write zstd layers to a docker archive, so the gzip-only
    // Debian image stands in for the edge image here.
    const archive = join(work, 'debian-v2-docker.tar');
    execFileSync('skopeo', ['copy', '-q', `oci:${fx.layout}:v2`, `docker-archive:${archive}:debian:v2`]);
    cowshedOk(store, 'import', `docker-archive:${archive}`, 'debian:docker');
    const inspect = (n: string) => JSON.parse(cowshedOk(store, 'inspect', n)) as { composefs: string; id: string };
    assert.equal(inspect('debian:docker').composefs, inspect('debian:v2').composefs);
    cowshedOk(store, 'rmi', 'debian:docker');
  });

  test('entries and object lists stored as plain JSON (stores made before they were gzipped) are still read', async () => {
    // Rewrite the records of debian:v1 and v2 as an older cowshed wrote them. v1 (a first
    // import, flat) has a build record; v2 is stacked on it and has none.
    const s = await Store.open(store);
    try {
      const v1 = s.resolveImage('debian:v1').id;
      const v2 = s.resolveImage('debian:v2').id;
      const plain = (digest: string): string => {
        const gz = s.blobs.get(digest);
        assert.deepEqual([...gz.subarray(0, 2)], [0x1f, 0x8b], 'records are stored gzipped');
        return s.blobs.put(gunzipSync(gz));
      };
      for (const l of s.db.all<{ entries_digest: string }>('SELECT DISTINCT entries_digest FROM layers WHERE image_id IN (?, ?)', v1, v2)) {
        s.db.run('UPDATE layers SET entries_digest = ? WHERE entries_digest = ?', plain(l.entries_digest), l.entries_digest);
      }
      const build = s.db.get<{ objects_blob: string }>('SELECT objects_blob FROM builds WHERE manifest_digest = ?', v1)!;
      s.db.run('UPDATE builds SET objects_blob = ? WHERE manifest_digest = ?', plain(build.objects_blob), v1);
    } finally {
      s.close();
    }
    // Another manifest of the same layers takes their stored entries; the same manifest again, its build.
    const archive = join(work, 'debian-v2-docker.tar');
    cowshedOk(store, 'import', `docker-archive:${archive}`, 'debian:docker');
    const inspect = (n: string) => JSON.parse(cowshedOk(store, 'inspect', n)) as { composefs: string };
    assert.equal(inspect('debian:docker').composefs, inspect('debian:v2').composefs);
    cowshedOk(store, 'rmi', 'debian:docker');
    cowshedOk(store, 'rmi', 'debian:v1');
    const r = cowshed(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /already built, nothing read/);
  });

  test('every layer rebuilds byte for byte from the store (its diff ID)', async () => {
    const s = await Store.open(store);
    try {
      const info = s.inspectImage('debian:v2');
      assert.equal(info.layers.length, 2);
      for (let i = 0; i < info.layers.length; i++) {
        const { digest, size } = await digestOfStream(s.layerTar('debian:v2', i));
        assert.equal(digest, info.layers[i]!.diffId);
        assert.equal(size, info.layers[i]!.tarSize);
      }
    } finally {
      s.close();
    }
  });

  test('a flipped byte in a big layer (read on a worker thread) is refused, nothing stored', () => {
    const copy = join(work, 'debian-corrupt');
    mkdirSync(join(copy, 'blobs', 'sha256'), { recursive: true });
    for (const f of ['oci-layout', 'index.json']) execFileSync('cp', [join(fx.layout, f), join(copy, f)]);
    for (const f of readdirSync(join(fx.layout, 'blobs', 'sha256'))) {
      execFileSync('cp', ['--reflink=auto', join(fx.layout, 'blobs', 'sha256', f), join(copy, 'blobs', 'sha256', f)]);
    }
    const blobs = join(copy, 'blobs', 'sha256');
    const biggest = readdirSync(blobs).map((f) => join(blobs, f)).sort((a, b) => sizeOf(b) - sizeOf(a))[0]!;
    execFileSync('sh', ['-c', `printf 'X' | dd of="${biggest}" bs=1 seek=50000000 conv=notrunc status=none`]);
    const fresh = join(work, 'store-corrupt');
    const r = cowshed(fresh, 'import', `oci:${copy}:v1`, 'debian:bad');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^cowshed: .*(digest mismatch|corrupt gzip)/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.equal(countObjects(fresh), 0);
    assert.deepEqual(readdirSync(join(fresh, 'tmp')), []);
  });

  test('tar: a rootfs tarball imports as the same files', async () => {
    cowshedOk(store, 'import', `tar:${fx.rootfsTar}`, 'debian:tarball');
    const a = lastLine(cowshedOk(store, 'mount', 'debian:tarball'));
    const b = lastLine(cowshedOk(store, 'mount', 'debian:v1'));
    try {
      const diffs = compareTrees(await listTree(a), await listTree(b), { ignoreRoot: true });
      assert.deepEqual(diffs, []);
    } finally {
      cowshedOk(store, 'umount', 'debian:tarball');
      cowshedOk(store, 'umount', 'debian:v1');
    }
  });

  test('fsck is clean; gc after rmi frees what only the removed image needed', () => {
    const f = cowshed(store, 'fsck');
    assert.equal(f.status, 0, f.stdout + f.stderr);
    assert.match(f.stdout, /0 problems/);
    cowshedOk(store, 'rmi', 'debian:v2');
    const before = countObjects(store);
    const gc = cowshedOk(store, 'gc');
    assert.match(gc, /removed \d+ objects/);
    const after = countObjects(store);
    assert.ok(after < before, 'gc removed the objects only v2 had');
    assert.equal(cowshed(store, 'fsck').status, 0);
    // v1 still mounts and reads after gc.
    const mnt = lastLine(cowshedOk(store, 'mount', 'debian:v1'));
    try {
      assert.match(execFileSync(join(mnt, 'bin', 'ls'), ['--version'], { encoding: 'utf8' }).split('\n')[0]!, /coreutils/);
    } finally {
      cowshedOk(store, 'umount', 'debian:v1');
    }
  });
});

describe('the edge-case image', () => {
  let work: string;
  let store: string;
  let layout: string;

  before(async () => {
    work = tempDir();
    store = join(work, 'store');
    layout = join(work, 'edge-oci');
    await buildEdgeImage(layout);
  });
  after(() => removeTree(work));

  test('imports from oci: and oci-archive: as the tree umoci unpacks', async () => {
    execFileSync('skopeo', ['copy', '-q', `oci:${layout}:edge`, `oci-archive:${join(work, 'edge.tar')}:edge`]);
    cowshedOk(store, 'import', `oci:${layout}:edge`, 'edge:oci');
    cowshedOk(store, 'import', `oci-archive:${join(work, 'edge.tar')}:edge`, 'edge:archive');
    const inspect = (n: string) => JSON.parse(cowshedOk(store, 'inspect', n)) as { composefs: string; layers: unknown[] };
    const digests = ['edge:oci', 'edge:archive'].map((n) => inspect(n).composefs);
    assert.equal(new Set(digests).size, 1, `one tree, one composefs image: ${digests.join(' ')}`);
    assert.equal(inspect('edge:oci').layers.length, 3);

    // Every layer, files hidden by later layers included, rebuilds exactly.
    const s = await Store.open(store);
    try {
      const info = s.inspectImage('edge:oci');
      for (let i = 0; i < info.layers.length; i++) {
        assert.equal((await digestOfStream(s.layerTar('edge:oci', i))).digest, info.layers[i]!.diffId, `layer ${i + 1}`);
      }
    } finally {
      s.close();
    }

    const mnt = lastLine(cowshedOk(store, 'mount', 'edge:oci'));
    try {
      // umoci 0.4 cannot read zstd layers: skopeo recompresses them as gzip first.
      const gz = join(work, 'edge-gzip');
      execFileSync('skopeo', ['copy', '-q', '--dest-compress', '--dest-compress-format', 'gzip', `oci:${layout}:edge`, `oci:${gz}:edge`]);
      // umoci drops xattrs whose value is empty; the layer has one and we keep it.
      const empty = execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'user.empty', join(mnt, 'xattrs', 'user-binary')]);
      assert.equal(empty.length, 0);
      await assertSameTree(mnt, umociUnpack(`${gz}:edge`, join(work, 'umoci-edge')), {
        ignoreXattrs: (name, path) => name === 'user.empty' && path === '/xattrs/user-binary',
      });
    } finally {
      cowshedOk(store, 'umount', 'edge:oci');
    }
  });

  test('hostile and broken archives are refused with one line, and the store is unchanged', async () => {
    const tars = await buildHostileTars(join(work, 'hostile'));
    const objectsBefore = countObjects(store);
    const imagesBefore = cowshedOk(store, 'images', '--json');
    const refused: HostileTarName[] = ['dotdot', 'symlink-escape', 'hardlink-missing', 'hardlink-outside', 'truncated'];
    for (const name of refused) {
      const r = cowshed(store, 'import', `tar:${tars[name]}`, `hostile:${name}`);
      assert.notEqual(r.status, 0, `${name} was imported`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${name}: one line, got:\n${r.stderr}`);
      assert.match(lines[0]!, /^cowshed: /);
      assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+/, 'no stack trace');
    }
    assert.equal(countObjects(store), objectsBefore);
    assert.equal(cowshedOk(store, 'images', '--json'), imagesBefore);
    assert.deepEqual(readdirSync(join(store, 'tmp')), []);
    assert.equal(cowshed(store, 'fsck').status, 0);
    assert.ok(!existsSync('/escape') && !existsSync('/abs/path') && !existsSync(join(work, 'outside')));
    // A device node is legitimate image content.
    cowshedOk(store, 'import', `tar:${tars.device}`, 'hostile:device');
    // An absolute path is read relative to the image's root (as tar, podman
    // and umoci do): it lands inside the image, never on the host.
    cowshedOk(store, 'import', `tar:${tars.absolute}`, 'hostile:absolute');
    const mnt = lastLine(cowshedOk(store, 'mount', 'hostile:absolute'));
    try {
      assert.equal(readFileSync(join(mnt, 'abs', 'path'), 'utf8'), 'absolute\n');
    } finally {
      cowshedOk(store, 'umount', 'hostile:absolute');
    }
    assert.ok(!existsSync('/abs'));
    // A repeated name is not hostile: the later entry wins, as GNU tar, umoci and podman extract it
    // (file, then an empty directory, then a symlink, then a file again).
    cowshedOk(store, 'import', `tar:${tars['duplicate-types']}`, 'hostile:dup');
    const dup = lastLine(cowshedOk(store, 'mount', 'hostile:dup'));
    try {
      assert.equal(readFileSync(join(dup, 'dup'), 'utf8'), 'a file again\n');
    } finally {
      cowshedOk(store, 'umount', 'hostile:dup');
    }
  });

  test('a corrupted layer blob is refused by digest and nothing is stored', () => {
    const copy = join(work, 'corrupt-oci');
    execFileSync('cp', ['-a', layout, copy]);
    const blobs = join(copy, 'blobs', 'sha256');
    const biggest = readdirSync(blobs).map((f) => join(blobs, f)).sort((a, b) => sizeOf(b) - sizeOf(a))[0]!;
    execFileSync('sh', ['-c', `printf 'X' | dd of="${biggest}" bs=1 seek=1000 conv=notrunc status=none`]);
    const fresh = join(work, 'store-corrupt');
    const r = cowshed(fresh, 'import', `oci:${copy}:edge`, 'edge:bad');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /digest mismatch|corrupt|truncated/);
    assert.equal(countObjects(fresh), 0);
    assert.equal(JSON.parse(cowshedOk(fresh, 'images', '--json')).length, 0);
  });
});

function sizeOf(p: string): number {
  return Number(execFileSync('stat', ['-c', '%s', p], { encoding: 'utf8' }));
}

describe('running out of space', () => {
  let work: string;
  let fx: { layout: string };
  before(() => {
    fx = debianFixture();
    work = tempDir();
  });
  after(() => removeTree(work));

  function smallFs(name: string, size: string): string {
    const dir = join(work, name);
    mkdirSync(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
    return dir;
  }

  test('an import that cannot fit is refused up front', () => {
    const store = join(smallFs('tiny', '32m'), 'store');
    const r = cowshed(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^cowshed: not enough space: need [\d.]+ MB, have [\d.]+ MB\n$/);
  });

  test('running out in the middle leaves the store as it was', async () => {
    const store = join(smallFs('small', '150m'), 'store');
    // An earlier small image that must survive.
    const src = join(work, 'small-src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    execFileSync('sh', ['-c', `head -c 100000 /dev/urandom > "${src}/etc/blob" && echo hello > "${src}/etc/hello"`]);
    execFileSync('tar', ['-C', src, '-cf', join(work, 'small.tar'), '.']);
    cowshedOk(store, 'import', `tar:${join(work, 'small.tar')}`, 'small:1');
    const objectsBefore = countObjects(store);
    // The layer (95 MB) fits the up-front estimate; its 200 MB of files do not.
    const r = cowshed(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /^cowshed: not enough space/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.equal(countObjects(store), objectsBefore);
    assert.deepEqual(readdirSync(join(store, 'tmp')), [], 'the space it took is given back');
    const images = JSON.parse(cowshedOk(store, 'images', '--json')) as Array<{ names: string[] }>;
    assert.deepEqual(images.map((i) => i.names), [['small:1']]);
    assert.equal(cowshed(store, 'fsck').status, 0);
    const mnt = lastLine(cowshedOk(store, 'mount', 'small:1'));
    try {
      assert.deepEqual(compareTrees(await listTree(mnt), await listTree(src), { ignoreRoot: true }), []);
    } finally {
      cowshedOk(store, 'umount', 'small:1');
    }
  });
});
