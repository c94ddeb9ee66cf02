// Volumes, bind mounts, tmpfs and --read-only through the CLI with real runc,
// on the composefs and overlay drivers and on vfs (loop xfs, reflinks) and
// btrfs (loop btrfs): named volumes made on first use and filled from the
// image (owners, modes, xattrs), surviving rm, refused by volume rm while
// used; binds ro and rw; diff and commit leaving volumes out; symlinks
// planted in the image redirecting nothing to the host; a read-only root.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync, chownSync, chmodSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, tempDir, removeTree, lastLine, debianFixture, podmanOciRef, REPO } from '../helpers/cli.ts';
import { loopFs } from '../helpers/loop-fs.ts';
import { slowOnly } from '../helpers/slow.ts';

interface Case { name: string; driver: string; fs?: 'btrfs' | 'xfs' }
const CASES: Case[] = [
  { name: 'composefs', driver: 'composefs' },
  { name: 'overlay', driver: 'overlay' },
  { name: 'vfs (loop xfs)', driver: 'vfs', fs: 'xfs' },
  { name: 'btrfs (loop btrfs)', driver: 'btrfs', fs: 'btrfs' },
];

const getfattr = (path: string, name: string): string =>
  execFileSync('getfattr', ['--only-values', '-n', name, path], { encoding: 'utf8' });
const mountpoint = (store: string, vol: string): string =>
  (JSON.parse(cowshedOk(store, 'volume', 'inspect', vol)) as Array<{ Mountpoint: string }>)[0]!.Mountpoint;
const volumeNames = (store: string): string[] => cowshedOk(store, 'volume', 'ls', '-q').split('\n').filter((l) => l !== '');

/** The OCI config.json run wrote for a kept container. */
function bundleOf(store: string, name: string): { mounts: Array<{ destination: string; source: string; options: string[] }> } {
  const id = (JSON.parse(cowshedOk(store, 'ps', '-a', '--json')) as Array<{ id: string; name: string }>).find((x) => x.name === name)!.id;
  return JSON.parse(readFileSync(join(store, 'containers', id, 'bundle', 'config.json'), 'utf8')) as ReturnType<typeof bundleOf>;
}

/** Commits an image from deb after `prepare(root)` edits a container's root from the host. */
function imageFrom(store: string, name: string, prepare: (root: string) => void): void {
  cowshedOk(store, 'create', '--name', `prep-${name}`, 'deb');
  const root = lastLine(cowshedOk(store, 'mount', `prep-${name}`));
  prepare(root);
  cowshedOk(store, 'commit', `prep-${name}`, name);
  cowshedOk(store, 'rm', `prep-${name}`);
}

