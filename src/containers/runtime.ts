// Runs an OCI bundle with runc (or crun) in the foreground: the container's
// stdout, stderr and exit code pass through. The runtime's own errors are
// told apart from the container's by the runtime's JSON log file: a failure
// of the runtime logs an error entry, a container exiting non-zero does not.
// The runtime's state is deleted afterwards whatever happened.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fsPromises, os } from '../util/builtins.ts';
import { join, resolve } from 'node:path';
import { CowshedError, errno, fail } from '../util/errors.ts';

export type RuntimeName = 'runc' | 'crun';

export interface RunContainerOptions {
  /** Directory holding config.json (see writeBundle). */
  bundle: string;
  /** The runtime's container id: letters, digits, _ + - . (unique while it runs). */
  id: string;
  runtime?: RuntimeName;
  /** 'inherit' (default): the container uses our stdin/stdout/stderr. 'pipe': stdin is /dev/null, output is collected. */
  stdio?: 'inherit' | 'pipe';
  /** With stdio 'inherit': 'null' gives the container /dev/null as stdin (podman run without -i). Default 'inherit'. */
  stdin?: 'inherit' | 'null';
  /** Abort stops the container: SIGTERM, then SIGKILL after a grace period. */
  signal?: AbortSignal;
  /** Seconds between SIGTERM and SIGKILL when aborted (default 10, like podman stop). */
  stopTimeout?: number;
}

export interface RunContainerResult {
  /** The container's exit code; 128+N when its process died of signal N. */
  exitCode: number;
  /** Collected output with stdio 'pipe' (kept in memory: use 'inherit' for large output). */
  stdout?: Buffer;
  stderr?: Buffer;
}

const ID_RE = /^[A-Za-z0-9_+.-]{1,1024}$/;

/** Runs the bundle and waits for the container to exit. Throws ETOOL when the runtime itself fails. */
export async function runContainer(opts: RunContainerOptions): Promise<RunContainerResult> {
  const runtime = opts.runtime ?? 'runc';
  const bundle = resolve(opts.bundle);
  if (!ID_RE.test(opts.id) || opts.id === '.' || opts.id === '..') {
    fail('EINVAL', `invalid container id ${JSON.stringify(opts.id)} for ${runtime}: letters, digits, _ + - . only`);
  }
  if (!existsSync(join(bundle, 'config.json'))) fail('ENOENT', `no config.json in bundle ${bundle}`);
  const pipe = opts.stdio === 'pipe';
  // runc in the foreground attaches a container terminal to its own stdin.
  if (await wantsTerminal(join(bundle, 'config.json')) && (pipe || !process.stdin.isTTY)) {
    fail('EINVAL', 'the container wants a terminal (tty) but stdin is not one: run it without a tty');
  }
  opts.signal?.throwIfAborted();
  // Never take over (and later delete) a container someone else is running under this id.
  if (runtimeHasContainer(runtime, opts.id)) fail('EEXIST', `${runtime} already has a container with id ${opts.id}`);

  // Beside the bundle (in the container's directory): a killed run leaves nothing in /tmp.
  const logDir = await fsPromises().mkdtemp(join(bundle, 'runtime-log-'));
  const logPath = join(logDir, 'log.json');
  const globalArgs = runtime === 'crun' ? [`--log=file:${logPath}`, '--log-format=json'] : ['--log', logPath, '--log-format', 'json'];
  const removeListeners: (() => void)[] = [];
  let started = false;
  try {
    const child = spawn(runtime, [...globalArgs, 'run', '--bundle', bundle, opts.id], {
      stdio: pipe ? ['ignore', 'pipe', 'pipe'] : [opts.stdin === 'null' ? 'ignore' : 'inherit', 'inherit', 'inherit'],
    });
    started = true;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));

    // runc forwards the signals it receives to the container's process.
    // With a terminal on stdin, ^C already reaches runc (same process
    // group), so SIGINT is forwarded only when there is none: no double ^C.
    const forward = (sig: NodeJS.Signals): void => { child.kill(sig); };
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      if (sig === 'SIGINT' && !pipe && process.stdin.isTTY) continue;
      process.on(sig, forward);
      removeListeners.push(() => process.off(sig, forward));
    }
    if (opts.signal) {
      let killTimer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        child.kill('SIGTERM');
        killTimer = setTimeout(() => {
          spawnSync(runtime, ['kill', opts.id, 'KILL'], { stdio: 'ignore' });
        }, (opts.stopTimeout ?? 10) * 1000);
      };
      opts.signal.addEventListener('abort', onAbort, { once: true });
      removeListeners.push(() => { opts.signal!.removeEventListener('abort', onAbort); clearTimeout(killTimer); });
    }

    const exitCode = await new Promise<number>((resolveExit, rejectExit) => {
      child.once('error', (e) => {
        if (errno(e) === 'ENOENT') {
          rejectExit(new CowshedError('ETOOL', `${runtime} not found: install it (apt-get install ${runtime})`, { cause: e }));
        } else {
          rejectExit(new CowshedError('ETOOL', `cannot start ${runtime}: ${e.message}`, { cause: e }));
        }
      });
      child.once('close', (code, sig) => {
        resolveExit(code ?? 128 + (sig ? (os().constants.signals[sig] ?? 0) : 0));
      });
    });

    if (exitCode !== 0) {
      const failure = await lastLoggedError(logPath);
      if (failure !== undefined) throw runtimeError(runtime, failure);
    }
    const result: RunContainerResult = { exitCode };
    if (pipe) {
      result.stdout = Buffer.concat(out);
      result.stderr = Buffer.concat(err);
    }
    return result;
  } finally {
    for (const remove of removeListeners) remove();
    // Always: a failed create can leave state behind, a finished run a stopped container.
    if (started) spawnSync(runtime, ['delete', '--force', opts.id], { stdio: 'ignore' });
    await fsPromises().rm(logDir, { recursive: true, force: true });
  }
}

