// Containers on the composefs driver, through the CLI: create/mount/rm, the
// exact diff for every kind of change, commit → export → umoci unpack giving
// exactly the container's tree, podman running an exported image, and many
// containers sharing one image mount.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine, debianFixture, REPO } from '../helpers/cli.ts';
import { listTree, compareTrees } from '../helpers/tree-listing.ts';
import { buildEdgeImage } from '../fixtures/edge-image.ts';

const sh = (cmd: string, cwd: string): void => { execFileSync('sh', ['-ec', cmd], { cwd, stdio: 'inherit' }); };
const mountLines = (): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
const byPath = (a: string, b: string): number => Buffer.compare(Buffer.from(a.slice(2)), Buffer.from(b.slice(2)));

describe('containers', () => {
  let work: string;
  let store: string;

  before(async () => {
    work = tempDir();
    store = join(work, 'store');
    const layout = join(work, 'edge-oci');
    await buildEdgeImage(layout);
    cowshedOk(store, 'import', `oci:${layout}:edge`, 'edge');
  });
  after(() => removeTree(work));

  test('create makes a container that mount mounts writable; ps lists it; rm unmounts and removes it', () => {
    const id = lastLine(cowshedOk(store, 'create', '--name', 'first', 'edge'));
    assert.match(id, /^[0-9a-f]{64}$/);
    const root = lastLine(cowshedOk(store, 'mount', 'first'));
    assert.ok(existsSync(join(root, 'files')));
    writeFileSync(join(root, 'written'), 'by the container');
    assert.match(cowshedOk(store, 'ps', '-a'), /first/);
    assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), id.slice(0, 12));
    const info = JSON.parse(cowshedOk(store, 'inspect', 'first')) as { id: string; mounted: boolean };
    assert.equal(info.id, id);
    assert.equal(info.mounted, true);
    const dup = cowshed(store, 'create', '--name', 'first', 'edge');
    assert.notEqual(dup.status, 0);
    assert.match(dup.stderr, /^cowshed: the container name "first" is already in use\n$/);
    // The image cannot go while a container uses it.
    const rmi = cowshed(store, 'rmi', 'edge');
    assert.notEqual(rmi.status, 0);
    assert.match(rmi.stderr, /used by container first/);
    cowshedOk(store, 'rm', 'first');
    assert.ok(!mountLines().some((l) => l.includes(root)));
    assert.ok(!existsSync(join(store, 'containers', id)));
    assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), '');
  });

  test('diff lists exactly what changed: add, change, delete, recreate, replace, metadata, hardlinks, rename', () => {
    cowshedOk(store, 'create', '--name', 'd', 'edge');
    const r = lastLine(cowshedOk(store, 'mount', 'd'));
    const oldLinks = execFileSync('ls', ['-A', join(r, 'links')], { encoding: 'utf8' }).trim().split('\n');
    sh([
      'echo added > added.txt', // A
      'echo more >> files/small.txt', // C (content)
      'rm files/empty', // D
      'rm files/medium.bin && echo again > files/medium.bin', // deleted then recreated: C
      'rm -rf links && mkdir links && echo n > links/new', // directory replaced (opaque)
      'chmod 0700 modes/setuid', // metadata only (metacopy)
      'chown 1234:1234 owners/u1000',
      'setfattr -n user.added -v 1 xattrs/user-binary',
      'ln files/shared-target files/new-hardlink', // a new name for an existing file
      'mv names names-renamed', // directory rename (redirect)
    ].join('; '), r);
    const out = cowshedOk(store, 'diff', 'd').trim().split('\n');
    const expect = (line: string) => assert.ok(out.includes(line), `missing "${line}" in:\n${out.join('\n')}`);
    for (const line of [
      'A /added.txt', 'C /files', 'C /files/small.txt', 'D /files/empty', 'C /files/medium.bin', 'C /links', 'A /links/new',
      'C /modes/setuid', 'C /owners/u1000', 'C /xattrs/user-binary', 'A /files/new-hardlink', 'D /names', 'A /names-renamed',
    ]) expect(line);
    for (const old of oldLinks) if (old !== 'new') expect(`D /links/${old}`);
    for (const l of out) assert.match(l, /^[ACD] \//);
    assert.ok(!out.includes('C /times'), 'untouched directories are not listed');
    assert.deepEqual([...out].sort(byPath), out, 'sorted by path');
    const json = JSON.parse(cowshedOk(store, 'diff', '--json', 'd')) as Array<{ kind: string; path: string }>;
    assert.deepEqual(json.map((c) => `${c.kind} ${c.path}`), out);
  });

  test('commit, export and umoci unpack give exactly the container\'s tree', async () => {
    const r = lastLine(cowshedOk(store, 'mount', 'd'));
    const committed = lastLine(cowshedOk(store, 'commit', 'd', 'edge:changed'));
    assert.match(committed, /^sha256:[0-9a-f]{64}$/);
    const info = JSON.parse(cowshedOk(store, 'inspect', 'edge:changed')) as { layers: Array<{ diffId: string }>; config: { rootfs: { diff_ids: string[] } } };
    const parent = JSON.parse(cowshedOk(store, 'inspect', 'edge')) as { layers: Array<{ diffId: string }> };
    assert.equal(info.layers.length, parent.layers.length + 1, 'one new layer');
    assert.deepEqual(info.layers.slice(0, -1).map((l) => l.diffId), parent.layers.map((l) => l.diffId), 'parent layers kept');
    assert.deepEqual(info.layers.map((l) => l.diffId), info.config.rootfs.diff_ids);

    // The two images differ exactly where the container changed things.
    const imageDiff = cowshedOk(store, 'diff', 'edge', 'edge:changed').trim().split('\n');
    const ctrDiff = cowshedOk(store, 'diff', 'd').trim().split('\n');
    assert.deepEqual(imageDiff.filter((l) => !l.startsWith('C ')), ctrDiff.filter((l) => !l.startsWith('C ')));

    const layout = join(work, 'exported');
    cowshedOk(store, 'export', 'edge:changed', `oci:${layout}:changed`);
    execFileSync('umoci', ['unpack', '--image', `${layout}:changed`, join(work, 'unpacked')], { stdio: 'ignore' });
    const diffs = compareTrees(await listTree(r, { nsec: true }), await listTree(join(work, 'unpacked', 'rootfs'), { nsec: true }), { ignoreRoot: true });
    // umoci drops empty-valued xattrs (see the import tests); nothing else may differ.
    assert.deepEqual(diffs.filter((d) => !d.includes('user.empty')), []);
  });

  test('exports to oci-archive: and docker-archive: that skopeo reads with the same diff IDs', () => {
    const info = JSON.parse(cowshedOk(store, 'inspect', 'edge:changed')) as { config: { rootfs: { diff_ids: string[] } } };
    const ociArchive = join(work, 'changed-oci.tar');
    const dockerArchive = join(work, 'changed-docker.tar');
    cowshedOk(store, 'export', 'edge:changed', `oci-archive:${ociArchive}:changed`);
    cowshedOk(store, 'export', 'edge:changed', `docker-archive:${dockerArchive}:edge:changed`);
    for (const src of [`oci-archive:${ociArchive}:changed`, `docker-archive:${dockerArchive}`]) {
      const cfg = JSON.parse(execFileSync('skopeo', ['inspect', '--config', src], { encoding: 'utf8' })) as { rootfs: { diff_ids: string[] } };
      assert.deepEqual(cfg.rootfs.diff_ids, info.config.rootfs.diff_ids, src);
    }
  });

  // 20 show the sharing as well as 100 would (bench/containers.ts times 100); each is a whole CLI start-up.
  test('20 containers from one image share one image mount', () => {
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(lastLine(cowshedOk(store, 'create', 'edge')));
    const containerMounts = (ls: string[]) => ls.filter((l) => l.split(' ')[4]?.startsWith(join(store, 'containers'))).length;
    // As podman create: a container is mounted by its first mount (or commit), not by create.
    assert.equal(containerMounts(mountLines()), 1, 'create mounts nothing; only d is mounted');
    for (const id of ids) cowshedOk(store, 'mount', id);
    const lines = mountLines();
    assert.equal(lines.filter((l) => l.includes(' erofs ') && l.includes(store)).length, 1, 'one EROFS mount for the image');
    assert.equal(containerMounts(lines), 21, '20 containers and d');
    cowshedOk(store, 'rm', ...ids);
    assert.equal(containerMounts(mountLines()), 1, 'only d is left');
  });

  test('a container survives its mount being lost (crash, reboot)', () => {
    const root = lastLine(cowshedOk(store, 'mount', 'd'));
    execFileSync('umount', [root]);
    assert.ok(!existsSync(join(root, 'added.txt')));
    const again = lastLine(cowshedOk(store, 'mount', 'd'));
    assert.equal(readFileSync(join(again, 'added.txt'), 'utf8'), 'added\n', 'its changes are still there');
    cowshedOk(store, 'rm', 'd');
    assert.ok(!mountLines().some((l) => l.includes(join(store, 'mounts'))), 'the image mount goes with its last container');
  });
});

