// An import (or pull) killed midway continues when run again: every layer
// read completely before the kill is taken over from tmp/, not read again.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, debianFixture, lastLine, REPO } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';

describe('resuming a killed import', () => {
  let work: string;
  let layout: string;
  before(() => {
    work = tempDir();
    layout = debianFixture().layout;
  });
  after(() => removeTree(work));

  test('a layer read before the kill is not read again, and the image is exact', async () => {
    const store = join(work, 'store');
    cowshedOk(store, 'images'); // make the store
    // v2 has a big layer (v1's) and a small one; the small one finishes first.
    const child = spawn(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, 'import', `oci:${layout}:v2`, 'debian:v2'], { stdio: 'ignore' });
    const tmp = join(store, 'tmp');
    const marked = (): boolean => readdirSync(tmp).some((d) => existsSync(join(tmp, d, 'layer.json')));
    const deadline = Date.now() + 60_000;
    while (!marked() && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 10));
    assert.ok(marked(), 'a finished layer was marked before the import ended');
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    assert.equal(JSON.parse(cowshedOk(store, 'images', '--json')).length, 0, 'the killed import recorded nothing');

    const full = cowshed(join(work, 'reference'), 'import', `oci:${layout}:v2`, 'debian:v2');
    const again = cowshed(store, 'import', `oci:${layout}:v2`, 'debian:v2');
    assert.equal(again.status, 0, again.stderr);
    const written = (s: string): number => Number(/(\d+) new objects/.exec(s)?.[1]);
    assert.ok(written(again.stderr) < written(full.stderr), `resumed run wrote ${written(again.stderr)} objects, a full one ${written(full.stderr)}`);
    assert.deepEqual(readdirSync(tmp), [], 'nothing left in tmp/');
    assert.equal(cowshed(store, 'fsck').status, 0);

    const mnt = lastLine(cowshedOk(store, 'mount', 'debian:v2'));
    try {
      execFileSync('umoci', ['unpack', '--image', `${layout}:v2`, join(work, 'umoci')], { stdio: 'ignore' });
      assert.deepEqual(compareTrees(await listTree(mnt), await listTree(join(work, 'umoci', 'rootfs'))), []);
    } finally {
      cowshedOk(store, 'umount', 'debian:v2');
    }
  });
});
