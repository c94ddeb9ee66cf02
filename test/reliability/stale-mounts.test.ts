// Regressions (found by the crash campaign: SIGKILL during `create`): a process killed
// between its mount and its database commit leaves a mount the database does not know
// (the row says mounted = 0, or no lower_mounts row). `rm -f` then ran rmSync into the
// live overlay and died with a raw EBUSY stack trace; mounting again stacked a second
// mount on the stale one. Here the database is set back to what the killed process
// left, and the CLI must cope.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { cowshed, cowshedOk, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { isOneLineError } from './lib.ts';

const mountsUnder = (dir: string): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(dir + '/'));

function sql(store: string, statement: string): void {
  const db = new DatabaseSync(join(store, 'meta.db'));
  try { db.exec(statement); } finally { db.close(); }
}

function storeWithImage(work: string): string {
  const src = join(work, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'data'), 'x'.repeat(50));
  const store = join(work, 'store');
  cowshedOk(store, 'import', `dir:${src}`, 'img:1');
  return store;
}

test('rm -f of a container whose overlay is mounted but recorded as unmounted removes it cleanly', () => {
  const work = tempDir();
  try {
    const store = storeWithImage(work);
    cowshedOk(store, 'create', '--name', 'c', 'img:1');
    sql(store, 'UPDATE containers SET mounted = 0'); // the state a kill before the commit leaves
    const r = cowshed(store, 'rm', '-f', 'c');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(mountsUnder(join(store, 'containers')), []);
    cowshedOk(store, 'fsck');
  } finally {
    removeTree(work);
  }
});

test('mounting again over a stale container or image mount does not stack mounts', () => {
  const work = tempDir();
  try {
    const store = storeWithImage(work);
    const id = lastLine(cowshedOk(store, 'create', '--name', 'c', 'img:1'));
    sql(store, 'UPDATE containers SET mounted = 0');
    const root = lastLine(cowshedOk(store, 'mount', 'c'));
    assert.equal(readFileSync(join(root, 'data'), 'utf8'), 'x'.repeat(50));
    const merged = join(store, 'containers', id, 'merged');
    assert.equal(mountsUnder(join(store, 'containers')).filter((m) => m === merged).length, 1);
    const r = cowshed(store, 'rm', '-f', 'c');
    assert.ok(r.status === 0 || isOneLineError(r.stderr), r.stderr);
    // An image's EROFS mount the database lost (kill after mount, before commit).
    cowshedOk(store, 'mount', 'img:1');
    sql(store, 'DELETE FROM image_mounts; DELETE FROM lower_mounts');
    cowshedOk(store, 'mount', 'img:1');
    cowshedOk(store, 'umount', 'img:1');
    assert.deepEqual(mountsUnder(store), []);
  } finally {
    removeTree(work);
  }
});

// Regression (crash campaign: SIGKILL during `create` between its mkdir and its commit):
// the container directory stayed forever, named by nothing and cleaned by nobody.
test('fsck names a container directory of no container; fsck --repair removes it', () => {
  const work = tempDir();
  try {
    const store = storeWithImage(work);
    const orphan = join(store, 'containers', 'ab'.repeat(32));
    mkdirSync(join(orphan, 'upper'), { recursive: true });
    const f = cowshed(store, 'fsck');
    assert.equal(f.status, 1);
    assert.match(f.stdout + f.stderr, new RegExp(orphan));
    cowshed(store, 'fsck', '--repair');
    cowshedOk(store, 'fsck');
    assert.throws(() => readFileSync(join(orphan, 'upper')), /ENOENT/);
  } finally {
    removeTree(work);
  }
});