describe('an exported image runs under podman', () => {
  let work: string;
  before(() => { work = tempDir(); });
  after(() => {
    try { execFileSync('podman', ['--root', join(work, 'podman'), '--runroot', join(work, 'podman-run'), 'system', 'reset', '-f'], { stdio: 'ignore' }); } catch { /* best effort */ }
    removeTree(work);
  });

  test('podman runs a committed, exported Debian image', () => {
    const fx = debianFixture();
    const store = join(work, 'store');
    cowshedOk(store, 'import', `oci:${fx.layout}:v1`, 'debian:v1');
    cowshedOk(store, 'create', '--name', 'c', 'debian:v1');
    const root = lastLine(cowshedOk(store, 'mount', 'c'));
    mkdirSync(join(root, 'srv', 'app'), { recursive: true });
    writeFileSync(join(root, 'srv', 'app', 'hello.sh'), '#!/bin/sh\necho "hello from $(cat /etc/debian_version)"\n', { mode: 0o755 });
    cowshedOk(store, 'commit', 'c', 'debian:app');
    cowshedOk(store, 'export', 'debian:app', `docker-archive:${join(work, 'app.tar')}:debian:app`);
    const podman = ['--root', join(work, 'podman'), '--runroot', join(work, 'podman-run'), '--storage-driver', 'overlay'];
    execFileSync('podman', [...podman, 'load', '-q', '-i', join(work, 'app.tar')], { stdio: 'ignore' });
    // This VM forbids raising rlimits, so podman gets limits below the host's.
    const out = execFileSync('podman', [...podman, 'run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000',
      'localhost/debian:app', '/srv/app/hello.sh'], { encoding: 'utf8' });
    assert.match(out, /^hello from 12\.\d+\n$/);
    cowshedOk(store, 'rm', 'c');
  });
});

