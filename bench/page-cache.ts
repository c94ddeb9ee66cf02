// Memory, the reason composefs exists (issue 15): N containers (1, 10, 50)
// of one image each read the same ~100 MB of files; how much does the page
// cache grow (`Cached` in /proc/meminfo, caches dropped first)? For every
// cowshed driver on the filesystem it is meant for (composefs, overlay: ext4;
// btrfs: btrfs; vfs: xfs with reflinks) and podman's overlay driver (ext4).
// composefs and overlay containers read the same inodes below (the object
// store's files, the layer's files), so the cache should hold one copy
// whatever N; reflinked copies and btrfs snapshots are separate inodes that
// share extents on disk but each get their own pages.
//
// Every side is set up first with the largest N of containers, mounted; a
// measurement for N drops the caches, waits for the machine's other
// processes to fault their files back in, reads every file of the first N
// containers' roots, and takes the growth of Cached, less the growth over as
// long again reading nothing (the background). Beside it, exact and immune
// to the rest of the machine: the pages resident for the files the side
// stores (fincore over its scratch filesystem). Sides alternate within
// each run, runs repeat (median), so other work on the machine, which also
// moves Cached, hits every side alike. Drops the caches of the whole machine:
// run it alone (`npm run bench page-cache`). The image (400 files of random
// bytes, 100 MiB, no Debian) is built once into the fixture cache.
//
// Report: a table of medians and two SVG line charts (bench/results/page-cache-<stamp>.svg).
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Store, type DriverName } from '../src/store/store.ts';
import { createContainer, listContainers, removeContainer } from '../src/containers/containers.ts';
import { podmanOciRef } from '../test/helpers/cli.ts';
import { type Benchmark, disposePodmanScratch, exec, median, mountsUnder, podman, ScratchFs, which } from './lib.ts';
import { stackedLineCharts } from './plot.ts';

export interface PageCacheOptions { repo: string; cache: string }

type FsType = 'ext4' | 'btrfs' | 'xfs';
interface SideSpec { label: string; driver?: DriverName; fsType: FsType; color: string }

const SIDES: SideSpec[] = [
  { label: 'cowshed composefs (ext4)', driver: 'composefs', fsType: 'ext4', color: '#2e7d32' },
  { label: 'cowshed overlay (ext4)', driver: 'overlay', fsType: 'ext4', color: '#1565c0' },
  { label: 'cowshed btrfs (btrfs snapshots)', driver: 'btrfs', fsType: 'btrfs', color: '#ef6c00' },
  { label: 'cowshed vfs (xfs reflinks)', driver: 'vfs', fsType: 'xfs', color: '#c62828' },
  { label: 'podman overlay (ext4)', fsType: 'ext4', color: '#6a1b9a' },
];
const COUNTS = (process.env.BENCH_PAGE_CACHE_N ?? '1,10,50').split(',').map(Number);
const RUNS = Number(process.env.BENCH_PAGE_CACHE_RUNS ?? 3);
const SETTLE_MS = 2000;
const BACKGROUND_MAX_MS = 10_000;
const FILES = 400;
const MiB = 2 ** 20;
const MB = 1e6;