describe('volumes and mounts', () => {
  let work: string;
  let layout: string;
  before(() => {
    work = tempDir();
    layout = debianFixture().layout;
  });
  after(() => removeTree(work));

  // The other drivers under npm run test:slow: the volume code is shared, only the root differs.
  for (const c of CASES) {
    describe(c.name, { skip: c.driver === 'composefs' ? false : slowOnly }, () => {
      let store: string;
      let base: string;
      before(() => {
        base = join(work, c.name.replace(/\W+/g, '-'));
        store = join(c.fs ? loopFs(base, c.fs) : (mkdirSync(base), base), 'store');
        cowshedOk(store, '--driver', c.driver, 'import', `oci:${layout}:v1`, 'deb');
        // /srv/data in the image: a file with an owner, a mode and an xattr; a directory with its own mode.
        imageFrom(store, 'seeded', (root) => {
          mkdirSync(join(root, 'srv/data/sub'), { recursive: true });
          writeFileSync(join(root, 'srv/data/seed'), 'seed\n');
          chownSync(join(root, 'srv/data/seed'), 1234, 5678);
          chmodSync(join(root, 'srv/data/seed'), 0o640);
          execFileSync('setfattr', ['-n', 'user.origin', '-v', 'image', join(root, 'srv/data/seed')]);
          chownSync(join(root, 'srv/data'), 33, 33);
          chmodSync(join(root, 'srv/data'), 0o750);
        });
      });

      test('a named volume is made on first use, starts with the image content, survives rm, and volume rm waits for its containers', () => {
        const r = cowshed(store, 'run', '--name', 'a', '-v', 'data:/srv/data', 'seeded', '--', 'sh', '-c', 'cat /srv/data/seed; echo new > /srv/data/new; stat -c "%u:%g %a" /srv/data');
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, 'seed\n33:33 750\n');
        const data = mountpoint(store, 'data');
        assert.equal(data, join(store, 'volumes', 'data', '_data'));
        // copy-up kept owners, modes and xattrs, the volume's own directory included
        const st = statSync(join(data, 'seed'));
        assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1234, 5678, 0o640]);
        assert.equal(getfattr(join(data, 'seed'), 'user.origin'), 'image');
        assert.deepEqual([statSync(data).uid, statSync(data).mode & 0o7777], [33, 0o750]);
        assert.ok(lstatSync(join(data, 'sub')).isDirectory());
        assert.equal(readFileSync(join(data, 'new'), 'utf8'), 'new\n');

        const refused = cowshed(store, 'volume', 'rm', 'data');
        assert.notEqual(refused.status, 0);
        assert.equal(refused.stderr, 'cowshed: volume data is being used by container a; remove it first\n');
        assert.equal(cowshed(store, 'volume', 'prune').stdout, '', 'prune keeps a used volume');
        assert.ok(existsSync(join(data, 'new')));

        cowshedOk(store, 'rm', 'a');
        assert.deepEqual(volumeNames(store), ['data']);
        // Mounted again, read-only: the data is there (and not copied over again), writes fail.
        const ro = cowshed(store, 'run', '--rm', '-v', 'data:/srv/data:ro', 'seeded', '--', 'sh', '-c', 'cat /srv/data/new; rm /srv/data/seed');
        assert.notEqual(ro.status, 0);
        assert.equal(ro.stdout, 'new\n');
        assert.match(ro.stderr, /Read-only file system/);
        assert.ok(existsSync(join(data, 'seed')));
        // --mount type=volume, and volume ls / inspect name its user while it exists
        cowshedOk(store, 'run', '--name', 'b', '--mount', 'type=volume,source=data,target=/mnt/v', 'deb', '--', 'sh', '-c', 'echo again >> /mnt/v/new');
        assert.deepEqual((JSON.parse(cowshedOk(store, 'volume', 'inspect', 'data')) as Array<{ UsedBy: string[] }>)[0]!.UsedBy, ['b']);
        assert.equal(readFileSync(join(data, 'new'), 'utf8'), 'new\nagain\n');
        cowshedOk(store, 'rm', 'b');
        assert.equal(cowshedOk(store, 'volume', 'rm', 'data').trim(), 'data');
        assert.ok(!existsSync(join(store, 'volumes', 'data')));
        assert.deepEqual(volumeNames(store), []);
      });

      test('bind mounts are read-write or read-only, from the host path as resolved when run was called', () => {
        const host = join(base, 'host-dir');
        mkdirSync(host);
        writeFileSync(join(host, 'in'), 'from host\n');
        symlinkSync(host, join(base, 'host-link'));
        const rw = cowshed(store, 'run', '--name', 'binds', '-v', `${join(base, 'host-link')}:/mnt/rw`, '--mount', `type=bind,src=${host},dst=/mnt/ro,readonly`, 'deb', '--',
          'sh', '-c', 'cat /mnt/rw/in; echo out > /mnt/rw/out; echo x > /mnt/ro/x 2>/dev/null && echo wrote || echo refused');
        assert.equal(rw.status, 0, rw.stderr);
        assert.equal(rw.stdout, 'from host\nrefused\n');
        assert.equal(readFileSync(join(host, 'out'), 'utf8'), 'out\n');
        assert.ok(!existsSync(join(host, 'x')));
        // runc was handed the real path, not the symlink typed
        const spec = bundleOf(store, 'binds');
        const m = spec.mounts.find((x) => x.destination === '/mnt/rw')!;
        assert.equal(m.source, host);
        assert.ok(m.options.includes('rbind') && m.options.includes('rw') && m.options.includes('rprivate'), m.options.join(','));
        assert.ok(spec.mounts.find((x) => x.destination === '/mnt/ro')!.options.includes('ro'));
        cowshedOk(store, 'rm', 'binds');
        assert.equal(readFileSync(join(host, 'in'), 'utf8'), 'from host\n', 'rm of the container leaves the bind source alone');
        const missing = cowshed(store, 'run', '--rm', '-v', `${join(base, 'no-such')}:/x`, 'deb', '--', 'true');
        assert.equal(missing.status, 1);
        assert.match(missing.stderr, /^cowshed: -v .*no-such:\/x: the host path .* does not exist/);
      });

      test('diff and commit leave out volumes, binds and tmpfs, as podman does', () => {
        const host = join(base, 'diff-bind');
        mkdirSync(host);
        cowshedOk(store, 'run', '--name', 'w', '-v', 'dv:/srv/data', '-v', `${host}:/mnt/b`, '--tmpfs', '/scratch', 'seeded', '--',
          'sh', '-c', 'echo v > /srv/data/v; echo b > /mnt/b/b; echo s > /scratch/s; echo r > /root/r');
        assert.equal(readFileSync(join(host, 'b'), 'utf8'), 'b\n');
        // Mountpoints runc made stay (empty) in the diff, as with podman 4; what was written through them does not.
        const diff = cowshedOk(store, 'diff', 'w').trim().split('\n');
        assert.deepEqual(diff, ['C /mnt', 'A /mnt/b', 'C /root', 'A /root/r', 'A /scratch']);
        cowshedOk(store, 'commit', 'w', 'committed');
        const r = cowshed(store, 'run', '--rm', 'committed', '--', 'sh', '-c', 'ls /srv/data; cat /root/r; test -e /mnt/b && echo has-b; test -e /scratch && echo has-scratch; true');
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, 'seed\nsub\nr\nhas-b\nhas-scratch\n');
        assert.equal(cowshedOk(store, 'run', '--rm', 'committed', '--', 'find', '/mnt/b', '/scratch'), '/mnt/b\n/scratch\n', 'the mountpoints are empty');
        cowshedOk(store, 'rm', 'w');
        cowshedOk(store, 'volume', 'rm', 'dv');
      });

      test('a symlink planted in the image redirects neither a volume, a bind, -w nor the copy-up to the host', () => {
        const secret = join(base, 'host-secret');
        const secret2 = join(base, 'host-secret2');
        for (const d of [secret, secret2]) {
          mkdirSync(d);
          writeFileSync(join(d, 'secret.txt'), 'host only\n');
        }
        imageFrom(store, 'evil', (root) => {
          symlinkSync(secret, join(root, 'srv/abs'));
          symlinkSync(`../../../../../../../../..${secret2}`, join(root, 'srv/rel'));
        });
        const bindSrc = join(base, 'evil-bind');
        mkdirSync(bindSrc);
        const r = cowshed(store, 'run', '--name', 'e', '-v', 'ev1:/srv/abs', '-v', 'ev2:/srv/rel/deeper', '-v', `${bindSrc}:/srv/rel/b`, 'evil', '--',
          'sh', '-c', `ls /srv/abs; echo pwned > /srv/abs/f; echo pwned > /srv/rel/deeper/g; echo pwned > /srv/rel/b/h; ls ${secret} ${secret2}`);
        assert.equal(r.status, 0, r.stderr);
        // In the container the symlinks lead to paths inside its root, where the volumes are.
        assert.equal(r.stdout, `${secret}:\nf\n\n${secret2}:\nb\ndeeper\n`);
        for (const d of [secret, secret2]) assert.deepEqual(readdirSync(d), ['secret.txt'], 'nothing written to or mounted on the host directory');
        assert.deepEqual(readdirSync(mountpoint(store, 'ev1')), ['f'], 'the copy-up did not read the host directory');
        assert.deepEqual(readdirSync(mountpoint(store, 'ev2')), ['g']);
        assert.deepEqual(readdirSync(bindSrc), ['h']);
        const spec = bundleOf(store, 'e');
        assert.ok(spec.mounts.some((m) => m.destination === `${secret2}/deeper`), 'destinations are handed to runc resolved inside the root');
        // -w through the planted symlink: looked up inside the container, where it does not exist (podman: exit 126)
        const w = cowshed(store, 'run', '--rm', '-w', '/srv/abs/sub', 'evil', '--', 'pwd');
        assert.equal(w.status, 126);
        assert.ok(!existsSync(join(secret, 'sub')));
        cowshedOk(store, 'rm', 'e');
        cowshedOk(store, 'volume', 'prune');
        assert.deepEqual(volumeNames(store), []);
        for (const d of [secret, secret2]) assert.deepEqual(readdirSync(d), ['secret.txt']);
      });

      test('--read-only refuses writes to the root but not to volumes, binds and tmpfs', () => {
        const r = cowshed(store, 'run', '--rm', '--read-only', '-v', 'rov:/data', '--tmpfs', '/scratch:size=1m', 'deb', '--', 'sh', '-c',
          'echo a > /data/a && echo b > /scratch/b && echo c > /tmp/c && echo ok; echo x > /etc/x 2>/dev/null && echo wrote-etc || echo refused-etc; ' +
          'echo y > /root/y 2>/dev/null && echo wrote-root || echo refused-root');
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, 'ok\nrefused-etc\nrefused-root\n');
        assert.equal(readFileSync(join(mountpoint(store, 'rov'), 'a'), 'utf8'), 'a\n');
        const noTmp = cowshed(store, 'run', '--rm', '--read-only', '--read-only-tmpfs', 'false', 'deb', '--', 'sh', '-c', 'echo c > /tmp/c 2>/dev/null && echo wrote || echo refused');
        assert.equal(noTmp.stdout, 'refused\n');
        cowshedOk(store, 'volume', 'rm', 'rov');
      });

      test('df counts volumes; volume rm and prune delete nothing outside volumes/', () => {
        cowshedOk(store, 'volume', 'create', 'big');
        const data = mountpoint(store, 'big');
        writeFileSync(join(data, 'blob'), Buffer.alloc(3_000_000, 1));
        const df = JSON.parse(cowshedOk(store, 'df', '--json')) as { volumes: { count: number; size: number; volumes: Array<{ name: string; size: number }> } };
        assert.deepEqual(df.volumes.volumes, [{ name: 'big', size: 3_000_000 }]);
        assert.deepEqual([df.volumes.count, df.volumes.size], [1, 3_000_000]);
        assert.match(cowshedOk(store, 'df'), /^volumes: 1, 3\.0 MB$/m);
        // A symlink and a hardlink inside the volume to host files: removing the volume unlinks them only.
        const outside = join(base, 'outside');
        mkdirSync(outside);
        writeFileSync(join(outside, 'keep'), 'keep\n');
        symlinkSync(outside, join(data, 'link'));
        execFileSync('ln', [join(outside, 'keep'), join(data, 'hard')]);
        // Something mounted inside the volume on the host: rm refuses rather than delete across it.
        mkdirSync(join(data, 'mnt'));
        execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', join(data, 'mnt')]);
        writeFileSync(join(data, 'mnt', 'on-tmpfs'), 'x');
        const busy = cowshed(store, 'volume', 'rm', 'big');
        assert.equal(busy.status, 1);
        assert.match(busy.stderr, /is mounted inside the volume's directory; unmount it first/);
        assert.ok(existsSync(join(data, 'mnt', 'on-tmpfs')));
        execFileSync('umount', [join(data, 'mnt')]);
        for (const bad of ['../outside', 'a/b', '..', '.hidden']) {
          const r = cowshed(store, 'volume', 'rm', bad);
          assert.equal(r.status, 2, bad);
          assert.match(r.stderr, /invalid volume name/);
        }
        assert.equal(cowshedOk(store, 'volume', 'prune').trim(), 'big');
        assert.deepEqual(readdirSync(outside), ['keep']);
        assert.equal(readFileSync(join(outside, 'keep'), 'utf8'), 'keep\n');
        assert.deepEqual(readdirSync(join(store, 'volumes')), []);
      });
    });
  }
});