describe('run', () => {
  let work: string;
  let store: string;
  before(() => {
    work = tempDir();
    store = join(work, 'store');
    cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'debian:v1');
  });
  after(() => removeTree(work));

  test('passes stdout, stderr and the exit code through, with the image config applied', () => {
    const r = cowshed(store, 'run', '--rm', 'debian:v1', '--', 'sh', '-c', 'echo "out $PWD $(id -u)"; echo err >&2; exit 5');
    assert.equal(r.status, 5);
    assert.equal(r.stdout, 'out / 0\n');
    assert.equal(r.stderr, 'err\n');
    assert.equal(cowshedOk(store, 'ps', '-a', '-q').trim(), '', '--rm removed it');
  });

  test('a kept container shows how it exited, keeps its changes, and diff sees them', () => {
    cowshedOk(store, 'run', '--name', 'kept', 'debian:v1', '--', 'sh', '-c', 'echo data > /root/made-in-run');
    assert.match(cowshedOk(store, 'ps', '-a'), /Exited \(0\)\s+kept/);
    assert.match(cowshedOk(store, 'diff', 'kept'), /^A \/root\/made-in-run$/m);
    cowshedOk(store, 'rm', 'kept');
  });

  test('a missing command fails with one line and exit 127', () => {
    const r = cowshed(store, 'run', '--rm', 'debian:v1', '--', 'no-such-command');
    assert.equal(r.status, 127);
    assert.match(r.stderr.trim().split('\n').pop()!, /^cowshed: runc: .*no-such-command/);
  });
});

describe('a run whose cowshed process was killed', () => {
  let dir: string;
  before(() => { dir = tempDir(); });
  after(() => removeTree(dir));

  test('leaves the container running under runc; rm -f stops it; one no runtime runs any more shows as exited', async () => {
    const store = join(dir, 'store');
    cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'deb');
    const { spawn, spawnSync } = await import('node:child_process');
    const runners: number[] = [];
    /** Starts `sleep 300` in a container, then SIGKILLs cowshed's whole process group: runc's container lives on in its own session. */
    const orphan = async (name: string): Promise<string> => {
      const runner = spawn(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, 'run', '--name', name, 'deb', '--', 'sleep', '300'], { detached: true, stdio: 'ignore' });
      runners.push(runner.pid!);
      for (let i = 0; i < 100; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const c = (JSON.parse(cowshedOk(store, 'ps', '--json')) as Array<{ id: string; name: string }>).find((x) => x.name === name);
        if (c) {
          const runtimeId = `cowshed-${c.id.slice(0, 32)}`;
          if (spawnSync('runc', ['state', runtimeId], { stdio: 'ignore' }).status !== 0) continue;
          process.kill(-runner.pid!, 'SIGKILL');
          await new Promise((r) => setTimeout(r, 300));
          return runtimeId;
        }
      }
      throw new Error(`container ${name} did not start`);
    };
    const runcHas = (id: string): boolean => spawnSync('runc', ['state', id], { stdio: 'ignore' }).status === 0;
    try {
      const first = await orphan('orphan');
      assert.ok(runcHas(first), 'runc no longer has the container');
      assert.match(cowshedOk(store, 'ps'), /\bUp\s+orphan/);
      assert.equal(cowshed(store, 'rm', 'orphan').stderr, 'cowshed: container orphan is running; stop it or use rm -f\n');
      cowshedOk(store, 'rm', '-f', 'orphan');
      assert.ok(!runcHas(first), 'rm -f left the runtime container running');

      // Gone from the runtime (as after a reboot): shown as exited, and rm needs no -f.
      const second = await orphan('stale');
      spawnSync('runc', ['delete', '--force', second], { stdio: 'ignore' });
      assert.match(cowshedOk(store, 'ps', '-a'), /\bExited\s+stale/);
      cowshedOk(store, 'rm', 'stale');
      assert.equal(cowshed(store, 'fsck').status, 0);
    } finally {
      for (const pid of runners) try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ }
    }
  });
});
