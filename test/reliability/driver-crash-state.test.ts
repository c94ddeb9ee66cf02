// Regression tests for what the crash campaign found under the storage
// drivers: the container row is written before the driver makes the
// container's storage, so a create killed in between left a container whose
// root was missing (btrfs: no snapshot; composefs and overlay: no
// upper/work directories) or half copied (vfs). The drivers now complete
// such a container on its next mount or diff. And gc leaves alone the
// half-made subvolume or layer of a process that is still making it. A
// container whose create was killed stays 'creating': every command but rm
// refuses it in one line, and fsck --repair removes it with its storage.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { cowshed, cowshedOk, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { buildEdgeImage, EDGE_TAG } from '../fixtures/edge-image.ts';
import { makeLoopFs, type LoopFs } from '../helpers/loop-fs.ts';
import { driverLeftovers, type DriverName } from './driver-probes.ts';

const DEAD_PID = 0x3ffffff0; // above pid_max: never a running process

interface Case { driver: DriverName; fs?: 'btrfs' | 'xfs' }
const CASES: Case[] = [{ driver: 'composefs' }, { driver: 'overlay' }, { driver: 'btrfs', fs: 'btrfs' }, { driver: 'vfs', fs: 'xfs' }];

describe('a create killed after its container row was written', () => {
  let work: string;
  let layout: string;
  const loops: LoopFs[] = [];
  before(async () => {
    work = tempDir('cowshed-driver-crash-');
    layout = join(work, 'edge');
    await buildEdgeImage(layout);
  });
  after(() => {
    for (const l of loops) l.destroy();
    removeTree(work);
  });

  for (const c of CASES) {
    test(`${c.driver}: the container is completed by its next mount, and has no changes`, () => {
      let base = join(work, c.driver);
      if (c.fs) { const l = makeLoopFs(join(work, `${c.driver}-fs`), c.fs, '1G'); loops.push(l); base = l.dir; } else mkdirSync(base);
      const store = join(base, 'store');
      cowshedOk(store, '--driver', c.driver, 'import', `oci:${layout}:${EDGE_TAG}`, 'edge');
      const want = readFileSync(join(lastLine(cowshedOk(store, 'mount', lastLine(cowshedOk(store, 'create', '--name', 'ref', 'edge')))), 'files/small.txt'));
      const id = lastLine(cowshedOk(store, 'create', '--name', 'victim', 'edge'));
      cowshedOk(store, 'umount', 'victim');
      // Take the container back to what a kill right after the row was written leaves.
      const dir = join(store, 'containers', id);
      if (c.driver === 'btrfs') execFileSync('btrfs', ['subvolume', 'delete', join(dir, 'rootfs')], { stdio: 'ignore' });
      for (const name of readdirSync(dir)) rmSync(join(dir, name), { recursive: true, force: true });
      if (c.driver === 'vfs') {
        // … or part way through the copy.
        mkdirSync(join(dir, `rootfs.partial-${DEAD_PID}`, 'files'), { recursive: true });
        writeFileSync(join(dir, `rootfs.partial-${DEAD_PID}`, 'files', 'small.txt'), 'half');
      }
      const root = lastLine(cowshedOk(store, 'mount', 'victim'));
      assert.deepEqual(readFileSync(join(root, 'files/small.txt')), want);
      assert.equal(cowshedOk(store, 'diff', 'victim').trim(), '');
      assert.ok(!readdirSync(dir).some((n) => n.includes('partial')), `nothing half made is left in ${readdirSync(dir).join(' ')}`);
      cowshedOk(store, 'rm', '-f', 'victim', 'ref');
      cowshedOk(store, 'gc');
      assert.deepEqual(driverLeftovers(store, c.driver), []);
      assert.equal(cowshed(store, 'fsck').status, 0);
    });
  }

  for (const c of CASES) {
    test(`${c.driver}: a container whose create was killed says so in one line; fsck --repair removes it and its storage`, () => {
      const store = join(work, c.fs ? `${c.driver}-fs` : c.driver, 'store');
      const id = lastLine(cowshedOk(store, 'create', '--name', 'killed', 'edge'));
      cowshedOk(store, 'umount', 'killed');
      // What a kill between the row and the end of the driver's work leaves: 'creating', its creator gone.
      const db = new DatabaseSync(join(store, 'meta.db'));
      const setCreator = (pid: number): void => { db.prepare("UPDATE containers SET state = 'creating', creator_pid = ? WHERE id = ?").run(pid, id); };
      try {
        // While its creator runs, it is busy, not broken, and fsck leaves it be.
        setCreator(process.pid);
        assert.match(cowshed(store, 'mount', 'killed').stderr.trim(), /^cowshed: container killed is still being created; try again when it is done$/);
        assert.equal(cowshed(store, 'fsck').status, 0);
        setCreator(DEAD_PID);
      } finally {
        db.close();
      }
      if (c.driver === 'vfs') mkdirSync(join(store, 'containers', id, `rootfs.partial-${DEAD_PID}`, 'files'), { recursive: true });
      assert.match(cowshedOk(store, 'ps', '-a'), /Incomplete \(rm -f it\)\s+killed/);
      for (const cmd of [['mount', 'killed'], ['diff', 'killed'], ['commit', 'killed', 'never:1']]) {
        const r = cowshed(store, ...cmd);
        assert.equal(r.status, 1, cmd.join(' '));
        assert.equal(r.stderr.trim(), 'cowshed: container killed was not completely created (its create was interrupted); remove it with cowshed rm -f killed', cmd.join(' '));
      }
      const f = cowshed(store, 'fsck');
      assert.equal(f.status, 1);
      assert.match(f.stdout, /container killed was not completely created/);
      cowshedOk(store, 'fsck', '--repair');
      assert.equal(cowshed(store, 'fsck').status, 0);
      assert.ok(!existsSync(join(store, 'containers', id)));
      assert.doesNotMatch(cowshedOk(store, 'ps', '-a'), /killed/);
      cowshedOk(store, 'gc');
      assert.deepEqual(driverLeftovers(store, c.driver), []);
      // The name is free again.
      cowshedOk(store, 'create', '--name', 'killed', 'edge');
      cowshedOk(store, 'rm', '-f', 'killed');
    });
  }

  test('overlay: a container whose layers were never extracted says so, and rm removes it', () => {
    const store = join(work, 'overlay', 'store');
    const id = lastLine(cowshedOk(store, 'create', '--name', 'nolayers', 'edge'));
    cowshedOk(store, 'umount', 'nolayers');
    const layers = join(store, 'overlay');
    const layer = readdirSync(layers).find((n) => /^[0-9a-f]{64}$/.test(n))!;
    execFileSync('mv', [join(layers, layer), join(work, 'moved-layer')]);
    try {
      const r = cowshed(store, 'mount', 'nolayers');
      assert.notEqual(r.status, 0);
      assert.match(r.stderr.trim(), /^cowshed: container [0-9a-f]{12} was not completely created \(layer sha256:[0-9a-f]{12} was never extracted\); remove it with cowshed rm -f [0-9a-f]{12} and create it again$/);
      assert.equal(r.stderr.trim().split('\n').length, 1);
    } finally {
      execFileSync('mv', [join(work, 'moved-layer'), join(layers, layer)]);
    }
    cowshedOk(store, 'rm', '-f', 'nolayers');
    assert.ok(!existsSync(join(store, 'containers', id)));
  });

  test('gc removes a half-made layer or subvolume of a dead process, not one still being made', () => {
    const live = `.tmp-${process.pid}-0000aaaa`;
    const dead = `.tmp-${DEAD_PID}-0000bbbb`;
    const overlayStore = join(work, 'overlay', 'store');
    for (const n of [live, dead]) mkdirSync(join(overlayStore, 'overlay', n, 'diff'), { recursive: true });
    const btrfsStore = join(work, 'btrfs-fs', 'store');
    for (const n of [live, dead]) execFileSync('btrfs', ['subvolume', 'create', join(btrfsStore, 'btrfs-images', n)], { stdio: 'ignore' });
    cowshedOk(overlayStore, 'gc');
    cowshedOk(btrfsStore, 'gc');
    assert.deepEqual(readdirSync(join(overlayStore, 'overlay')).filter((n) => n.startsWith('.tmp-')), [live]);
    assert.deepEqual(readdirSync(join(btrfsStore, 'btrfs-images')).filter((n) => n.startsWith('.tmp-')), [live]);
    assert.deepEqual(driverLeftovers(overlayStore, 'overlay'), [`overlay/${live} is a half-extracted layer`]);
    rmSync(join(overlayStore, 'overlay', live), { recursive: true });
    execFileSync('btrfs', ['subvolume', 'delete', join(btrfsStore, 'btrfs-images', live)], { stdio: 'ignore' });
    assert.deepEqual(driverLeftovers(btrfsStore, 'btrfs'), []);
  });
});