describe('run options as podman run', () => {
  let work: string;
  let store: string;
  let podmanImage: string;
  const podmanArgs = (): string[] => ['--root', join(work, 'podman'), '--runroot', join(work, 'podman-run'), '--storage-driver', 'overlay'];
  before(() => {
    work = tempDir();
    store = join(work, 'store');
    const layout = debianFixture().layout;
    cowshedOk(store, 'import', `oci:${layout}:v1`, 'deb');
    podmanImage = execFileSync('podman', [...podmanArgs(), 'pull', '-q', podmanOciRef(layout, 'v1')], { encoding: 'utf8' }).trim();
  });
  after(() => {
    try { execFileSync('podman', [...podmanArgs(), 'system', 'reset', '-f'], { stdio: 'ignore' }); } catch { /* best effort */ }
    removeTree(work);
  });

  /** Runs the same options and command under both, with `input` on stdin. */
  const both = async (opts: string[], cmd: string[], input = ''): Promise<{ cowshed: [number, string]; podman: [number, string] }> => {
    const runOne = (bin: string, args: string[]): Promise<[number, string]> => new Promise((resolve, reject) => {
      const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'ignore'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      child.on('error', reject);
      child.on('close', (code) => resolve([code ?? -1, out]));
      child.stdin.end(input);
    });
    // This VM forbids raising rlimits, so podman gets limits below the host's.
    const p = await runOne('podman', [...podmanArgs(), 'run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000', ...opts, podmanImage, ...cmd]);
    const ours = await runOne(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, 'run', '--rm', ...opts, 'deb', ...(cmd.length ? ['--', ...cmd] : [])]);
    return { cowshed: ours, podman: p };
  };

  const cases: Array<[string, string[], string[], string?]> = [
    ['-w to an existing directory', ['-w', '/usr/share'], ['pwd']],
    ['-w to a missing directory fails with 126', ['-w', '/no/such/dir'], ['pwd']],
    ['-u by name', ['-u', 'nobody'], ['sh', '-c', 'id; echo $HOME']],
    ['-u name:group', ['-u', 'www-data:users'], ['id']],
    ['-u uid the image lacks (podman adds passwd and group entries)', ['-u', '1234'], ['sh', '-c', 'id; echo $HOME; tail -n1 /etc/passwd; tail -n1 /etc/group']],
    ['-u uid:gid', ['-u', '1234:4321'], ['sh', '-c', 'id; tail -n1 /etc/group']],
    ['-u uid with -w: home is the workdir', ['-u', '1234', '-w', '/usr/share'], ['sh', '-c', 'echo $HOME; pwd']],
    ['-u a user the image lacks fails', ['-u', 'nosuch'], ['id']],
    ['without -i stdin is empty', [], ['sh', '-c', 'cat; echo end'], 'piped\n'],
    ['-i passes stdin', ['-i'], ['sh', '-c', 'cat; echo end'], 'piped\n'],
    ['--entrypoint as a string drops the image Cmd', ['--entrypoint', 'echo'], ['hi']],
    ['--entrypoint as a JSON array', ['--entrypoint', '["echo","a"]'], ['b']],
    ['a named volume over image content is filled from it', ['-v', 'cmpvol:/var/lib/apt'], ['sh', '-c', 'ls -A /var/lib/apt; stat -c "%U %a" /var/lib/apt']],
    ['--tmpfs is empty, writable, mode 1777', ['--tmpfs', '/var/cache'], ['sh', '-c', 'ls -A /var/cache; touch /var/cache/x && stat -c %a /var/cache']],
    ['--read-only', ['--read-only'], ['sh', '-c', 'touch /x 2>/dev/null || echo refused; touch /tmp/x /run/x /var/tmp/x && echo ok']],
  ];
  for (const [what, opts, cmd, input] of cases) {
    test(what, async () => {
      const r = await both(opts, cmd, input);
      // podman reports a failure to start with 125/126/127; the outputs must match where it starts.
      assert.deepEqual(r.cowshed, r.podman, `${opts.join(' ')} ${cmd.join(' ')}`);
    });
  }
});

