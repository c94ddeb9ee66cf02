// Regression (found by the concurrency campaign: import v2, rmi of an older tag of v2
// and gc at once left Debian v2 without its layer-2 tar-split record). gc read what is
// live in several steps; rmi (which takes no lease) could remove an image between them,
// so gc kept the image's build record but deleted its manifest, config and tar-split
// blobs; the next import of that image reused the build record and recorded layers whose
// tar-split no longer existed. Here the rmi is attempted exactly between gc's reads, from
// a second connection, as another process would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Store } from '../../src/store/store.ts';
import { gc } from '../../src/store/gc.ts';
import { fsck } from '../../src/store/fsck.ts';
import { writeOciLayout } from '../../src/oci/layout-writer.ts';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';

test('gc takes one snapshot of what is live: an rmi cannot slip between its reads', async () => {
  const work = tempDir();
  try {
    const src = join(work, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'data'), pseudoRandomBytes(20_000, 5));
    execFileSync('tar', ['-C', src, '-cf', join(work, 'layer.tar'), '.']);
    const layout = join(work, 'layout');
    await writeOciLayout(layout, { config: { architecture: 'amd64', os: 'linux' }, layers: [{ path: join(work, 'layer.tar') }], tag: 't' });

    const store = await Store.open(join(work, 'store'));
    await store.importImage(`oci:${layout}:t`, 'img:old');
    const other = await Store.open(join(work, 'store')); // "another process"
    other.db.run('PRAGMA busy_timeout = 50');

    // During gc: after its first read, the other process removes the image.
    let raced: 'removed' | 'blocked' | undefined;
    const all = store.db.all.bind(store.db);
    let calls = 0;
    store.db.all = ((q: string, ...a: never[]) => {
      const r = all(q, ...a);
      if (++calls === 1) {
        try { other.removeImage('img:old'); raced = 'removed'; } catch { raced = 'blocked'; }
      }
      return r;
    }) as typeof store.db.all;
    await gc(store);
    store.db.all = all;
    assert.equal(raced, 'blocked', 'the rmi ran in the middle of gc');

    other.removeImage('img:old');
    await store.importImage(`oci:${layout}:t`, 'img:new'); // reuses the build record
    const report = await fsck(store);
    assert.deepEqual(report.problems.map((p) => p.message), []);
    other.close();
    store.close();
  } finally {
    removeTree(work);
  }
});
