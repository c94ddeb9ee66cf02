// Regressions (found by reading for the concurrency campaign, reproduced with the CLI):
// `mount --verify IMG` resolved the image, spent a second re-hashing it, then mounted it
// even when `rmi IMG` had removed it meanwhile; a following `gc` took every object from
// under the mount (files vanished) and the mount could no longer be unmounted by name.
// `create` had the same window. Here the other process's rmi is simulated exactly in
// that window: resolveImage removes the image right after resolving it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../../src/store/store.ts';
import { mountImage } from '../../src/drivers/composefs.ts';
import { createContainer } from '../../src/containers/containers.ts';
import { gc } from '../../src/store/gc.ts';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';

async function storeWithImage(work: string): Promise<Store> {
  const src = join(work, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'data'), pseudoRandomBytes(10_000, 3));
  const store = await Store.open(join(work, 'store'));
  await store.importImage(`dir:${src}`, 'race:1');
  return store;
}

/** Makes the next resolveImage behave as if another process ran rmi right after it. */
function rmiRightAfterResolve(store: Store): void {
  const resolve = store.resolveImage.bind(store);
  store.resolveImage = ((ref: string) => {
    const info = resolve(ref);
    store.resolveImage = resolve;
    store.removeImage(ref);
    return info;
  }) as Store['resolveImage'];
}

const mountsUnder = (dir: string): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(dir + '/'));

test('mount of an image removed while it was being mounted is refused, and gc leaves nothing mounted', async () => {
  const work = tempDir();
  try {
    const store = await storeWithImage(work);
    rmiRightAfterResolve(store);
    await assert.rejects(mountImage(store, 'race:1', { verify: true }), (e: Error & { code?: string }) => e.code === 'ENOENT');
    await gc(store);
    assert.deepEqual(mountsUnder(work), []);
    store.close();
  } finally {
    removeTree(work);
  }
});

test('create from an image removed while the container was being created is refused and leaves no container', async () => {
  const work = tempDir();
  try {
    const store = await storeWithImage(work);
    rmiRightAfterResolve(store);
    await assert.rejects(createContainer(store, 'race:1', { name: 'racer' }), (e: Error & { code?: string }) => e.code === 'ENOENT');
    assert.equal(store.db.get('SELECT 1 FROM containers'), undefined);
    assert.deepEqual(mountsUnder(work), []);
    store.close();
  } finally {
    removeTree(work);
  }
});
