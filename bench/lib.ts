// Benchmark harness: runs cowshed and its anchors on the same input, in the
// same process run, alternating per iteration, and reports medians and the
// ratio cowshed / anchor (machines here are noisy; ratios hold, absolute
// times drift). See ../shared/design/BENCH.md (beside the repository).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { basename, dirname, join } from 'node:path';

export type Role = 'cowshed' | 'anchor' | 'reference';

/** One side of a benchmark. Only `run` is timed. */
export interface Contender {
  name: string;
  /** 'cowshed' is measured; 'anchor' is compared against; 'reference' is shown without a ratio (limits, floors). */
  role: Role;
  /** Returns why this contender cannot run here (tool not installed), or undefined. Checked once. */
  skip?: () => string | undefined | Promise<string | undefined>;
  /** Once, before the first iteration (untimed). */
  before?: () => Promise<void>;
  /** Before each iteration (untimed): fresh store, fresh filesystem... */
  prepare?: () => Promise<void>;
  run: () => Promise<void>;
  /** After each iteration (untimed). */
  cleanup?: () => Promise<void>;
  /** Once, after the last iteration (untimed), also after a failure. */
  after?: () => Promise<void>;
}

export interface MeasureOptions {
  runs: number;
  warmup: number;
  /** Bytes processed per run: adds a throughput column. */
  bytes?: number;
}

export interface ContenderResult {
  name: string;
  role: Role;
  /** 'ok', or 'skipped: <why>', or 'failed: <error>'. */
  status: string;
  timesMs: number[];
  medianMs?: number;
  minMs?: number;
  bytes?: number;
}

export interface BenchResult {
  name: string;
  contenders: ContenderResult[];
  notes: string[];
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const firstLine = (e: unknown): string => {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n').find((l) => l.trim() !== '')?.trim().slice(0, 200) ?? 'unknown error';
};

/**
 * Runs every contender warmup + runs times. Iterations alternate: each
 * iteration runs all contenders, starting with a different one each time, so
 * that drift in the machine's speed hits all of them alike. A contender that
 * fails stops (its row says why); the others carry on.
 */
export async function measure(name: string, contenders: Contender[], opts: MeasureOptions): Promise<BenchResult> {
  const results: ContenderResult[] = contenders.map((c) => ({ name: c.name, role: c.role, status: 'ok', timesMs: [], bytes: opts.bytes }));
  const live: boolean[] = [];
  for (const [i, c] of contenders.entries()) {
    let why: string | undefined;
    try { why = await c.skip?.(); } catch (e) { why = firstLine(e); }
    if (why) { results[i]!.status = `skipped: ${why}`; live.push(false); continue; }
    try { await c.before?.(); live.push(true); } catch (e) { results[i]!.status = `failed: ${firstLine(e)}`; live.push(false); }
  }
  const total = opts.warmup + opts.runs;
  for (let iter = 0; iter < total; iter++) {
    for (let k = 0; k < contenders.length; k++) {
      const i = (iter + k) % contenders.length;
      if (!live[i]) continue;
      const c = contenders[i]!;
      const r = results[i]!;
      try {
        await c.prepare?.();
        const t0 = performance.now();
        await c.run();
        const ms = performance.now() - t0;
        if (iter >= opts.warmup) r.timesMs.push(ms);
      } catch (e) {
        r.status = `failed: ${firstLine(e)}`;
        live[i] = false;
      } finally {
        try { await c.cleanup?.(); } catch (e) {
          if (r.status === 'ok') r.status = `failed: cleanup: ${firstLine(e)}`;
          live[i] = false;
        }
      }
    }
    process.stderr.write(`  ${name}: iteration ${iter + 1}/${total}\n`);
  }
  for (const [i, c] of contenders.entries()) {
    try { await c.after?.(); } catch (e) {
      process.stderr.write(`  ${name}/${c.name}: after: ${firstLine(e)}\n`);
    }
    const r = results[i]!;
    if (r.status === 'ok' && r.timesMs.length > 0) {
      r.medianMs = median(r.timesMs);
      r.minMs = Math.min(...r.timesMs);
    }
  }
  const result: BenchResult = { name, contenders: results, notes: [] };
  // Progress goes to stderr; the whole report goes to stdout at the end.
  process.stderr.write(formatTable([result]));
  return result;
}

const fmtMs = (ms: number | undefined): string =>
  ms === undefined ? '' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 2 : 0)} ms`;

export const throughputMBs = (r: ContenderResult): number | undefined =>
  r.bytes && r.medianMs ? r.bytes / 1e6 / (r.medianMs / 1000) : undefined;

/** Markdown table rows for these benchmarks, notes below each. */
export function formatTable(results: BenchResult[]): string {
  const lines = [
    '| benchmark | contender | median | min | runs | MB/s | cowshed / this | status |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  const notes: string[] = [];
  for (const b of results) {
    const cow = b.contenders.find((c) => c.role === 'cowshed' && c.medianMs !== undefined);
    for (const c of b.contenders) {
      const mbs = throughputMBs(c);
      const ratio = c.role === 'anchor' && cow?.medianMs && c.medianMs ? `${(cow.medianMs / c.medianMs).toFixed(2)} ×` : '';
      const label = c.role === 'cowshed' ? `**${c.name}**` : c.role === 'reference' ? `${c.name} (reference)` : c.name;
      lines.push(`| ${b.name} | ${label} | ${fmtMs(c.medianMs)} | ${fmtMs(c.minMs)} | ${c.timesMs.length} | ` +
        `${mbs === undefined ? '' : mbs.toFixed(0)} | ${ratio} | ${c.status.replaceAll('|', '/')} |`);
    }
    for (const n of b.notes) notes.push(`- ${b.name}: ${n}`);
  }
  return lines.join('\n') + '\n' + (notes.length ? '\n' + notes.join('\n') + '\n' : '') + '\n';
}

function gitCommit(repo: string): string {
  try {
    const head = readFileSync(join(repo, '.git/HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head.slice(0, 12);
    const ref = head.slice(5);
    const p = join(repo, '.git', ref);
    if (existsSync(p)) return readFileSync(p, 'utf8').trim().slice(0, 12);
    const packed = readFileSync(join(repo, '.git/packed-refs'), 'utf8').split('\n').find((l) => l.endsWith(` ${ref}`));
    return packed?.slice(0, 12) ?? 'unknown';
  } catch { return 'unknown'; }
}

/** Writes the full report to bench/results/<date>.md; returns its path and text. */
export async function writeReport(repo: string, results: BenchResult[], extra: string[]): Promise<{ path: string; body: string }> {
  const now = new Date();
  const stamp = now.toISOString().replace(/:/g, '-').replace(/\..*/, 'Z');
  const path = join(repo, 'bench/results', `${stamp}.md`);
  const cpu = cpus();
  const body = [
    `# cowshed benchmarks, ${now.toISOString()}`,
    '',
    `commit ${gitCommit(repo)}; Node ${process.version}; kernel ${release()}; ${cpu.length} × ${cpu[0]?.model ?? 'cpu'}; ` +
      `${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; load average at the end ${loadavg().map((x) => x.toFixed(1)).join(' / ')} (1 / 5 / 15 min)`,
    '',
    'Medians over alternating runs; "cowshed / this" is cowshed\'s median over the anchor\'s (below 1 = cowshed faster). ' +
      'Absolute times drift on these shared machines; compare ratios.',
    '',
    formatTable(results),
    ...extra,
    '',
  ].join('\n').replace(/\n{3,}/g, '\n\n');
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, body);
  return { path, body };
}