/** The OCI runtime that works on this host (runc preferred), or undefined. */
export function runtimeAvailable(): RuntimeName | undefined {
  if (cachedRuntime === null) {
    cachedRuntime = undefined;
    if (runs('runc')) cachedRuntime = 'runc';
    // crun 1.8 refuses to start containers on a hybrid (v1 + v2) cgroup layout.
    else if (runs('crun') && !hybridCgroups()) cachedRuntime = 'crun';
  }
  return cachedRuntime;
}

let cachedRuntime: RuntimeName | undefined | null = null;

function runs(cmd: string): boolean {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore', timeout: 10_000 });
  return r.error === undefined && r.status === 0;
}

function hybridCgroups(): boolean {
  return existsSync('/sys/fs/cgroup/unified') && !existsSync('/sys/fs/cgroup/cgroup.controllers');
}

/** The runtime's id for a cowshed container. */
export const runtimeId = (containerId: string): string => `cowshed-${containerId.slice(0, 32)}`;

/**
 * Freezes a running container (cgroup freezer) while `fn` runs, as podman
 * commit does by default: what is read is one moment of it. A container
 * that is not running under the runtime (exited, or never run) is left be.
 */
export async function whilePaused<T>(containerId: string, fn: () => Promise<T>): Promise<T> {
  const id = runtimeId(containerId);
  let pausedWith: RuntimeName | undefined;
  for (const runtime of ['runc', 'crun'] as const) {
    const r = spawnSync(runtime, ['pause', id], { stdio: 'ignore', timeout: 30_000 });
    if (r.error === undefined && r.status === 0) { pausedWith = runtime; break; }
  }
  try {
    return await fn();
  } finally {
    if (pausedWith) spawnSync(pausedWith, ['resume', id], { stdio: 'ignore', timeout: 30_000 });
  }
}

/** Whether runc or crun still has the cowshed container (a run killed with its cowshed process leaves it running). */
export function runtimeHasIt(containerId: string): boolean {
  return (['runc', 'crun'] as const).some((r) => runtimeHasContainer(r, runtimeId(containerId)));
}

/**
 * Kills and deletes the runtime's container, if any: `rm -f` of a container
 * whose `cowshed run` was killed must not leave its processes running on a
 * root that is about to be removed.
 */
export function deleteRuntimeContainer(containerId: string): void {
  const id = runtimeId(containerId);
  for (const runtime of ['runc', 'crun'] as const) {
    if (!runtimeHasContainer(runtime, id)) continue;
    const r = spawnSync(runtime, ['delete', '--force', id], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
    if (r.status !== 0) throw new CowshedError('ETOOL', `${runtime} could not stop container ${id}: ${(r.stderr ?? '').trim().split('\n').pop() ?? `exit ${r.status}`}`);
  }
}

function runtimeHasContainer(runtime: RuntimeName, id: string): boolean {
  const r = spawnSync(runtime, ['state', id], { stdio: 'ignore', timeout: 30_000 });
  return r.error === undefined && r.status === 0;
}

async function wantsTerminal(configPath: string): Promise<boolean> {
  try {
    const spec = JSON.parse(await fsPromises().readFile(configPath, 'utf8')) as { process?: { terminal?: unknown } };
    return spec.process?.terminal === true;
  } catch {
    return false;   // unreadable or malformed: the runtime names the problem
  }
}

/** The message of the last error-level entry in the runtime's JSON log. */
async function lastLoggedError(logPath: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await fsPromises().readFile(logPath, 'utf8');
  } catch {
    return undefined;
  }
  let message: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if ((entry.level === 'error' || entry.level === 'fatal') && typeof entry.msg === 'string') message = entry.msg;
    } catch {
      // A partial line from a killed runtime: ignore.
    }
  }
  // runc wraps the cause: "runc run failed: unable to start container process: exec: ...".
  return message?.split('\n').filter((l) => l.trim() !== '').at(-1)
    ?.replace(/^runc run failed: /, '').replace(/^unable to start container process: /, '');
}

function runtimeError(runtime: RuntimeName, cause: string): CowshedError {
  const message = `cannot start the container: ${cause}`;
  // Exit codes as podman/docker use them: 127 command not found, 126 not executable.
  if (/^exec: .*(executable file not found|no such file or directory)/i.test(cause)) {
    return new CowshedError('ETOOL', `${runtime}: ${message}`, { exitCode: 127 });
  }
  if (/^exec: .*permission denied/i.test(cause)) {
    return new CowshedError('ETOOL', `${runtime}: ${message}`, { exitCode: 126 });
  }
  if (runtime === 'crun' && /cgroup/i.test(cause)) {
    return new CowshedError('ETOOL', `crun cannot run containers on this host's cgroup layout (hybrid v1/v2 cgroups), use runc: ${message}`);
  }
  return new CowshedError('ETOOL', `${runtime}: ${message}`);
}
