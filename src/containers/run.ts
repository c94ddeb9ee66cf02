// run: create a container, write its OCI runtime bundle next to it, run it
// with runc, record how it ended, and remove it afterwards with --rm.
// Volumes, bind mounts and tmpfs (src/volumes/) are prepared between the
// create and the start: recorded with the container, their destinations
// resolved inside its root, new volumes filled from the image (copy-up).
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { join, posix } from 'node:path';
import type { Store } from '../store/store.ts';
import { createContainer, removeContainer } from './containers.ts';
import { containerPaths, verifyImage } from '../drivers/composefs.ts';
import { readImageFile, runtimeSpec, writeBundle } from './bundle.ts';
import { runContainer, runtimeId, type RuntimeName, type RunContainerResult } from './runtime.ts';
import type { MountRequest } from '../volumes/mounts.ts';
import { CowshedError } from '../util/errors.ts';

export interface RunOptions {
  name?: string;
  /** Replaces the image's Cmd (the Entrypoint stays first), as podman run does. */
  args?: string[];
  env?: string[];
  rm?: boolean;
  tty?: boolean;
  /** -i: pass our stdin to the container (otherwise it reads /dev/null, as with podman). */
  interactive?: boolean;
  /** Re-hash the image and its objects before running (no kernel fs-verity here). */
  verify?: boolean;
  /** -v, --mount, --tmpfs (parsed by src/volumes/mounts.ts). */
  mounts?: MountRequest[];
  /** -u: name or uid[:gid], resolved in the image's /etc/passwd and /etc/group. */
  user?: string;
  /** -w: working directory; must exist in the container (podman 4). */
  workdir?: string;
  /** --entrypoint: replaces the image's Entrypoint and drops its Cmd. */
  entrypoint?: string[];
  /** --read-only: the root is mounted read-only; volumes, binds and tmpfs stay writable. */
  readOnly?: boolean;
  /** With readOnly: tmpfs on /tmp, /var/tmp, /run (default true, as podman --read-only-tmpfs). */
  readOnlyTmpfs?: boolean;
  runtime?: RuntimeName;
  stdio?: 'inherit' | 'pipe';
  signal?: AbortSignal;
}

export interface RunResult { id: string; name: string; exitCode: number; stdout?: Buffer; stderr?: Buffer }

export async function runImage(store: Store, imageRef: string, opts: RunOptions = {}): Promise<RunResult> {
  const image = store.imageRecord(imageRef);
  if (opts.verify) await verifyImage(store, image.id, image.composefs);
  const c = await createContainer(store, imageRef, { name: opts.name });
  let result: RunContainerResult | undefined;
  const anonymous: string[] = [];
  try {
    const workdir = opts.workdir ?? image.config.config?.WorkingDir;
    const mountsLib = opts.mounts?.length || workdir ? await import('../volumes/mounts.ts') : undefined;
    const prepared = opts.mounts?.length ? mountsLib!.prepareMounts(store, c.id, c.rootfs, opts.mounts) : [];
    for (const p of prepared) if (p.anonymous) anonymous.push(p.volume!);
    if (workdir) checkWorkdir(c.rootfs, workdir, opts.workdir !== undefined, prepared.map((p) => p.oci.destination), mountsLib!.resolveInContainer);
    const spec = runtimeSpec({
      config: image.config, rootfs: c.rootfs, args: opts.args, env: opts.env, tty: opts.tty, hostname: c.id.slice(0, 12),
      user: opts.user, workdir: opts.workdir, entrypoint: opts.entrypoint,
      readonlyRootfs: opts.readOnly, readonlyTmpfs: opts.readOnlyTmpfs, mounts: prepared.map((p) => p.oci),
    });
    if (opts.user !== undefined && !opts.readOnly) {
      // After the spec: podman resolves the user's groups before it adds the entries.
      const home = workdir ? posix.resolve('/', workdir) : '/';
      const added = addUserEntries(c.rootfs, opts.user, home, mountsLib?.resolveInContainer ?? (await import('../volumes/mounts.ts')).resolveInContainer);
      const givenHome = [...(image.config.config?.Env ?? []), ...(opts.env ?? [])].some((e) => e.startsWith('HOME='));
      if (added && !givenHome) spec.process.env = spec.process.env.map((e) => (e.startsWith('HOME=') ? `HOME=${home}` : e));
    }
    const bundle = join(containerPaths(store, c.id).dir, 'bundle');
    await writeBundle(bundle, spec);
    store.db.tx(() => store.db.run("UPDATE containers SET state = 'running' WHERE id = ?", c.id));
    try {
      result = await runContainer({
        bundle, id: runtimeId(c.id), runtime: opts.runtime, stdio: opts.stdio, signal: opts.signal,
        stdin: opts.interactive || opts.tty ? 'inherit' : 'null',
      });
    } finally {
      store.db.tx(() => store.db.run("UPDATE containers SET state = 'exited', exit_code = ? WHERE id = ?", result?.exitCode ?? null, c.id));
    }
  } finally {
    if (opts.rm) {
      removeContainer(store, c.id, { force: true });
      // podman run --rm removes the anonymous volumes it made, not named ones.
      if (anonymous.length) {
        const { removeVolume } = await import('../volumes/volumes.ts');
        for (const v of anonymous) { try { removeVolume(store, v); } catch { /* another container uses it now */ } }
      }
    }
  }
  return { id: c.id, name: c.name, exitCode: result!.exitCode, stdout: result!.stdout, stderr: result!.stderr };
}