/** An OCI layout (uncompressed) of one layer: 400 files of random bytes, 100 MiB in all. Built once. */
async function ensureLayout(repo: string, cache: string): Promise<string> {
  const layout = join(cache, 'page-cache-bench-oci');
  if (existsSync(`${layout}.stamp`) && existsSync(join(layout, 'index.json'))) return layout;
  process.stderr.write('bench page-cache: building the 100 MiB image (once)\n');
  const fs = await ScratchFs.create(4);
  try {
    const tree = join(fs.path, 'tree');
    // 64 KiB and 448 KiB files by turns (256 KiB on average), ten directories; every file distinct.
    for (let i = 0; i < FILES; i++) {
      const dir = join(tree, 'data', `d${i % 10}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `f${i}.bin`), randomBytes(i % 2 ? 448 * 1024 : 64 * 1024));
    }
    const store = join(fs.path, 'store');
    const cli = (...a: string[]) => exec(process.execPath, [join(repo, 'bin/cowshed.js'), '--store', store, ...a]);
    await cli('import', `dir:${tree}`, 'pagecache:v1');
    const tmp = await mkdtemp(join(cache, '.page-cache-bench-'));
    await cli('export', '--compression', 'none', 'pagecache:v1', `oci:${join(tmp, 'oci')}:v1`);
    rmSync(layout, { recursive: true, force: true });
    await rename(join(tmp, 'oci'), layout);
    rmSync(tmp, { recursive: true, force: true });
    writeFileSync(`${layout}.stamp`, `${new Date().toISOString()} ${FILES} files, ${FILES * 256 * 1024} bytes\n`);
    return layout;
  } finally {
    await fs.dispose();
  }
}

/** `Cached` of /proc/meminfo, in bytes. */
function cachedBytes(): number {
  const m = /^Cached:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  if (!m) throw new Error('no Cached: line in /proc/meminfo');
  return Number(m[1]) * 1024;
}

const dropCaches = (): Promise<unknown> => exec('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);

/** Reads every regular file below dir (1 MiB at a time, one buffer): the bytes read. */
function readTree(dir: string, buf: Buffer): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += readTree(p, buf);
    else if (e.isFile()) {
      const fd = openSync(p, 'r');
      try {
        for (let r; (r = readSync(fd, buf, 0, buf.length, null)) > 0;) n += r;
      } finally { closeSync(fd); }
    }
  }
  return n;
}

/** Overlay and EROFS mount points below dir (container roots, composefs lowers). */
function viewMountsUnder(dir: string): string[] {
  const views = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    const fstype = post?.split(' ')[0];
    if (fstype === 'overlay' || fstype === 'erofs') views.add(pre!.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return mountsUnder(dir).filter((m) => views.has(m));
}

/**
 * Page cache held by the files stored below dir (fincore: pages resident per
 * inode), the overlay and EROFS mounts below it left out (they show the
 * same inodes again; podman's bind mount of its own overlay/ directory is
 * walked). Other processes' files are not counted, so unlike Cached this is
 * exact; btrfs snapshots are subvolumes, not mounts, and are walked.
 */
async function residentBytes(dir: string): Promise<number> {
  const prune = viewMountsUnder(dir).flatMap((m, i) => [...(i ? ['-o'] : []), '-path', m]);
  const found = await exec('find', [dir, ...(prune.length ? ['(', ...prune, ')', '-prune', '-o'] : []), '-type', 'f', '-print0']);
  const files = found.stdout.split('\0').filter((f) => f !== '');
  let n = 0;
  for (let i = 0; i < files.length; i += 2000) {
    const r = await exec('fincore', ['-b', '-n', '-r', '-o', 'RES', ...files.slice(i, i + 2000)]);
    for (const line of r.stdout.split('\n')) if (line.trim() !== '') n += Number(line.trim());
  }
  return n;
}

/**
 * A side set up with `count` mounted containers: their roots, the scratch
 * filesystem that holds everything the side stores, and how to take it all down.
 */
interface Ready { roots: string[]; dir: string; dispose: () => Promise<void> }

async function setupSide(spec: SideSpec, layout: string, count: number): Promise<Ready> {
  const fs = await ScratchFs.create(8, spec.fsType);
  try {
    if (spec.driver) {
      const store = await Store.open(join(fs.path, 'store'), { driver: spec.driver });
      const roots: string[] = [];
      try {
        await store.importImage(`oci:${layout}:v1`, 'pagecache:v1');
        for (let i = 0; i < count; i++) roots.push((await createContainer(store, 'pagecache:v1')).rootfs);
      } catch (e) {
        store.close();
        throw e;
      }
      return {
        roots, dir: fs.path,
        dispose: async () => {
          for (const c of listContainers(store, { all: true })) {
            try { removeContainer(store, c.id, { force: true }); } catch { /* the filesystem goes below anyway */ }
          }
          store.close();
          await fs.dispose();
        },
      };
    }
    const image = (await podman(fs.path, 'pull', '-q', podmanOciRef(layout, 'v1'))).stdout.trim();
    const roots: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = (await podman(fs.path, 'create', image, 'sh')).stdout.trim();
      roots.push((await podman(fs.path, 'mount', id)).stdout.trim());
    }
    return {
      roots, dir: fs.path,
      dispose: () => disposePodmanScratch(fs),
    };
  } catch (e) {
    await fs.dispose();
    throw e;
  }
}

interface Measured {
  spec: SideSpec;
  status: string;
  /** Per N: growth of Cached while reading, growth over as long again reading nothing, the read's duration. */
  growth: Map<number, number[]>;
  background: Map<number, number[]>;
  readMs: Map<number, number[]>;
  /** Per N: growth of the page cache held by the side's own files (fincore). */
  resident: Map<number, number[]>;
  perContainer?: number;
}

const push = (m: Map<number, number[]>, n: number, v: number): void => { (m.get(n) ?? m.set(n, []).get(n)!).push(v); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function pageCacheBenchmark(opts: PageCacheOptions): Benchmark {
  const lines: string[] = [];
  return {
    name: 'page-cache',
    needsImage: false,
    table: () => lines,
    async run() {
      if (process.getuid?.() !== 0) throw new Error('needs root (drops caches, mounts)');
      const layout = await ensureLayout(opts.repo, opts.cache);
      const maxN = Math.max(...COUNTS);
      const measured: Measured[] = SIDES.map((spec) => ({ spec, status: 'ok', growth: new Map(), background: new Map(), readMs: new Map(), resident: new Map() }));
      const ready: Array<Ready | undefined> = [];
      const buf = Buffer.alloc(MiB);
      try {
        for (const m of measured) {
          if (!m.spec.driver && !(await which('podman'))) { m.status = 'skipped: podman not installed'; ready.push(undefined); continue; }
          process.stderr.write(`bench page-cache: setting up ${m.spec.label} (${maxN} containers)\n`);
          try { ready.push(await setupSide(m.spec, layout, maxN)); } catch (e) {
            m.status = `failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
            ready.push(undefined);
          }
        }
        for (let run = 0; run < RUNS; run++) {
          for (const [ci, n] of COUNTS.entries()) {
            for (let k = 0; k < measured.length; k++) {
              const j = (run + ci + k) % measured.length;
              const m = measured[j]!;
              const r = ready[j];
              if (!r || m.status !== 'ok') continue;
              await dropCaches();
              // The machine's other processes fault their files back in right after a drop: let that pass.
              await sleep(SETTLE_MS);
              const residentBefore = await residentBytes(r.dir);
              const before = cachedBytes();
              const t0 = performance.now();
              let bytes = 0;
              for (const root of r.roots.slice(0, n)) bytes += readTree(root, buf);
              const ms = performance.now() - t0;
              const after = cachedBytes();
              const resident = (await residentBytes(r.dir)) - residentBefore;
              // What the rest of the machine adds meanwhile: the same span again (at most 10 s, scaled), reading nothing.
              const window = Math.min(ms, BACKGROUND_MAX_MS);
              await sleep(window);
              const background = ((cachedBytes() - after) * ms) / window;
              m.perContainer = bytes / n;
              push(m.growth, n, after - before);
              push(m.background, n, background);
              push(m.readMs, n, ms);
              push(m.resident, n, resident);
              process.stderr.write(`  page-cache: ${m.spec.label}, N=${n}: read ${(bytes / MB).toFixed(0)} MB in ${(ms / 1000).toFixed(1)} s, ` +
                `Cached +${((after - before) / MB).toFixed(0)} MB, then +${(background / MB).toFixed(0)} MB reading nothing; the side's files hold ${(resident / MB).toFixed(0)} MB\n`);
            }
          }
          process.stderr.write(`  page-cache: run ${run + 1}/${RUNS}\n`);
        }
      } finally {
        for (const r of ready) await r?.dispose().catch((e: unknown) => { process.stderr.write(`bench page-cache: cleanup: ${String(e)}\n`); });
      }

      const image = measured.find((m) => m.perContainer)?.perContainer ?? FILES * 256 * 1024;
      const ok = measured.filter((m) => m.status === 'ok' && m.growth.size > 0);
      const med = (m: Measured, n: number, what: 'growth' | 'background' | 'resident' = 'growth'): number => median(m[what].get(n) ?? [0]);
      /** Growth less what the rest of the machine added over as long: each run's difference, then the median. */
      const net = (m: Measured, n: number): number => median((m.growth.get(n) ?? [0]).map((g, i) => g - (m.background.get(n)?.[i] ?? 0)));
      const stamp = new Date().toISOString().replace(/:/g, '-').replace(/\..*/, 'Z');
      const svgPath = join(opts.repo, 'bench/results', `page-cache-${stamp}.svg`);
      mkdirSync(join(opts.repo, 'bench/results'), { recursive: true });
      const copies = { label: 'N copies of the image', color: '#999', dashed: true, points: COUNTS.map((n): [number, number] => [n, (n * image) / MB]) };
      const xLabel = 'containers (N), each reading every file of the image once';
      writeFileSync(svgPath, stackedLineCharts([
        {
          title: `Page cache: N containers of one image each read the same ${(image / MB).toFixed(0)} MB`,
          xLabel, yLabel: 'growth of Cached (MB), less the background', xTicks: COUNTS,
          series: [...ok.map((m) => ({ label: `${m.spec.label}: ${(net(m, maxN) / MB).toFixed(0)} MB at ${maxN}`, color: m.spec.color, points: COUNTS.map((n): [number, number] => [n, net(m, n) / MB]) })), copies],
        },
        {
          title: 'The same runs: page cache held by each store\'s own files (fincore)',
          xLabel, yLabel: 'resident pages of the store\'s files (MB)', xTicks: COUNTS,
          series: [...ok.map((m) => ({ label: `${m.spec.label}: ${(med(m, maxN, 'resident') / MB).toFixed(0)} MB at ${maxN}`, color: m.spec.color, points: COUNTS.map((n): [number, number] => [n, med(m, n, 'resident') / MB]) })), copies],
        },
      ]));

      lines.push(`## Page cache: N containers of one image each read the same ${(image / MB).toFixed(0)} MB (issue 15)`, '');
      lines.push(`Growth of \`Cached\` (/proc/meminfo) while every file of the first N containers is read once, caches dropped ${SETTLE_MS / 1000} s before, ` +
        'less the background (the growth over as long again, at most 10 s and scaled, reading nothing: the rest of the machine at work); beside it the page cache held by the ' +
        'files the side stores (fincore over its scratch filesystem, mounts left out), which other processes cannot disturb. ' +
        `Medians of ${RUNS} runs, sides alternating. The image: one layer, ${FILES} files of random bytes.`, '');
      const cols = (f: (n: number) => string): string => COUNTS.map(f).join(' | ');
      lines.push(`| driver | ${cols((n) => `Cached, N = ${n}`)} | ${cols((n) => `own files, N = ${n}`)} | per extra container (own files) | ÷ the image | raw Cached growth / background, N = ${maxN} | read time, N = ${maxN} |`);
      lines.push(`| --- | ${cols(() => '---:')} | ${cols(() => '---:')} | ---: | ---: | ---: | ---: |`);
      for (const m of measured) {
        if (!ok.includes(m)) { lines.push(`| ${m.spec.label} | ${m.status} |${COUNTS.map(() => ' |').join('')}${COUNTS.map(() => ' |').join('')} | | |`); continue; }
        const lo = Math.min(...COUNTS);
        const per = (med(m, maxN, 'resident') - med(m, lo, 'resident')) / (maxN - lo);
        lines.push(`| ${m.spec.label} | ${cols((n) => `${(net(m, n) / MB).toFixed(0)} MB`)} | ${cols((n) => `${(med(m, n, 'resident') / MB).toFixed(0)} MB`)} | ` +
          `${(per / MB).toFixed(1)} MB | ${(per / image).toFixed(2)} × | ${(med(m, maxN) / MB).toFixed(0)} / ${(med(m, maxN, 'background') / MB).toFixed(0)} MB | ` +
          `${(median(m.readMs.get(maxN)!) / 1000).toFixed(1)} s |`);
      }
      lines.push('', `Plot: ${svgPath}`);
      process.stderr.write(lines.join('\n') + '\n');
      return [];
    },
  };
}
