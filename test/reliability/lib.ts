// Shared pieces of the reliability campaign: a seeded PRNG, the CLI run as
// a child process that can be killed at a chosen moment, and store probes.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, cowshed } from '../helpers/cli.ts';

const MAIN = join(REPO, 'bin', 'cowshed.js');

/** mulberry32: small, seedable, good enough to spread kill delays and pick cases. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface AsyncCliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** True when the kill landed while the process was still running. */
  killed: boolean;
  timedOut: boolean;
}

/**
 * Runs `cowshed --store STORE ...args`; with killAfterMs, SIGKILLs its whole
 * process group then (children such as mount or runc die with it, as in a
 * power cut). timeoutMs: a hang is killed too and reported as timedOut.
 */
export function cowshedAsync(store: string, args: string[], opts: { killAfterMs?: number; timeoutMs?: number } = {}): Promise<AsyncCliResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [MAIN, '--store', store, ...args], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let exited = false;
    let killed = false;
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const killGroup = (): void => {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
    };
    const killTimer = opts.killAfterMs === undefined ? undefined : setTimeout(() => {
      if (!exited) { killed = true; killGroup(); }
    }, opts.killAfterMs);
    const hangTimer = setTimeout(() => { if (!exited) { timedOut = true; killGroup(); } }, opts.timeoutMs ?? 300_000);
    child.on('error', reject);
    child.on('exit', () => { exited = true; });
    child.on('close', (status, signal) => {
      clearTimeout(killTimer);
      clearTimeout(hangTimer);
      resolve({ status, signal, stdout, stderr, ms: performance.now() - started, killed: killed && signal === 'SIGKILL', timedOut });
    });
  });
}

export interface ImageRow { name: string; id: string }

/** name → image id, from `images --json`. */
export function listImages(store: string): Map<string, string> {
  const r = cowshed(store, 'images', '--json');
  if (r.status !== 0) throw new Error(`images --json failed: ${r.stderr}`);
  const rows = JSON.parse(r.stdout) as Record<string, unknown>[];
  const out = new Map<string, string>();
  for (const row of rows) {
    const id = String(row.id ?? row.ID ?? '');
    const names = (row.names ?? row.tags ?? (row.name ? [row.name] : [])) as string[];
    for (const n of names) out.set(n, id);
  }
  return out;
}

export function tmpEntries(store: string): string[] {
  try { return readdirSync(join(store, 'tmp')); } catch { return []; }
}

/**
 * fsck; when it is not clean, fsck --repair and fsck again. Returns what
 * happened, and the problem lines of the first run.
 */
export function fsckOrRepair(store: string): { clean: boolean; repaired: boolean; problems: string[]; detail: string } {
  const first = cowshed(store, 'fsck');
  if (first.status === 0) return { clean: true, repaired: false, problems: [], detail: '' };
  const problems = (first.stdout + first.stderr).trim().split('\n').filter((l) => l && !/^checked /.test(l));
  const rep = cowshed(store, 'fsck', '--repair');
  const again = cowshed(store, 'fsck');
  return { clean: again.status === 0, repaired: true, problems, detail: `repair exit ${rep.status}: ${rep.stdout}${rep.stderr}\nfsck after repair exit ${again.status}: ${again.stdout}${again.stderr}` };
}

/** Mounts an image, reads `file` inside it, unmounts; returns the file's bytes. */
export function mountAndRead(store: string, image: string, file: string, verify = false): Buffer {
  const r = cowshed(store, 'mount', ...(verify ? ['--verify'] : []), image);
  if (r.status !== 0) throw new Error(`mount ${image} failed: ${r.stderr.trim()}`);
  const root = r.stdout.trim().split('\n').pop()!;
  try {
    return readFileSync(join(root, file));
  } finally {
    cowshed(store, 'umount', image);
  }
}

/** A one-line message on stderr (`cowshed: …`), as the CLI promises for expected failures. */
export function isOneLineError(stderr: string): boolean {
  const lines = stderr.trim().split('\n').filter((l) => l.trim() !== '');
  return lines.length === 1 && lines[0].startsWith('cowshed: ');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * What a crash can leave behind that fsck does not look at: container
 * directories without a container, and container mounts of containers the
 * store does not know.
 */
export function strayContainerState(store: string): string[] {
  const r = cowshed(store, 'ps', '-a', '--json');
  if (r.status !== 0) return [`ps -a --json failed: ${r.stderr.trim()}`];
  const ids = new Set((JSON.parse(r.stdout) as { id: string }[]).map((c) => c.id));
  const out: string[] = [];
  let dirs: string[] = [];
  try { dirs = readdirSync(join(store, 'containers')); } catch { /* none yet */ }
  for (const d of dirs) if (!ids.has(d)) out.push(`containers/${d} belongs to no container`);
  const prefix = join(store, 'containers') + '/';
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp?.startsWith(prefix)) continue;
    const id = mp.slice(prefix.length).split('/')[0];
    if (!ids.has(id)) out.push(`${mp} is mounted for no container`);
  }
  return out;
}

/**
 * Mounts of images the store no longer has: an image's shared mount
 * (mounts/<first 16 hex of its composefs digest>/…) must belong to a listed
 * image or to a container's image.
 */
export function orphanImageMounts(store: string): string[] {
  const images = JSON.parse(cowshed(store, 'images', '--json').stdout || '[]') as { composefs: string }[];
  const containers = JSON.parse(cowshed(store, 'ps', '-a', '--json').stdout || '[]') as { composefs: string }[];
  const known = new Set([...images, ...containers].map((i) => i.composefs.slice(0, 16)));
  const prefix = join(store, 'mounts') + '/';
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp?.startsWith(prefix) && !known.has(mp.slice(prefix.length).split('/')[0])) out.push(`${mp} is mounted for an image the store does not have`);
  }
  return out;
}