describe('volume bookkeeping under concurrent processes', () => {
  let work: string;
  before(() => { work = tempDir(); });
  after(() => removeTree(work));

  test('anonymous volumes (-v /dir) go with run --rm and rm -v, named ones stay', () => {
    const store = join(work, 'anon-store');
    cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'deb');
    cowshedOk(store, 'run', '--rm', '-v', '/anon', '-v', 'named:/named', 'deb', '--', 'touch', '/anon/x', '/named/y');
    assert.deepEqual(volumeNames(store), ['named']);
    cowshedOk(store, 'run', '--name', 'k', '-v', '/anon', 'deb', '--', 'touch', '/anon/x');
    const [anon] = volumeNames(store).filter((n) => n !== 'named');
    assert.match(anon!, /^[0-9a-f]{64}$/);
    assert.ok(existsSync(join(mountpoint(store, anon!), 'x')));
    cowshedOk(store, 'rm', '-v', 'k');
    assert.deepEqual(volumeNames(store), ['named']);
  });

  test('runs sharing a new volume and prunes racing them leave rows and directories in step', async () => {
    const store = join(work, 'store');
    cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'deb');
    const cli = (...args: string[]): Promise<{ code: number; err: string }> => new Promise((resolve) => {
      const child = spawn(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.on('close', (code) => resolve({ code: code ?? -1, err }));
    });
    const runs = Array.from({ length: 4 }, (_, i) => cli('run', '--rm', '-v', 'shared:/var/lib/apt', '-v', `own${i}:/srv`, 'deb', '--', 'sh', '-c', `echo ${i} > /var/lib/apt/w${i}`));
    const prunes = Array.from({ length: 4 }, () => cli('volume', 'prune'));
    const results = await Promise.all([...runs, ...prunes]);
    for (const r of results) assert.equal(r.code, 0, r.err);
    // Every recorded volume has its directory and nothing else is under volumes/.
    const names = volumeNames(store);
    assert.deepEqual(readdirSync(join(store, 'volumes')).sort(), names.sort());
    for (const n of names) assert.ok(lstatSync(join(store, 'volumes', n, '_data')).isDirectory(), n);
    assert.deepEqual(JSON.parse(cowshedOk(store, 'ps', '-a', '--json')), []);
    cowshedOk(store, 'volume', 'prune');
    assert.deepEqual(volumeNames(store), []);
    assert.deepEqual(readdirSync(join(store, 'volumes')), []);
    assert.equal(cowshed(store, 'fsck').status, 0);
  });
});
