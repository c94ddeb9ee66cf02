// Permissions (issue 6): other users can neither read nor write the store,
// its database or its containers; and a container's own processes, running
// as root under runc, cannot change anything the store holds through
// symlinks or hardlinks: not the objects its files share with other
// containers, not the database, not the host. Every driver is tried.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, debianFixture, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { loopFs } from '../helpers/loop-fs.ts';
import { changeEntries } from '../../src/containers/commit.ts';
import { CowshedError } from '../../src/util/errors.ts';
import { slowOnly } from '../helpers/slow.ts';

/** Runs `sh -c script` as user nobody (uid 65534, no groups): the exit status. */
function asNobody(script: string): { status: number; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', 'sh', '-c', script], { encoding: 'utf8' });
  return { status: r.status ?? -1, stderr: r.stderr };
}

/** The fs-verity digest of a file's contents: its object's name in the store. */
function objectPath(store: string, file: string): string {
  const hex = /sha256:([0-9a-f]{64})/.exec(execFileSync('fsverity', ['digest', file], { encoding: 'utf8' }))![1]!;
  return join(store, 'objects', hex.slice(0, 2), hex.slice(2));
}

describe('permissions', () => {
  let work: string;
  let debian: string;
  before(() => {
    work = tempDir();
    // The test's own directory is open to all, so that only the store's modes keep others out.
    chmodSync(work, 0o755);
    debian = `oci:${debianFixture().layout}:v1`;
  });
  after(() => removeTree(work));

  test('other users cannot read or write the store, its database, containers or mounts', () => {
    const store = join(work, 'perm-store');
    cowshedOk(store, 'import', debian, 'deb');
    const merged = lastLine(cowshedOk(store, 'mount', lastLine(cowshedOk(store, 'create', '--name', 'c', 'deb'))));
    writeFileSync(join(merged, 'secret'), 'container data\n');
    const obj = objectPath(store, join(merged, 'usr/lib/os-release'));
    const probes: Array<[string, string]> = [
      ['list the store', `ls ${store}`],
      ['read the database', `cat ${store}/meta.db`],
      ['read a container file through its mount', `cat ${merged}/secret`],
      ['read an object', `cat ${obj}`],
      ['write an object', `printf x >> ${obj}`],
      ['add an object', `touch ${store}/objects/00/x`],
    ];
    for (const [what, script] of probes) assert.notEqual(asNobody(script).status, 0, `nobody could ${what}`);

    // An administrator opening the store's root (chmod 755) opens neither the database nor the containers.
    chmodSync(store, 0o755);
    for (const [what, script] of [
      ['read the database', `cat ${store}/meta.db`],
      ['list containers', `ls ${store}/containers`],
      ['read a container file through its mount', `cat ${merged}/secret`],
      ['read staging files', `ls ${store}/tmp`],
    ]) assert.notEqual(asNobody(script!).status, 0, `with the root at 0755, nobody could ${what}`);
    for (const f of ['meta.db', 'meta.db-wal', 'meta.db-shm']) {
      if (existsSync(join(store, f))) assert.equal(statSync(join(store, f)).mode & 0o077, 0, `${f} is open to others`);
    }
    // The next command closes the root again.
    cowshedOk(store, 'images');
    assert.equal(statSync(store).mode & 0o777, 0o700);
    cowshedOk(store, 'rm', '-f', 'c');
  });

  // The attack, run as root inside the container: write to an image file in
  // place and through a hardlink, change its mode and owner, plant symlinks
  // to the host's root and the store, and write through them.
  const attack = (store: string, obj: string): string => [
    'set -e',
    'printf PWNED >> /usr/lib/os-release',
    'ln /usr/bin/ls /root/ls-hardlink && printf PWNED >> /root/ls-hardlink',
    'chmod 4777 /usr/bin/dpkg && chown 1:1 /usr/bin/dpkg',
    'ln -s / /root/host-root',
    `ln -s ${store} /root/store-link`,
    `mkdir -p ${store}/objects && printf PWNED > /root/store-link/meta.db && printf PWNED > /root/store-link/planted`,
    `mkdir -p $(dirname ${obj}) && printf PWNED > ${obj}`,
    'printf PWNED > /root/host-root/root-planted',
  ].join('\n');

  const DRIVERS: Array<{ driver: string; fs?: 'btrfs' | 'xfs' }> = [
    { driver: 'composefs' }, { driver: 'overlay' }, { driver: 'btrfs', fs: 'btrfs' }, { driver: 'vfs', fs: 'xfs' },
  ];
  // composefs in npm test; overlay, btrfs and vfs under npm run test:slow.
  for (const { driver, fs } of DRIVERS) {
    test(`${driver}: a container cannot write into the store through symlinks or hardlinks`, { skip: driver === 'composefs' ? false : slowOnly }, () => {
      const base = join(work, `attack-${driver}`);
      const store = join(fs ? loopFs(base, fs) : (mkdirSync(base), base), 'store');
      cowshedOk(store, '--driver', driver, 'import', debian, 'deb');
      const probe = lastLine(cowshedOk(store, 'mount', lastLine(cowshedOk(store, 'create', '--name', 'probe', 'deb'))));
      const osRelease = readFileSync(join(probe, 'usr/lib/os-release'));
      const lsBytes = readFileSync(join(probe, 'usr/bin/ls'));
      const dpkg = lstatSync(join(probe, 'usr/bin/dpkg'));
      const obj = objectPath(store, join(probe, 'usr/lib/os-release'));
      const objStat = statSync(obj);
      const db = readFileSync(join(store, 'meta.db'));
      assert.ok(db.length > 0);

      const r = cowshed(store, 'run', '--name', 'attacker', 'deb', '--', 'sh', '-c', attack(store, obj));
      assert.equal(r.status, 0, `the attack script itself should run: ${r.stderr}`);

      // Inside, every write landed in the container's own copy.
      const inside = lastLine(cowshedOk(store, 'mount', 'attacker'));
      assert.match(readFileSync(join(inside, 'usr/lib/os-release'), 'utf8'), /PWNED$/);
      assert.equal(readFileSync(join(inside, obj.slice(1)), 'utf8'), 'PWNED');
      // Outside, nothing changed: the shared object, its mode, another container, the database, the host.
      assert.equal(readFileSync(obj).equals(osRelease), true, 'the shared object changed');
      assert.equal(statSync(obj).mode, objStat.mode);
      assert.equal(readFileSync(join(probe, 'usr/lib/os-release')).equals(osRelease), true, 'another container sees the change');
      assert.equal(readFileSync(join(probe, 'usr/bin/ls')).equals(lsBytes), true, 'a hardlink wrote through to another container');
      const dpkgNow = lstatSync(join(probe, 'usr/bin/dpkg'));
      assert.deepEqual([dpkgNow.mode, dpkgNow.uid, dpkgNow.gid], [dpkg.mode, dpkg.uid, dpkg.gid]);
      assert.ok(!existsSync(join(store, 'planted')), 'a file was planted in the store');
      assert.ok(!existsSync('/root-planted'), 'a file was planted on the host');
      assert.notEqual(readFileSync(join(store, 'meta.db'), 'latin1').slice(0, 5), 'PWNED');
      assert.equal(cowshed(store, 'fsck').status, 0, 'fsck finds damage');

      // A commit keeps the planted symlinks as symlinks and reads nothing through them.
      cowshedOk(store, 'commit', 'attacker', 'attacked');
      const again = lastLine(cowshedOk(store, 'mount', lastLine(cowshedOk(store, 'create', '--name', 'again', 'attacked'))));
      assert.equal(readlinkSync(join(again, 'root/host-root')), '/');
      assert.equal(readlinkSync(join(again, 'root/store-link')), store);
      assert.equal(readFileSync(join(again, 'root/ls-hardlink')).subarray(0, lsBytes.length).equals(lsBytes), true);
      assert.equal(readFileSync(obj).equals(osRelease), true);
      for (const c of ['probe', 'attacker', 'again']) cowshedOk(store, 'rm', '-f', c);
      assert.equal(cowshed(store, 'fsck').status, 0);
    });
  }
});

