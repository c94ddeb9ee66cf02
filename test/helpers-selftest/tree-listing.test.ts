// The tree-comparison helper is what other tests trust to say "equal": check
// that it sees each kind of difference, and nothing where there is none.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, link, mkdir, mkdtemp, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareTrees, listTree } from '../helpers/tree-listing.ts';

const run = (cmd: string, ...args: string[]): void => { execFileSync(cmd, args, { stdio: 'pipe' }); };

void describe('listTree / compareTrees', () => {
  let tmp = '';
  let a = '';
  let n = 0;
  /** A fresh copy of tree a, made with cp -a (keeps modes, owners, times, xattrs, links). */
  const copy = async (): Promise<string> => {
    const b = join(tmp, `b${n++}`);
    run('cp', '-a', a, b);
    return b;
  };

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'cowshed-treelist-'));
    a = join(tmp, 'a');
    await mkdir(join(a, 'd/e/f'), { recursive: true });
    await writeFile(join(a, 'file'), 'hello\n');
    await writeFile(join(a, 'd/e/f/deep'), Buffer.alloc(3 << 20, 7)); // above the streaming threshold
    await writeFile(join(a, 'suid'), '#!/bin/sh\n');
    await chmod(join(a, 'suid'), 0o4755);
    await writeFile(join(a, 'name with\nnewline and \\ backslash'), 'x');
    await link(join(a, 'file'), join(a, 'd/hardlink'));
    await writeFile(join(a, 'solo'), 'solo\n');
    await symlink('../file', join(a, 'd/sym'));
    run('mkfifo', join(a, 'fifo'));
    run('mknod', join(a, 'null'), 'c', '1', '3');
    run('setfattr', '-n', 'user.greeting', '-v', 'hi', join(a, 'file'));
    run('setfattr', '-n', 'user.empty', join(a, 'd'));
    run('setfattr', '-n', 'user.odd', '-v', '0x00ff', join(a, 'name with\nnewline and \\ backslash'));
    run('setfattr', '-h', '-n', 'trusted.on-link', '-v', '1', join(a, 'd/sym'));
  });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  void it('describes every kind of entry', async () => {
    const l = await listTree(a, { nsec: true });
    assert.equal(l.get('/file')?.type, 'file');
    assert.equal(l.get('/file')?.size, 6);
    assert.equal(l.get('/file')?.sha256, '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03');
    assert.equal(l.get('/file')?.xattrs['user.greeting'], '6869');
    assert.equal(l.get('/file')?.linkGroup, '/d/hardlink');
    assert.equal(l.get('/d/hardlink')?.linkGroup, '/d/hardlink');
    assert.equal(l.get('/solo')?.linkGroup, undefined);
    assert.equal(l.get('/suid')?.mode, 0o4755);
    assert.equal(l.get('/d')?.type, 'dir');
    assert.deepEqual(l.get('/d')?.xattrs, { 'user.empty': '' });
    assert.equal(l.get('/d/sym')?.target, '../file');
    assert.deepEqual(l.get('/d/sym')?.xattrs, { 'trusted.on-link': '31' });
    assert.equal(l.get('/fifo')?.type, 'fifo');
    assert.deepEqual([l.get('/null')?.type, l.get('/null')?.rdevMajor, l.get('/null')?.rdevMinor], ['chardev', 1, 3]);
    assert.deepEqual(l.get('/name with\nnewline and \\ backslash')?.xattrs, { 'user.odd': '00ff' });
    assert.equal(typeof l.get('/file')?.mtimeNsec, 'number');
    assert.equal(l.get('/')?.type, 'dir');
    assert.ok(!l.has(''));
  });

  void it('finds two copies equal', async () => {
    const b = await copy();
    assert.deepEqual(compareTrees(await listTree(a, { nsec: true }), await listTree(b, { nsec: true })), []);
  });

  void it('detects a changed mode', async () => {
    const b = await copy();
    await chmod(join(b, 'suid'), 0o755);
    assert.deepEqual(compareTrees(await listTree(a), await listTree(b)), ['/suid: mode 4755 != 0755']);
  });

  void it('detects a changed, added and removed xattr', async () => {
    const b = await copy();
    run('setfattr', '-n', 'user.greeting', '-v', 'ho', join(b, 'file'));
    run('setfattr', '-n', 'user.new', '-v', '1', join(b, 'solo'));
    run('setfattr', '-x', 'user.empty', join(b, 'd'));
    const diffs = compareTrees(await listTree(a), await listTree(b));
    assert.deepEqual(diffs.sort(), [
      '/d/hardlink: xattr user.greeting 0x6869 != 0x686f',
      '/d: xattr user.empty only in first tree',
      '/file: xattr user.greeting 0x6869 != 0x686f',
      '/solo: xattr user.new only in second tree',
    ]);
  });

  void it('ignores xattrs the caller says to ignore', async () => {
    const b = await copy();
    run('setfattr', '-n', 'user.greeting', '-v', 'ho', join(b, 'file'));
    const ignore = (name: string): boolean => name === 'user.greeting';
    assert.deepEqual(compareTrees(await listTree(a, { ignoreXattrs: ignore }), await listTree(b, { ignoreXattrs: ignore })), []);
  });

  void it('detects a broken and a new hardlink, whatever the inode numbers', async () => {
    const b = await copy();
    await unlink(join(b, 'd/hardlink'));
    run('cp', '-a', join(b, 'file'), join(b, 'd/hardlink')); // same content, own inode
    const diffs = compareTrees(await listTree(a), await listTree(b), { ignoreDirMtime: true });
    assert.deepEqual(diffs, [
      '/d/hardlink: hardlinked with /d/hardlink != with (nothing)',
      '/file: hardlinked with /d/hardlink != with (nothing)',
    ]);
    const c = await copy();
    await unlink(join(c, 'solo'));
    await link(join(c, 'suid'), join(c, 'solo'));
    const diffs2 = compareTrees(await listTree(a), await listTree(c), { ignoreMtime: true });
    assert.ok(diffs2.includes('/solo: hardlinked with (nothing) != with /solo'), diffs2.join('\n'));
    assert.ok(diffs2.includes('/suid: hardlinked with (nothing) != with /solo'), diffs2.join('\n'));
  });

  void it('detects changed content of the same size, and a changed size', async () => {
    const b = await copy();
    const st = await import('node:fs/promises').then((fs) => fs.stat(join(a, 'd/e/f/deep')));
    const big = Buffer.alloc(3 << 20, 7);
    big[big.length - 1] = 8;
    await writeFile(join(b, 'd/e/f/deep'), big);
    await writeFile(join(b, 'solo'), 'solo\n\n');
    await utimes(join(b, 'd/e/f/deep'), st.atime, st.mtime);
    const diffs = compareTrees(await listTree(a), await listTree(b), { ignoreMtime: true });
    assert.equal(diffs.length, 2, diffs.join('\n'));
    assert.match(diffs[0]!, /^\/d\/e\/f\/deep: content differs \(sha256 [0-9a-f]{12} != [0-9a-f]{12}\)$/);
    assert.equal(diffs[1], '/solo: size 5 != 6');
  });

  void it('detects type, target, device, owner, added and removed entries', async () => {
    const b = await copy();
    await rm(join(b, 'd/sym'));
    await symlink('file', join(b, 'd/sym'));
    await rm(join(b, 'null'));
    run('mknod', join(b, 'null'), 'c', '1', '5');
    await rm(join(b, 'fifo'));
    await writeFile(join(b, 'fifo'), '');
    run('chown', '1000:1001', join(b, 'solo'));
    await rm(join(b, 'd/e/f'), { recursive: true });
    await writeFile(join(b, 'added'), '');
    const diffs = compareTrees(await listTree(a), await listTree(b), { ignoreDirMtime: true, ignoreMtime: true });
    assert.deepEqual(diffs, [
      '/added: only in second tree (file)',
      '/d/e/f: only in first tree (dir)',
      '/d/e/f/deep: only in first tree (file)',
      '/d/sym: symlink target "../file" != "file"',
      '/d/sym: xattr trusted.on-link only in first tree',
      '/fifo: type fifo != file',
      '/null: device 1,3 != 1,5',
      '/solo: owner 0:0 != 1000:1001',
    ]);
  });

  void it('compares mtimes (seconds, and nanoseconds when listed), ignoring root and directories on request', async () => {
    const b = await copy();
    await utimes(join(b, 'solo'), 1000, 1000);
    await utimes(join(b, 'd'), 2000, 2000);
    await utimes(b, 3000, 3000);
    const diffs = compareTrees(await listTree(a), await listTree(b));
    assert.equal(diffs.length, 3, diffs.join('\n'));
    assert.deepEqual(diffs.map((d) => d.split(':')[0]), ['/', '/d', '/solo']);
    assert.deepEqual(compareTrees(await listTree(a), await listTree(b), { ignoreRoot: true, ignoreDirMtime: true }).length, 1);

    const c = await copy();
    const st = await import('node:fs/promises').then((fs) => fs.stat(join(a, 'solo'), { bigint: true }));
    const sec = Number(st.mtimeNs / 1_000_000_000n);
    const nsec = Number(st.mtimeNs % 1_000_000_000n);
    await utimes(join(c, 'solo'), st.atime, sec + ((nsec + 500_000_000) % 1_000_000_000) / 1e9);
    const [la, lc] = [await listTree(a, { nsec: true }), await listTree(c, { nsec: true })];
    assert.deepEqual(compareTrees(la, lc).map((d) => d.replace(/\d+/g, 'N')), ['/solo: mtime nsec N != N']);
    assert.deepEqual(compareTrees(await listTree(a), await listTree(c)), []); // seconds only
  });

  void it('caps the list of differences', async () => {
    const b = await copy();
    for (let i = 0; i < 60; i++) await writeFile(join(b, `extra${String(i).padStart(2, '0')}`), '');
    const diffs = compareTrees(await listTree(a), await listTree(b), { ignoreRoot: true });
    assert.equal(diffs.length, 51);
    assert.equal(diffs[50], '... and 10 more differences');
  });
});
