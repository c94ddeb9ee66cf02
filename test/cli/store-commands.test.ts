// The command-line contract for the store commands (CLI.md): names, --json,
// exit codes, one-line errors, and what fsck, mount --verify, gc and df do
// when the store is damaged or shared.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync, truncateSync, mkdirSync, existsSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine, REPO } from '../helpers/cli.ts';
import { buildEdgeImage } from '../fixtures/edge-image.ts';

interface Inspect { id: string; names: string[]; composefs: string; layers: Array<{ diffId: string }>; config: { rootfs: { diff_ids: string[] } }; manifest: { layers: unknown[] } }

describe('store commands', () => {
  let work: string;
  let store: string;
  let layout: string;

  before(async () => {
    work = tempDir();
    store = join(work, 'store');
    layout = join(work, 'edge-oci');
    await buildEdgeImage(layout);
    cowshedOk(store, 'import', `oci:${layout}:edge`, 'edge');
  });
  after(() => removeTree(work));

  const objectFiles = (): string[] => readdirSync(join(store, 'objects')).flatMap((d) => readdirSync(join(store, 'objects', d)).map((f) => join(store, 'objects', d, f)));

  test('images, inspect and tag', () => {
    const table = cowshedOk(store, 'images');
    assert.match(table.split('\n')[0]!, /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/);
    assert.match(table, /^edge\s+latest\s+[0-9a-f]{12}\s/m);
    const info = JSON.parse(cowshedOk(store, 'inspect', 'edge')) as Inspect;
    assert.match(info.composefs, /^[0-9a-f]{64}$/);
    assert.deepEqual(info.layers.map((l) => l.diffId), info.config.rootfs.diff_ids);
    cowshedOk(store, 'tag', 'edge', 'edge:copy');
    assert.equal((JSON.parse(cowshedOk(store, 'inspect', 'edge:copy')) as Inspect).id, info.id);
    assert.equal((JSON.parse(cowshedOk(store, 'inspect', info.id.slice(7, 19))) as Inspect).id, info.id, 'by id prefix');
    cowshedOk(store, 'rmi', 'edge:copy');
    assert.deepEqual((JSON.parse(cowshedOk(store, 'inspect', 'edge')) as Inspect).names, ['edge:latest']);
  });

  test('composefs dump of a stored image lists its files', () => {
    const info = JSON.parse(cowshedOk(store, 'inspect', 'edge')) as Inspect;
    const dump = cowshedOk(store, 'composefs', 'dump', join(store, 'images', info.composefs));
    assert.match(dump, /^\/ /);
    assert.match(dump, /^\/xattrs\/user-binary /m);
  });

  test('user errors are one line with a non-zero exit and no stack trace', () => {
    const cases: Array<[string[], RegExp]> = [
      [['inspect', 'nope'], /^cowshed: no such image: nope$/],
      [['import', 'bogus:/x'], /^cowshed: unknown image source "bogus:\/x"/],
      [['import', `oci:${join(work, 'missing')}`], /^cowshed: /],
      [['import', `oci:${layout}:no-such-tag`], /^cowshed: .*no-such-tag/],
      [['tag', 'edge', 'Bad Name'], /^cowshed: invalid image name/],
      [['umount', 'edge'], /^cowshed: image edge is not mounted$/],
      [['rmi', 'nope'], /^cowshed: no such image: nope$/],
    ];
    for (const [args, re] of cases) {
      const r = cowshed(store, ...args);
      assert.notEqual(r.status, 0, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}:\n${r.stderr}`);
      assert.match(r.stderr.trim(), re);
    }
    const bad = cowshed(store, 'no-such-command');
    assert.notEqual(bad.status, 0);
  });

  test('mount is shared and reference-counted; umount of the last reference unmounts', () => {
    const a = lastLine(cowshedOk(store, 'mount', 'edge'));
    const b = lastLine(cowshedOk(store, 'mount', 'edge'));
    assert.equal(a, b);
    assert.ok(existsSync(join(a, 'files')));
    cowshedOk(store, 'umount', 'edge');
    assert.ok(existsSync(join(a, 'files')), 'still mounted for the other reference');
    cowshedOk(store, 'umount', 'edge');
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(a));
  });

  test('a mount lost behind cowshed\'s back (crash, reboot) is made again', () => {
    const a = lastLine(cowshedOk(store, 'mount', 'edge'));
    execFileSync('umount', [a]);
    execFileSync('umount', [join(a, '..', 'lower')]);
    const b = lastLine(cowshedOk(store, 'mount', 'edge'));
    assert.ok(existsSync(join(b, 'files')), 'remounted');
    cowshedOk(store, 'umount', 'edge');
  });

  test('fsck names a flipped byte, a truncated object and a changed composefs image; mount --verify refuses', () => {
    assert.equal(cowshed(store, 'fsck').status, 0);
    const objs = objectFiles().sort();
    const flipped = objs[0]!;
    const truncated = objs[1]!;
    const flippedBytes = readFileSync(flipped);
    const truncatedBytes = readFileSync(truncated);
    const info = JSON.parse(cowshedOk(store, 'inspect', 'edge')) as Inspect;
    const imageFile = join(store, 'images', info.composefs);
    const imageBytes = readFileSync(imageFile);
    try {
      const changed = Buffer.from(flippedBytes);
      changed[0] = changed[0]! ^ 0xff;
      writeFileSync(flipped, changed);
      truncateSync(truncated, Math.floor(truncatedBytes.length / 2));
      appendFileSync(imageFile, Buffer.alloc(4096));

      const r = cowshed(store, 'fsck');
      assert.equal(r.status, 1);
      assert.ok(r.stdout.includes(flipped), `names the flipped object:\n${r.stdout}`);
      assert.ok(r.stdout.includes(truncated), 'names the truncated object');
      assert.ok(r.stdout.includes(imageFile), 'names the changed image');

      const m = cowshed(store, 'mount', '--verify', 'edge');
      assert.notEqual(m.status, 0);
      assert.match(m.stderr, /^cowshed: image sha256:[0-9a-f]+: .*corrupt/);
    } finally {
      writeFileSync(flipped, flippedBytes);
      writeFileSync(truncated, truncatedBytes);
      writeFileSync(imageFile, imageBytes);
    }
    assert.equal(cowshed(store, 'fsck').status, 0);
    const ok = lastLine(cowshedOk(store, 'mount', '--verify', 'edge'));
    assert.ok(existsSync(join(ok, 'files')));
    cowshedOk(store, 'umount', 'edge');
  });

  test('fsck --repair removes leftovers of a killed import; gc keeps what images need', () => {
    const leftover = join(store, 'tmp', 'objects-999999-deadbeef');
    mkdirSync(leftover);
    writeFileSync(join(leftover, 'partial'), 'half an object');
    const r = cowshed(store, 'fsck');
    assert.equal(r.status, 1);
    assert.match(r.stdout, /leftover temporary file/);
    const fixed = cowshed(store, 'fsck', '--repair');
    assert.equal(fixed.status, 0, fixed.stdout);
    assert.ok(!existsSync(leftover));
    const before = objectFiles().length;
    cowshedOk(store, 'gc');
    assert.equal(objectFiles().length, before, 'gc removes nothing an image needs');
  });

  test('concurrent imports and gc on one store finish with a clean fsck', async () => {
    const run = (...args: string[]) => new Promise<number>((resolve) => {
      const p = spawn(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, ...args], { stdio: 'ignore' });
      p.on('exit', (code) => resolve(code ?? -1));
    });
    const codes = await Promise.all([
      run('import', `oci:${layout}:edge`, 'c:1'),
      run('import', `oci:${layout}:edge`, 'c:2'),
      run('gc'),
      run('import', `oci:${layout}:edge`, 'c:3'),
      run('gc'),
    ]);
    assert.deepEqual(codes, [0, 0, 0, 0, 0]);
    assert.equal(cowshed(store, 'fsck').status, 0);
    const names = (JSON.parse(cowshedOk(store, 'images', '--json')) as Array<{ names: string[] }>).flatMap((i) => i.names).sort();
    assert.deepEqual(names, ['c:1', 'c:2', 'c:3', 'edge:latest']);
  });

  test('df reports per image and overall', () => {
    const df = JSON.parse(cowshedOk(store, 'df', '--json')) as { logicalSize: number; storedSize: number; dedupRatio: number; images: unknown[] };
    assert.equal(df.images.length, 1);
    // Stored may exceed logical here: the edge image's lower layers hold files
    // its upper layers delete, and those stay stored for layer rebuilds.
    assert.ok(df.logicalSize > 0 && df.storedSize > 0);
    assert.ok(Math.abs(df.dedupRatio - df.logicalSize / df.storedSize) < 1e-9);
    assert.match(cowshedOk(store, 'df'), /dedup ratio \d+\.\d\d/);
  });
});