// ---------------------------------------------------------------------------
// Processes

export interface ExecResult { code: number; stdout: string; stderr: string }

/** Runs a command; rejects with its last stderr line when it exits non-zero. */
export function exec(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let errLen = 0;
    child.stdout.on('data', (d: Buffer) => { out.push(d); });
    child.stderr.on('data', (d: Buffer) => { if (errLen < 65536) { err.push(d); errLen += d.length; } });
    child.on('error', (e) => { reject(new Error(`${cmd}: ${e.message}`)); });
    child.on('close', (code, signal) => {
      const res = { code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (res.code !== 0 && !opts.allowFail) {
        const what = `${basename(cmd)}${args[0] ? ` ${basename(args[0])}` : ''}`;
        reject(new Error(`${what} exited ${res.code}: ${errorLine(res.stderr) ?? `signal ${signal}`}`));
      } else resolve(res);
    });
  });
}

/**
 * The line of a failed command's stderr that says what went wrong: cowshed's
 * own one-line error, or the Error line of a Node crash (not its stack or the
 * trailing "Node.js v24" banner), else the last line.
 */
function errorLine(stderr: string): string | undefined {
  const lines = stderr.split('\n').map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('at ') && !/^Node\.js v\d/.test(l));
  return lines.find((l) => l.startsWith('cowshed:')) ?? lines.find((l) => /^\w*Error\b|\bError:/.test(l)) ?? lines.at(-1);
}