describe('commit reads a container without following its symlinks out of it', () => {
  let work: string;
  before(() => { work = tempDir(); });
  after(() => removeTree(work));

  test('a directory swapped for a symlink to the host between diff and read fails the commit', async () => {
    const root = join(work, 'rootfs');
    const host = join(work, 'host');
    mkdirSync(join(root, 'a', 'b'), { recursive: true });
    writeFileSync(join(root, 'a', 'b', 'file'), 'innocent\n');
    mkdirSync(join(host, 'b'), { recursive: true });
    writeFileSync(join(host, 'b', 'file'), 'HOST SECRET\n');
    // The diff saw a/b/file; then the container's process swaps a for a symlink.
    const changes = [{ kind: 'A' as const, path: '/a' }, { kind: 'A' as const, path: '/a/b' }, { kind: 'A' as const, path: '/a/b/file' }];
    renameSync(join(root, 'a'), join(root, 'a-real'));
    symlinkSync(host, join(root, 'a'));
    const read: string[] = [];
    await assert.rejects(async () => {
      for await (const e of changeEntries(changes, root, 'container x')()) {
        read.push(e.header.path);
        if (e.body) for await (const chunk of e.body) read.push(Buffer.from(chunk).toString());
      }
    }, (e: unknown) => e instanceof CowshedError && e.code === 'EBUSY' && /container x changed while it was read: \/a/.test(e.message));
    assert.ok(!read.join('').includes('HOST SECRET'), 'read the host through the symlink');
    rmSync(join(root, 'a'));
  });

  test('a container racing its commit (swapping a directory for a symlink to /) never leaks host files; paused, it commits every time', async () => {
    const store = join(work, 'race-store');
    cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'deb');
    // Host files the container names by path (a thousand, then a secret): none may ever appear in an image.
    // The container has the same paths, so a read that follows the swapped symlink finds a file and goes on.
    const secretDir = join(work, 'host-secret');
    mkdirSync(join(secretDir, 'fill'), { recursive: true });
    for (let i = 0; i < 1000; i++) writeFileSync(join(secretDir, 'fill', String(i)), `HOST ${i}\n`);
    writeFileSync(join(secretDir, 'secret'), 'HOST SECRET\n');
    const inside = `/d${secretDir}`;
    const swaps = `mkdir -p ${inside}/fill && i=0; while [ $i -lt 1000 ]; do echo innocent > ${inside}/fill/$i; i=$((i+1)); done; ` +
      `echo innocent > ${inside}/secret && touch /ready\n` +
      // About as long a directory as a symlink to the host's root, briefly neither.
      'i=0; while [ $i -lt 3000 ] && [ ! -e /stop ]; do mv /d /x; ln -s / /d; sleep 0.2; rm /d; mv /x /d; sleep 0.2; i=$((i+1)); done';
    const runner = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'cowshed.js'), '--store', store, 'run', '--name', 'racer', 'deb', '--', 'sh', '-c', swaps], { stdio: 'ignore' });
    try {
      const merged = join(store, 'containers');
      let root = '';
      for (let i = 0; i < 200 && !root; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const m = cowshed(store, 'mount', 'racer');
        if (m.status === 0 && existsSync(join(lastLine(m.stdout), 'ready'))) root = lastLine(m.stdout);
      }
      assert.ok(root, `the racing container did not start (${merged})`);
      const COMMITS = 20;
      let committed = 0;
      let refused = 0;
      for (let i = 0; i < COMMITS; i++) {
        // Half without pausing it (the reads must hold on their own), half frozen as by default (every one must succeed).
        const pause = i % 2 === 1;
        const r = cowshed(store, 'commit', ...(pause ? [] : ['--no-pause']), 'racer', `race:${i}`);
        if (pause) assert.equal(r.status, 0, `a commit of the frozen container failed: ${r.stderr}`);
        if (r.status !== 0) {
          assert.match(r.stderr.trim(), /^cowshed: .*(changed while it was read|fewer bytes)/, 'a refused commit says why in one line');
          refused++;
          continue;
        }
        committed++;
        const check = lastLine(cowshedOk(store, 'mount', `race:${i}`));
        // Looked at in the image only: an image whose /d is the symlink to / must not lead this check to the host.
        const parts = ['d', ...secretDir.slice(1).split('/')];
        const inImage = parts.every((_, k) => lstatSync(join(check, ...parts.slice(0, k + 1)), { throwIfNoEntry: false })?.isDirectory());
        if (inImage) {
          const dir = join(check, ...parts);
          const files = [join(dir, 'secret'), ...readdirSync(join(dir, 'fill')).map((f) => join(dir, 'fill', f))];
          for (const f of files) assert.equal(readFileSync(f, 'utf8'), 'innocent\n', `commit ${i} put the host's ${f.slice(check.length)} in the image`);
        }
        cowshedOk(store, 'umount', `race:${i}`);
      }
      assert.equal(committed + refused, COMMITS);
      console.log(`# ${committed} commits made, ${refused} refused`);
      writeFileSync(join(root, 'stop'), '');
    } finally {
      await new Promise<void>((resolve) => {
        if (runner.exitCode !== null) return resolve();
        const t = setTimeout(() => runner.kill('SIGKILL'), 30_000);
        runner.once('exit', () => { clearTimeout(t); resolve(); });
      });
    }
    cowshedOk(store, 'rm', '-f', 'racer');
  });
});
