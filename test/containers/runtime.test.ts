// Runs real containers with runc on the Debian fixture's rootfs (unpacked by
// umoci, the independent judge), with a spec built by cowshed from the
// image config read out of the OCI layout.

import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { resolveUser, runtimeSpec, writeBundle, type RuntimeSpecOptions } from '../../src/containers/bundle.ts';
import { runContainer, runtimeAvailable, type RunContainerResult } from '../../src/containers/runtime.ts';
import { parseConfig, parseIndex, parseManifest, type ImageConfig } from '../../src/oci/types.ts';
import { isCowshedError, type ErrorCode } from '../../src/util/errors.ts';

import { debianFixture, REPO } from '../helpers/cli.ts';

let LAYOUT: string;

let work: string;
let rootfs: string;
let imageConfig: ImageConfig;
let seq = 0;
const ids: string[] = [];

function nextId(): string {
  const id = `cowshed-test-${process.pid}-${++seq}`;
  ids.push(id);
  return id;
}

function blob(digest: string): Promise<Buffer> {
  return readFile(join(LAYOUT, 'blobs', ...digest.split(':')));
}

async function loadImageConfig(tag: string): Promise<ImageConfig> {
  const index = parseIndex(await readFile(join(LAYOUT, 'index.json')));
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.ok(desc, `tag ${tag} in ${LAYOUT}`);
  const manifest = parseManifest(await blob(desc.digest), desc.mediaType);
  return parseConfig(await blob(manifest.config.digest));
}

/** The fixture's config with its container config replaced by `overrides`. */
function withConfig(overrides: ImageConfig['config']): ImageConfig {
  return { ...imageConfig, config: { ...imageConfig.config, ...overrides } };
}

async function run(spec: Omit<RuntimeSpecOptions, 'rootfs' | 'config'> & { config?: ImageConfig }, signal?: AbortSignal): Promise<RunContainerResult & { id: string }> {
  const id = nextId();
  const bundle = join(work, 'bundles', id);
  await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, ...spec }));
  const r = await runContainer({ bundle, id, stdio: 'pipe', signal, stopTimeout: 2 });
  return { ...r, id };
}