/**
 * The working directory as podman 4 treats it: -w DIR must exist in the
 * container (or be on one of its mounts), else the run fails with 126; an
 * image WorkingDir that is missing is made (root-owned, 0755). Either is
 * looked up inside the container's root: a symlink the image plants cannot
 * make us look at, or create directories on, the host.
 */
function checkWorkdir(rootfs: string, workdir: string, explicit: boolean, mounted: string[], resolveIn: (root: string, p: string) => { path: string; host: string; exists: boolean }): void {
  const r = resolveIn(rootfs, workdir);
  if (mounted.some((m) => r.path === m || r.path.startsWith(m + '/'))) return;
  if (r.exists) {
    if (!lstatSync(r.host).isDirectory()) throw new CowshedError('EINVAL', `the working directory ${workdir} exists in the container but is not a directory`, { exitCode: 126 });
    return;
  }
  if (explicit) throw new CowshedError('ENOENT', `the working directory ${workdir} does not exist in the container`, { exitCode: 126 });
  mkdirSync(r.host, { recursive: true, mode: 0o755 });
}

type Resolver = (root: string, p: string) => { path: string; host: string; exists: boolean };

/**
 * podman's --passwd (on by default): -u with a uid the image's /etc/passwd
 * lacks adds "UID:*:UID:GID:container user:WORKDIR:/bin/sh" to it, and a
 * numeric group /etc/group lacks gets "GID:x:GID:USER", so that `id` and
 * programs asking for the user's name or home work. Written in the
 * container's own root (its diff shows it, as podman's does).
 */
function addUserEntries(rootfs: string, user: string, home: string, resolveIn: Resolver): boolean {
  const [u, g] = user.split(':', 2) as [string, string | undefined];
  const numeric = (x: string | undefined): boolean => x !== undefined && /^[0-9]+$/.test(x);
  const passwd = readImageFile(rootfs, '/etc/passwd');
  if (passwd === undefined) return false;
  let added = false;
  const has = (text: string, field: number, value: string): boolean => text.split('\n').some((l) => l.split(':')[field] === value);
  let gid = g ?? '0';
  if (numeric(u) && !has(passwd, 2, String(Number(u)))) {
    if (g !== undefined && !numeric(g)) {
      const grp = readImageFile(rootfs, '/etc/group') ?? '';
      gid = grp.split('\n').find((l) => l.split(':')[0] === g)?.split(':')[2] ?? gid;
    }
    append(rootfs, '/etc/passwd', `${Number(u)}:*:${Number(u)}:${gid}:container user:${home}:/bin/sh\n`, resolveIn);
    added = true;
  }
  const group = g ?? u;
  if (numeric(group)) {
    const groups = readImageFile(rootfs, '/etc/group');
    if (groups !== undefined && !has(groups, 2, String(Number(group)))) append(rootfs, '/etc/group', `${Number(group)}:x:${Number(group)}:${u}\n`, resolveIn);
  }
  return added;
}

function append(rootfs: string, path: string, line: string, resolveIn: Resolver): void {
  const r = resolveIn(rootfs, path);
  if (!r.exists) return;
  const fd = openSync(r.host, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) return;
    writeSync(fd, line);
  } finally {
    closeSync(fd);
  }
}
