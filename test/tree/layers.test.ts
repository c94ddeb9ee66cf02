// Layer flattening: whiteouts, opaque directories, hardlinks across layers,
// replacement rules, and refusal of hostile or broken entries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LayerTreeBuilder, type EntryMeta, type EntryType } from '../../src/tree/layers.ts';
import { walk, type FsNode } from '../../src/tree/node.ts';
import { CowshedError } from '../../src/util/errors.ts';

const e = (path: string, type: EntryType = 'file', more: Partial<EntryMeta> = {}): EntryMeta => ({
  path, type, linkname: '', mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, size: 0, mtimeSec: 1, mtimeNsec: 0,
  devmajor: 0, devminor: 0, xattrs: new Map(), ...more,
});

function paths(root: FsNode): string[] {
  return [...walk(root)].map(([p]) => p);
}

function build(layers: EntryMeta[][]): FsNode {
  const b = new LayerTreeBuilder();
  layers.forEach((entries, i) => {
    b.beginLayer(`layer ${i + 1}`);
    for (const x of entries) b.apply(x, x.type === 'file' ? { inline: new Uint8Array(0) } : undefined);
  });
  return b.finish();
}

const code = (fn: () => unknown): string => {
  try { fn(); } catch (err) { assert.ok(err instanceof CowshedError, String(err)); return err.code; }
  return 'no error';
};

test('whiteouts delete lower entries; opaque directories hide lower contents only', () => {
  const root = build([
    [e('a/', 'dir'), e('a/x'), e('a/y'), e('b/', 'dir'), e('b/keep'), e('c')],
    [e('a/.wh.x'), e('b/', 'dir'), e('b/.wh..wh..opq'), e('b/new'), e('.wh.c')],
  ]);
  assert.deepEqual(paths(root), ['/', '/a', '/a/y', '/b', '/b/new']);
});

test('an opaque marker after same-layer entries keeps them', () => {
  const root = build([[e('d/', 'dir'), e('d/old')], [e('d/', 'dir'), e('d/mine'), e('d/.wh..wh..opq')]]);
  assert.deepEqual(paths(root), ['/', '/d', '/d/mine']);
});

test('a whiteout does not remove an entry of its own layer', () => {
  const root = build([[e('f')], [e('g'), e('.wh.g')]]);
  assert.deepEqual(paths(root), ['/', '/f', '/g']);
});

test('file replaced by directory and directory replaced by file', () => {
  const root = build([[e('p'), e('q/', 'dir'), e('q/inner')], [e('p/', 'dir'), e('p/child'), e('q')]]);
  assert.deepEqual(paths(root), ['/', '/p', '/p/child', '/q']);
});

test('hardlinks share one node, also across layers, and nlink counts names', () => {
  const b = new LayerTreeBuilder();
  b.beginLayer('1');
  b.apply(e('f', 'file', { size: 5 }), { inline: Buffer.from('hello') });
  b.apply(e('g', 'hardlink', { linkname: 'f' }));
  b.beginLayer('2');
  b.apply(e('h', 'hardlink', { linkname: './f' }));
  const root = b.finish();
  const f = root.children!.get('f')!;
  assert.equal(root.children!.get('g'), f);
  assert.equal(root.children!.get('h'), f);
  assert.equal(f.nlink, 3);
  assert.equal(root.nlink, 2);
});

test('absolute paths are read relative to the image root, as tar, podman and umoci do', () => {
  const root = build([[e('/', 'dir', { mode: 0o700 }), e('/etc/', 'dir'), e('/etc/hosts'), e('//usr/./bin/x')]]);
  assert.deepEqual(paths(root), ['/', '/etc', '/etc/hosts', '/usr', '/usr/bin', '/usr/bin/x']);
  assert.equal(root.mode & 0o7777, 0o700);
});

test('directory metadata is replaced when the directory appears again', () => {
  const root = build([[e('d/', 'dir', { mode: 0o700 }), e('d/x')], [e('d/', 'dir', { mode: 0o755, uid: 7 })]]);
  const d = root.children!.get('d')!;
  assert.equal(d.mode & 0o7777, 0o755);
  assert.equal(d.uid, 7);
  assert.ok(d.children!.has('x'));
});

test('hostile and broken entries are refused with typed errors', () => {
  assert.equal(code(() => build([[e('../escape')]])), 'EHOSTILE');
  assert.equal(code(() => build([[e('a/../../escape')]])), 'EHOSTILE');
  assert.equal(code(() => build([[e('/../escape')]])), 'EHOSTILE');
  assert.equal(code(() => build([[e('link', 'symlink', { linkname: '/tmp' }), e('link/file')]])), 'EHOSTILE');
  assert.equal(code(() => build([[e('h', 'hardlink', { linkname: 'missing' })]])), 'EFORMAT');
  assert.equal(code(() => build([[e('h', 'hardlink', { linkname: '../outside' })]])), 'EHOSTILE');
  assert.equal(code(() => build([[e('d/', 'dir'), e('h', 'hardlink', { linkname: 'd' })]])), 'EFORMAT');
  // A repeated name: the later entry wins (GNU tar, umoci, podman), except over a non-empty directory (GNU tar fails it).
  assert.equal(build([[e('x'), e('x', 'symlink', { linkname: 'y' })]]).children!.get('x')!.target, 'y');
  assert.equal(build([[e('d/', 'dir'), e('d', 'file')]]).children!.get('d')!.mode & 0o170000, 0o100000);
  assert.equal(build([[e('d', 'file'), e('d/', 'dir'), e('d/f')]]).children!.get('d')!.children!.size, 1);
  assert.equal(code(() => build([[e('d/', 'dir'), e('d/f'), e('d', 'file')]])), 'EFORMAT');
  assert.equal(code(() => build([[e('f'), e('f/g')]])), 'EFORMAT');
  // A repeated directory entry is harmless and allowed.
  assert.equal(code(() => build([[e('d/', 'dir'), e('d/', 'dir')]])), 'no error');
});