function runcIds(): string[] {
  const out = execFileSync('runc', ['list', '-q'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '');
}

function assertNoState(id: string): void {
  assert.ok(!runcIds().includes(id), `runc still has state for ${id}`);
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<Error & { exitCode: number }> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(isCowshedError(err), `expected a CowshedError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (message) assert.match(err.message, message);
  return err;
}

/** A script that runs the bundle with stdio 'inherit' in its own process and prints the exit code. */
async function writeRunner(id: string, bundle: string): Promise<string> {
  const runner = join(work, `runner-${id}.ts`);
  await writeFile(runner, `import { runContainer } from ${JSON.stringify(join(REPO, 'src/containers/runtime.ts'))};\n` +
    `const r = await runContainer({ bundle: ${JSON.stringify(bundle)}, id: ${JSON.stringify(id)}, stdio: 'inherit' });\n` +
    'console.log(`exit=${r.exitCode}`);\n');
  return runner;
}

const text = (b: Buffer | undefined): string => b?.toString('utf8') ?? '';

void before(async () => {
  LAYOUT = debianFixture().layout;
  work = await mkdtemp(join(tmpdir(), 'cowshed-runtime-test-'));
  imageConfig = await loadImageConfig('v1');
  // umoci's rootfs only; the spec is ours (the umoci config.json is ignored).
  execFileSync('umoci', ['unpack', '--image', `${LAYOUT}:v1`, join(work, 'unpacked')], { stdio: 'ignore' });
  rootfs = join(work, 'unpacked', 'rootfs');
});

void after(async () => {
  for (const id of ids) spawnSync('runc', ['delete', '--force', id], { stdio: 'ignore' });
  if (work) await rm(work, { recursive: true, force: true });
});

void describe('runContainer with runc', () => {
  void test('runc is the runtime that works here', () => {
    assert.equal(runtimeAvailable(), 'runc');
  });

  void test('stdout and stderr come through separately; no state is left', async () => {
    const r = await run({ args: ['sh', '-c', 'echo to-out; echo to-err >&2; echo more-out'] });
    assert.equal(r.exitCode, 0);
    assert.equal(text(r.stdout), 'to-out\nmore-out\n');
    assert.equal(text(r.stderr), 'to-err\n');
    assertNoState(r.id);
  });

  void test("the container's exit code comes back", async () => {
    const r = await run({ args: ['sh', '-c', 'exit 3'] });
    assert.equal(r.exitCode, 3);
    assertNoState(r.id);
  });

  void test('the image Cmd runs when no args are given; args replace Cmd after Entrypoint', async () => {
    const cmd = await run({ config: withConfig({ Cmd: ['echo', 'from-cmd'] }) });
    assert.equal(text(cmd.stdout), 'from-cmd\n');
    const ep = await run({ config: withConfig({ Entrypoint: ['echo', 'ep'], Cmd: ['from-cmd'] }), args: ['from-args'] });
    assert.equal(text(ep.stdout), 'ep from-args\n');
  });

  void test('user, working directory and env come from the image config', async () => {
    const config = withConfig({ User: 'nobody', WorkingDir: '/tmp', Env: ['PATH=/usr/bin:/bin', 'GREETING=moo'] });
    const r = await run({ config, env: ['EXTRA=1'], args: ['sh', '-c', 'id -u; id -g; pwd; echo "$GREETING $EXTRA $PATH $HOME $HOSTNAME"; grep CapEff /proc/self/status'] });
    assert.equal(r.exitCode, 0, text(r.stderr));
    const [uid, gid, cwd, env, capEff] = text(r.stdout).split('\n');
    assert.equal(uid, '65534');
    assert.equal(gid, '65534');
    assert.equal(cwd, '/tmp');
    assert.equal(env, 'moo 1 /usr/bin:/bin /nonexistent cowshed');
    // A non-root user holds no capabilities (bounding set only), as with podman.
    assert.match(capEff!, /CapEff:\s+0+$/);
  });

  void test('root gets podman\'s default capabilities, not the host\'s', async () => {
    const r = await run({ args: ['grep', 'CapEff', '/proc/self/status'] });
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT SETFCAP
    assert.match(text(r.stdout), /CapEff:\s+00000000800405fb/);
  });

  void test('a missing command is a clear ETOOL error with exit code 127, and no state is left', async () => {
    const id = `cowshed-test-${process.pid}-missing`;
    ids.push(id);
    const bundle = join(work, 'bundles', id);
    await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, args: ['no-such-command', 'x'] }));
    const err = await rejectsWith(runContainer({ bundle, id, stdio: 'pipe' }), 'ETOOL', /no-such-command.*not found/);
    assert.equal(err.exitCode, 127);
    assert.doesNotMatch(err.message, /\n/);
    assertNoState(id);
  });

  void test('the hostname inside is the given one', async () => {
    const r = await run({ hostname: 'moo-box', args: ['hostname'] });
    assert.equal(text(r.stdout), 'moo-box\n');
  });

  void test('host processes are invisible (private pid namespace)', async () => {
    const r = await run({ args: ['sh', '-c', 'ls /proc | grep -E "^[0-9]+$"'] });
    const pids = text(r.stdout).trim().split('\n');
    assert.ok(pids.length <= 3, `saw pids ${pids.join(' ')}`);
    assert.ok(pids.includes('1'));
  });

  void test('the network namespace has only loopback, and it is up', async () => {
    const r = await run({ args: ['sh', '-c', 'ls /sys/class/net; cat /sys/class/net/lo/flags'] });
    assert.equal(text(r.stdout), 'lo\n0x9\n');
  });

  void test('a read-only rootfs cannot be written; /tmp of a writable one can', async () => {
    const ro = await run({ readonlyRootfs: true, args: ['sh', '-c', 'touch /moo 2>/dev/null || echo refused'] });
    assert.equal(text(ro.stdout), 'refused\n');
    const rw = await run({ args: ['sh', '-c', 'touch /tmp/moo && echo wrote && rm /tmp/moo'] });
    assert.equal(text(rw.stdout), 'wrote\n');
  });

  void test('abort stops the container and cleans up', async () => {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), 300);
    const started = Date.now();
    const r = await run({ args: ['sleep', '30'] }, ac.signal);
    clearTimeout(t);
    // sleep as pid 1 ignores SIGTERM (no handler installed), so the grace period ends in SIGKILL.
    assert.ok(r.exitCode === 143 || r.exitCode === 137, `exit code ${r.exitCode}`);
    assert.ok(Date.now() - started < 10_000);
    assertNoState(r.id);
  });

  void test('SIGTERM to cowshed reaches the container, whose exit code comes back', async () => {
    const id = nextId();
    const bundle = join(work, 'bundles', id);
    const script = 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.1; done';
    await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, args: ['sh', '-c', script] }));
    const runner = await writeRunner(id, bundle);
    const child = spawn(process.execPath, [runner], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const done = new Promise<number | null>((resolve) => child.on('close', resolve));
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out === 'ready\n') child.kill('SIGTERM');
    });
    assert.equal(await done, 0);
    assert.equal(out, 'ready\ngot-term\nexit=7\n');
    assertNoState(id);
  });

  void test('an id already in use is refused without touching that container', async () => {
    const ac = new AbortController();
    const id = nextId();
    const bundle = join(work, 'bundles', id);
    await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, args: ['sleep', '30'] }));
    const first = runContainer({ bundle, id, stdio: 'pipe', signal: ac.signal, stopTimeout: 1 });
    try {
      // Wait until runc has it running.
      for (let i = 0; i < 100 && !runcIds().includes(id); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(runcIds().includes(id));
      await rejectsWith(runContainer({ bundle, id, stdio: 'pipe' }), 'EEXIST', new RegExp(id));
      assert.ok(runcIds().includes(id), 'the running container survives');
    } finally {
      ac.abort();
      await first;
    }
    assertNoState(id);
  });

  void test('a bundle without config.json and a bad id are refused', async () => {
    await rejectsWith(runContainer({ bundle: join(work, 'nowhere'), id: nextId() }), 'ENOENT', /config\.json/);
    await rejectsWith(runContainer({ bundle: work, id: '../x' }), 'EINVAL', /invalid container id/);
  });

  void test('with a tty the container gets a terminal (under script(1), which gives us one)', async () => {
    const id = nextId();
    const bundle = join(work, 'bundles', id);
    await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, args: ['sh', '-c', 'tty; echo "TERM=$TERM"; exit 5'], tty: true }));
    const runner = await writeRunner(id, bundle);
    const r = spawnSync('script', ['-qec', `${process.execPath} ${runner}`, '/dev/null'], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = r.stdout.split(/\r?\n/).filter((l) => l !== '');
    // script echoes a control character from its (empty) stdin ahead of the output.
    assert.match(lines[0]!, /\/dev\/pts\/\d+$/, r.stdout + r.stderr);
    assert.deepEqual(lines.slice(1), ['TERM=xterm', 'exit=5']);
    assertNoState(id);
  });

  void test('a tty without a terminal on stdin is refused before runc starts', async () => {
    const id = nextId();
    const bundle = join(work, 'bundles', id);
    await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, args: ['true'], tty: true }));
    await rejectsWith(runContainer({ bundle, id, stdio: 'pipe' }), 'EINVAL', /terminal/);
    assertNoState(id);
  });

  void test('asking for a runtime that is not installed says so', async () => {
    if (spawnSync('crun', ['--version']).error === undefined) return; // crun present: covered by its own failure message
    const id = nextId();
    const bundle = join(work, 'bundles', id);
    await writeBundle(bundle, runtimeSpec({ config: imageConfig, rootfs, args: ['true'] }));
    await rejectsWith(runContainer({ bundle, id, runtime: 'crun', stdio: 'pipe' }), 'ETOOL', /crun not found/);
  });
});

void describe('runtimeSpec', () => {
  void test('has runc spec\'s mounts, namespaces and masked paths, with the rootfs by absolute path', async () => {
    const dir = join(work, 'runc-spec');
    await mkdir(dir);
    execFileSync('runc', ['spec'], { cwd: dir });
    const reference = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as {
      mounts: { destination: string }[]; linux: { namespaces: { type: string }[]; maskedPaths: string[]; readonlyPaths: string[] };
    };
    const spec = runtimeSpec({ config: imageConfig, rootfs });
    assert.deepEqual(spec.mounts.map((m) => m.destination), reference.mounts.map((m) => m.destination));
    assert.deepEqual(spec.linux.namespaces.map((n) => n.type).sort(), reference.linux.namespaces.map((n) => n.type).sort());
    for (const p of reference.linux.maskedPaths) assert.ok(spec.linux.maskedPaths.includes(p), p);
    assert.deepEqual(spec.linux.readonlyPaths, reference.linux.readonlyPaths);
    assert.equal(spec.root.path, rootfs);
    assert.equal(spec.process.terminal, false);
    assert.deepEqual(spec.process.args, ['/bin/bash']);
    assert.equal(spec.process.cwd, '/');
  });

  void test('env: default PATH when the image has none, TERM only with a tty, later entries win', () => {
    const spec = runtimeSpec({ config: withConfig({ Env: ['A=1', 'B=2', 'A=3'] }), rootfs, hostname: 'h', tty: true, env: ['B=4'] });
    assert.deepEqual(spec.process.env, ['A=3', 'B=4', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOSTNAME=h', 'TERM=xterm', 'HOME=/root']);
    assert.equal(spec.process.terminal, true);
    assert.throws(() => runtimeSpec({ config: imageConfig, rootfs, env: ['NOEQUALS'] }), /KEY=VALUE/);
  });

  void test('nothing to run is a typed error', () => {
    assert.throws(() => runtimeSpec({ config: withConfig({ Cmd: [], Entrypoint: undefined }), rootfs }),
      (e: unknown) => isCowshedError(e) && e.code === 'EINVAL' && /no Entrypoint or Cmd/.test(e.message));
  });

  void test('a bad hostname or relative rootfs is refused', () => {
    assert.throws(() => runtimeSpec({ config: imageConfig, rootfs, hostname: 'a b' }), /invalid hostname/);
    assert.throws(() => runtimeSpec({ config: imageConfig, rootfs: 'rel/rootfs' }), /absolute/);
  });
});

void describe('resolveUser reads the image\'s passwd and group, never the host\'s', () => {
  let fake: string;
  void before(async () => {
    fake = join(work, 'fake-rootfs');
    await mkdir(join(fake, 'etc'), { recursive: true });
    await mkdir(join(fake, 'data'));
    await writeFile(join(fake, 'data', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nmoo:x:1000:1000::/home/moo:/bin/sh\nbad:x:notanumber:1::/:/bin/sh\n');
    await writeFile(join(fake, 'etc', 'group'), 'root:x:0:\nmoo:x:1000:\nwheel:x:10:root,moo\nstaff:x:50:moo\n');
    // An absolute symlink must resolve inside the rootfs, not on the host.
    await symlink('/data/../data/passwd', join(fake, 'etc', 'passwd'));
  });

  void test('names, numbers and groups', () => {
    assert.deepEqual(resolveUser(fake, 'moo'), { uid: 1000, gid: 1000, additionalGids: [10, 50], home: '/home/moo' });
    assert.deepEqual(resolveUser(fake, ''), { uid: 0, gid: 0, additionalGids: [10], home: '/root' });
    assert.deepEqual(resolveUser(fake, '1000:50'), { uid: 1000, gid: 50, additionalGids: [], home: '/home/moo' });
    assert.deepEqual(resolveUser(fake, 'moo:wheel'), { uid: 1000, gid: 10, additionalGids: [], home: '/home/moo' });
    assert.deepEqual(resolveUser(fake, '4242'), { uid: 4242, gid: 0, additionalGids: [], home: '/' });
  });

  void test('unknown names are refused; the host\'s users are not consulted', () => {
    // "daemon" exists on the host (and in Debian images) but not in this image.
    assert.throws(() => resolveUser(fake, 'daemon'), /user "daemon" not found in the image's \/etc\/passwd/);
    assert.throws(() => resolveUser(fake, 'moo:nogroup'), /group "nogroup" not found/);
    assert.throws(() => resolveUser(fake, 'bad'), /not found/);
    assert.throws(() => resolveUser(fake, '99999999999'), /out of range/);
    assert.throws(() => resolveUser(join(work, 'no-rootfs'), 'moo'), /no \/etc\/passwd/);
  });

  void test('a symlink to a name that is not UTF-8 is followed byte for byte', async () => {
    const latin = join(work, 'latin1-rootfs');
    const at = (rel: string): Buffer => Buffer.concat([Buffer.from(latin), Buffer.from(rel, 'latin1')]);
    await mkdir(at('/etc'), { recursive: true });
    await mkdir(at('/donn\xe9es'));
    await writeFile(at('/donn\xe9es/passwd'), 'moo:x:1000:1000::/home/moo:/bin/sh\n');
    await symlink(Buffer.from('/donn\xe9es/passwd', 'latin1'), at('/etc/passwd'));
    assert.deepEqual(resolveUser(latin, 'moo'), { uid: 1000, gid: 1000, additionalGids: [], home: '/home/moo' });
  });

  void test('a symlink loop is a typed error, not a hang', async () => {
    const loop = join(work, 'loop-rootfs');
    await mkdir(join(loop, 'etc'), { recursive: true });
    await symlink('/etc/passwd', join(loop, 'etc', 'passwd'));
    assert.throws(() => resolveUser(loop, 'moo'), (e: unknown) => isCowshedError(e) && e.code === 'EHOSTILE');
  });
});
