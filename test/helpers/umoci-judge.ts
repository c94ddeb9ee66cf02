// The judge of a pull or update: the image as another store exports it,
// unpacked by umoci, against the image as this store mounts it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { lastLine } from './cli.ts';
import { compareTrees, listTree } from './tree-listing.ts';
import { cowshedAsyncOk } from '../registry/servers.ts';

/**
 * `source` exports `exported` as an OCI layout under `work` (gzip, tag
 * `tag`), umoci unpacks it, and `image` mounted from `store` must be the
 * same tree, times to the nanosecond; the mount is undone either way.
 */
export async function assertMountsAsUmociUnpacks(o: { source: string; exported: string; store: string; image: string; work: string; tag: string }): Promise<void> {
  const layout = join(o.work, 'layout');
  await cowshedAsyncOk(o.source, ['export', o.exported, `oci:${layout}:${o.tag}`]);
  const unpacked = join(o.work, `umoci-${o.tag}`);
  execFileSync('umoci', ['unpack', '--image', `${layout}:${o.tag}`, unpacked], { stdio: 'ignore' });
  const mnt = lastLine(await cowshedAsyncOk(o.store, ['mount', o.image]));
  try {
    const diffs = compareTrees(await listTree(mnt, { nsec: true }), await listTree(join(unpacked, 'rootfs'), { nsec: true }));
    assert.deepEqual(diffs, [], diffs.join('\n'));
  } finally {
    await cowshedAsyncOk(o.store, ['umount', o.image]);
  }
}