/** The command's path, or undefined when it is not installed. */
export async function which(cmd: string): Promise<string | undefined> {
  const r = await exec('sh', ['-c', `command -v ${cmd}`], { allowFail: true });
  return r.code === 0 ? r.stdout.trim() : undefined;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

/** Why a contender cannot run (its tool is not installed), for Contender.skip. */
export const needTool = (cmd: string, pkg?: string) => async (): Promise<string | undefined> =>
  (await which(cmd)) ? undefined : `${cmd} not installed${pkg ? ` (${pkg})` : ''}`;

/** podman with all its state in a throwaway directory. */
export const podman = (dir: string, ...args: string[]): Promise<ExecResult> =>
  exec('podman', ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--tmpdir', join(dir, 'tmp'),
    '--storage-driver', 'overlay', '--events-backend', 'none', ...args]);

/** Takes down a podman side on its scratch filesystem: its containers (stopped and removed), then the filesystem. */
export async function disposePodmanScratch(fs: ScratchFs): Promise<void> {
  await podman(fs.path, 'rm', '-a', '-f').catch(() => undefined);
  await fs.dispose();
}

/**
 * One named benchmark of `npm run bench`: one or more result tables, and
 * optionally its own markdown section for the report (filled by run()).
 */
export interface Benchmark { name: string; needsImage: boolean; run: () => Promise<BenchResult[]>; table?: () => string[] }

// ---------------------------------------------------------------------------
// Fresh filesystems

/**
 * A freshly made ext4 filesystem on a loop device (no journal, like /tmp and
 * the work disk here), so that timed file creation never lands right after a
 * big delete on a shared filesystem (the ext4 inode allocator stays slow for
 * minutes after one; see BENCH.md). Falls back to a temp dir without root.
 */
export class ScratchFs {
  readonly path: string;
  private readonly image: string | undefined;
  private constructor(path: string, image: string | undefined) { this.path = path; this.image = image; }

  /**
   * A sparse image of sizeGiB; btrfs for the snapshot anchors, xfs (reflink=1)
   * for reflink copies (falls back to a plain dir without root, like ext4).
   */
  static async create(sizeGiB = 4, fsType: 'ext4' | 'btrfs' | 'xfs' = 'ext4'): Promise<ScratchFs> {
    const base = await mkdtemp('/var/tmp/cowshed-bench-');
    if (!isRoot()) return new ScratchFs(base, undefined);
    const image = `${base}.img`;
    const mnt = join(base, 'mnt');
    await mkdir(mnt);
    await exec('truncate', ['-s', `${sizeGiB}G`, image]);
    try {
      if (fsType === 'btrfs') {
        await exec('mkfs.btrfs', ['-q', '-f', image]);
        await exec('mount', ['-o', 'loop', image, mnt]);
      } else if (fsType === 'xfs') {
        await exec('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', image]);
        await exec('mount', ['-o', 'loop', image, mnt]);
      } else {
        await exec('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', '-E', 'lazy_itable_init=1,nodiscard', image]);
        // noinit_itable: no background thread zeroing inode tables during the timed runs.
        await exec('mount', ['-o', 'loop,noinit_itable', image, mnt]);
      }
    } catch (e) {
      await rm(image, { force: true });
      await rm(base, { recursive: true, force: true });
      throw e;
    }
    return new ScratchFs(mnt, image);
  }

  /** Unmounts whatever a tool left mounted below it, then the filesystem; removes the image. */
  async dispose(): Promise<void> {
    const base = this.image ? dirname(this.path) : this.path;
    if (this.image) {
      for (const m of mountsUnder(this.path)) await exec('umount', ['-l', m], { allowFail: true });
      const r = await exec('umount', [this.path], { allowFail: true });
      if (r.code !== 0) await exec('umount', ['-l', this.path], { allowFail: true });
      await rm(this.image, { force: true });
    }
    await rm(base, { recursive: true, force: true });
  }
}

/** Mount points strictly below dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    const path = mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (path.startsWith(dir + '/')) out.push(path);
  }
  return out.sort((a, b) => b.length - a.length);
}

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The package as users get it: `npm pack`, `npm install -g` into a temporary prefix; `cowshed` on env's PATH. */
export async function installPackage(repo: string): Promise<{ env: NodeJS.ProcessEnv; node: string; dispose: () => Promise<void> }> {
  const work = await mkdtemp('/var/tmp/cowshed-bench-pkg-');
  process.stderr.write('bench: npm pack and npm install -g into a temporary prefix\n');
  const packed = await exec('npm', ['pack', '--json', '--pack-destination', work], { cwd: repo });
  const tarball = join(work, (JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as Array<{ filename: string }>)[0]!.filename);
  const prefix = join(work, 'prefix');
  await exec('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: work });
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${join(prefix, 'bin')}:${SYSTEM_PATH}` };
  delete env.NODE_OPTIONS;
  const node = join(prefix, 'lib', 'node_modules', 'cowshed', 'node_modules', 'node', 'bin', 'node');
  return { env, node, dispose: () => rm(work, { recursive: true, force: true }) };
}
