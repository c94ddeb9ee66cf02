// The synthetic benchmark tree must be the same for the same seed (benchmarks
// across runs compare like with like), and its OCI image must hold that tree.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generateTree, packOci } from '../../scripts/gen-synthetic-tree.ts';
import { compareTrees, listTree } from '../helpers/tree-listing.ts';

const hasUmoci = (() => { try { execFileSync('umoci', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; } })();

void describe('gen-synthetic-tree', () => {
  let tmp = '';
  before(async () => { tmp = await mkdtemp(join(tmpdir(), 'cowshed-synth-')); });
  after(async () => { await rm(tmp, { recursive: true, force: true }); });

  void it('makes the same tree from the same seed, and another from another seed', async () => {
    const s1 = generateTree(join(tmp, 'a'), { entries: 1500, seed: 3 });
    generateTree(join(tmp, 'b'), { entries: 1500, seed: 3 });
    generateTree(join(tmp, 'c'), { entries: 1500, seed: 4 });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((d) => listTree(join(tmp, d), { nsec: true })));
    assert.equal(a!.size, 1500);
    assert.deepEqual(compareTrees(a!, b!), []);
    assert.notDeepEqual(compareTrees(a!, c!), []);
    assert.ok(s1.dirs > 0 && s1.files > 0 && s1.symlinks > 0 && s1.hardlinks > 0 && s1.xattrs > 0, JSON.stringify(s1));
    const entries = [...a!.values()];
    assert.ok(entries.some((e) => e.linkGroup !== undefined));
    assert.ok(entries.some((e) => Object.keys(e.xattrs).some((k) => k.startsWith('user.'))));
    assert.ok(entries.some((e) => (e.mode & 0o4000) !== 0));
    assert.ok([...a!.keys()].some((p) => p.split('/').length > 12), 'has deep directories');
  });

  void it('packs an OCI image that unpacks to the same tree', { skip: !hasUmoci && 'umoci not installed' }, async () => {
    const dir = join(tmp, 'oci-src');
    generateTree(dir, { entries: 800, seed: 5, ociFaithful: true });
    packOci(dir, `${join(tmp, 'layout')}:v1`);
    execFileSync('umoci', ['unpack', '--image', `${join(tmp, 'layout')}:v1`, join(tmp, 'bundle')], { stdio: 'ignore' });
    const diffs = compareTrees(await listTree(dir, { nsec: true }), await listTree(join(tmp, 'bundle/rootfs'), { nsec: true }));
    assert.deepEqual(diffs, []);
  });
});
