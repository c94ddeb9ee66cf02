// Why volumes exist (issue 16): inside a running container, on its own root
// and on a volume, for every cowshed driver and podman's overlay:
//   (a) append 1 MB to a 500 MB file that came with the image: the first
//       write's latency, which on overlay-type roots is the copy-up of the
//       whole file;
//   (b) write 1 GB of new data (dd bs=1M, conv=fsync): throughput;
//   (c) fsync-heavy small writes: 200 appends of 4 KiB, each followed by
//       fsync (dd conv=fsync in a shell loop: Debian minbase has neither
//       sqlite nor python; this is the write pattern of a sqlite insert loop
//       in its default rollback-journal mode, one transaction per insert,
//       minus the journal file): operations per second.
// Times are taken inside the container (date +%s%N around each step), so
// container start-up is not counted. Each driver's store is on its own
// fresh loop filesystem (composefs, overlay: ext4; btrfs: btrfs; vfs: xfs
// with reflinks), podman's root on ext4. The volume is the same named volume
// in every run (it keeps its copy of the image's /data; the 1 GB and small
// files are removed by the script), the root a fresh container per run.
// The 500 MB file is read once (untimed) before (a) in every run, so (a)
// is the copy-up, not a cold read. All sides are set up first and every
// iteration runs each of them, so the shared machine's drift hits all alike.
//
// Report: one table per figure (medians), a side-by-side summary, and an SVG
// (bench/results/volumes-<stamp>.svg) drawn here without plotting libraries.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { type Benchmark, type BenchResult, type ContenderResult, disposePodmanScratch, exec, median, podman, ScratchFs, which } from './lib.ts';
import { podmanOciRef } from '../test/helpers/cli.ts';
import { esc, legendItem, svgDocument } from './plot.ts';

export interface VolumeBenchOptions {
  repo: string;
  cache: string;
  runs: number;
}

type FsType = 'ext4' | 'btrfs' | 'xfs';
interface Side { label: string; driver?: string; fsType: FsType }

const SIDES: Side[] = [
  { label: 'cowshed composefs (ext4)', driver: 'composefs', fsType: 'ext4' },
  { label: 'cowshed overlay (ext4)', driver: 'overlay', fsType: 'ext4' },
  { label: 'cowshed btrfs (btrfs)', driver: 'btrfs', fsType: 'btrfs' },
  { label: 'cowshed vfs (xfs, reflink)', driver: 'vfs', fsType: 'xfs' },
  { label: 'podman overlay (ext4)', fsType: 'ext4' },
];
const BIG_MB = 500;
const NEW_MB = 1024;
const SMALL_OPS = 200;
const LOCATIONS = ['root', 'volume'] as const;
type Location = typeof LOCATIONS[number];

// Runs in the container (dash): three timings in ns.
const SCRIPT = [
  'set -e', 'D=/data', 't() { date +%s%N; }',
  // The file's pages in cache for every contender alike: (a) times the copy, not a cold read.
  'cat $D/big.bin > /dev/null',
  `s=$(t); dd if=/dev/zero of=$D/big.bin bs=1M count=1 oflag=append conv=notrunc status=none; e=$(t); echo a=$((e-s))`,
  `s=$(t); dd if=/dev/zero of=$D/new.bin bs=1M count=${NEW_MB} conv=fsync status=none; e=$(t); echo b=$((e-s))`,
  'rm -f $D/new.bin',
  `s=$(t); i=0; while [ $i -lt ${SMALL_OPS} ]; do dd if=/dev/zero of=$D/small.bin bs=4k count=1 oflag=append conv=notrunc,fsync status=none; i=$((i+1)); done; e=$(t); echo c=$((e-s))`,
  'rm -f $D/small.bin',
].join('\n');

interface Sample { a: number; b: number; c: number }

/** An OCI layout (uncompressed) of Debian plus /data/big.bin (500 MB of random bytes), built once into the cache. */
async function ensureBigLayout(repo: string, cache: string): Promise<string> {
  const layout = join(cache, 'volumes-bench-oci');
  if (existsSync(`${layout}.stamp`) && existsSync(join(layout, 'index.json'))) return layout;
  process.stderr.write(`bench: building the Debian + ${BIG_MB} MB image (once)\n`);
  const fs = await ScratchFs.create(4);
  try {
    const store = join(fs.path, 'store');
    const cli = (...a: string[]) => exec(process.execPath, [join(repo, 'bin/cowshed.js'), '--store', store, ...a]);
    await cli('import', `oci:${join(cache, 'debian-oci')}:v1`, 'deb');
    await cli('create', '--name', 'c', 'deb');
    const root = (await cli('mount', 'c')).stdout.trim().split('\n').pop()!;
    mkdirSync(join(root, 'data'));
    await exec('dd', ['if=/dev/urandom', `of=${join(root, 'data/big.bin')}`, 'bs=1M', `count=${BIG_MB}`, 'status=none']);
    await cli('commit', 'c', 'big:v1');
    const tmp = await mkdtemp(join(cache, '.volumes-bench-'));
    await cli('export', '--compression', 'none', 'big:v1', `oci:${join(tmp, 'oci')}:v1`);
    rmSync(layout, { recursive: true, force: true });
    await rename(join(tmp, 'oci'), layout);
    rmSync(tmp, { recursive: true, force: true });
    writeFileSync(`${layout}.stamp`, `${new Date().toISOString()} debian v1 + /data/big.bin ${BIG_MB} MB\n`);
    return layout;
  } finally {
    await fs.dispose();
  }
}

function parse(out: string): Sample {
  const v = (k: string): number => {
    const m = new RegExp(`^${k}=(\\d+)$`, 'm').exec(out);
    if (!m) throw new Error(`no ${k}= in the container's output: ${out.slice(0, 200)}`);
    return Number(m[1]) / 1e6;
  };
  return { a: v('a'), b: v('b'), c: v('c') };
}

interface Measured { side: Side; samples: Record<Location, Sample[]>; status: string }

/** One side set up on its own scratch filesystem: run(location) gives one sample. */
interface Ready { run: (loc: Location) => Promise<Sample>; warm: () => Promise<void>; dispose: () => Promise<void> }

async function setupSide(side: Side, repo: string, layout: string): Promise<Ready> {
  const fs = await ScratchFs.create(8, side.fsType);
  try {
    if (side.driver) {
      const store = join(fs.path, 'store');
      const cli = (...a: string[]) => exec(process.execPath, [join(repo, 'bin/cowshed.js'), '--store', store, '--driver', side.driver!, ...a]);
      await cli('import', `oci:${layout}:v1`, 'big');
      return {
        run: async (loc) => parse((await cli('run', '--rm', ...(loc === 'volume' ? ['-v', 'benchvol:/data'] : []), 'big', '--', 'sh', '-c', SCRIPT)).stdout),
        warm: async () => { await cli('run', '--rm', '-v', 'benchvol:/data', 'big', '--', 'true'); },
        dispose: () => fs.dispose(),
      };
    }
    const image = (await podman(fs.path, 'pull', '-q', podmanOciRef(layout, 'v1'))).stdout.trim();
    return {
      run: async (loc) => parse((await podman(fs.path, 'run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000',
        ...(loc === 'volume' ? ['-v', 'benchvol:/data'] : []), image, 'sh', '-c', SCRIPT)).stdout),
      warm: async () => { await podman(fs.path, 'run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1000:1000', '-v', 'benchvol:/data', image, 'true'); },
      dispose: () => disposePodmanScratch(fs),
    };
  } catch (e) {
    await fs.dispose();
    throw e;
  }
}

/**
 * Every side is set up first (each on its own filesystem); then each
 * iteration runs every side, starting with a different one, so that the
 * shared machine's drift hits all of them alike.
 */
async function measureAll(repo: string, layout: string, runs: number): Promise<Measured[]> {
  const measured: Measured[] = SIDES.map((side) => ({ side, samples: { root: [], volume: [] }, status: 'ok' }));
  const ready: (Ready | undefined)[] = [];
  try {
    for (const m of measured) {
      if (!m.side.driver && !(await which('podman'))) { m.status = 'skipped: podman not installed'; ready.push(undefined); continue; }
      process.stderr.write(`  volumes: setting up ${m.side.label}\n`);
      try {
        const r = await setupSide(m.side, repo, layout);
        ready.push(r);
        // Untimed: the volume is made and filled (copy-up of the image's /data) by a first container.
        await r.warm();
      } catch (e) {
        m.status = `failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
        if (ready.length === measured.indexOf(m)) ready.push(undefined);
      }
    }
    for (let i = 0; i < runs; i++) {
      for (let k = 0; k < measured.length; k++) {
        const j = (i + k) % measured.length;
        const m = measured[j]!;
        const r = ready[j];
        if (!r || m.status !== 'ok') continue;
        try {
          for (const loc of i % 2 ? [...LOCATIONS].reverse() : LOCATIONS) m.samples[loc].push(await r.run(loc));
        } catch (e) {
          m.status = `failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`;
        }
      }
      process.stderr.write(`  volumes: iteration ${i + 1}/${runs}\n`);
    }
  } finally {
    for (const r of ready) await r?.dispose().catch(() => undefined);
  }
  return measured;
}

const FIGURES = [
  { key: 'a' as const, title: `(a) first write: append 1 MB to a ${BIG_MB} MB image file`, unit: 'ms', value: (ms: number) => ms, better: 'lower' },
  { key: 'b' as const, title: `(b) write ${NEW_MB} MiB of new data, fsync at the end`, unit: 'MB/s', value: (ms: number) => (NEW_MB * 2 ** 20) / 1e6 / (ms / 1000), better: 'higher' },
  { key: 'c' as const, title: `(c) ${SMALL_OPS} × (append 4 KiB + fsync)`, unit: 'ops/s', value: (ms: number) => SMALL_OPS / (ms / 1000), better: 'higher' },
];

export function volumeBenchmarks(opts: VolumeBenchOptions): { benchmark: Benchmark; table: () => string[] } {
  let measured: Measured[] = [];
  let svgPath: string | undefined;
  const benchmark: Benchmark = {
    name: 'volumes',
    needsImage: true,
    async run() {
      const layout = await ensureBigLayout(opts.repo, opts.cache);
      measured = await measureAll(opts.repo, layout, opts.runs);
      const results: BenchResult[] = FIGURES.map((f) => ({
        name: `volumes ${f.title}`,
        notes: [],
        contenders: measured.flatMap((m) => LOCATIONS.map((loc): ContenderResult => {
          const times = m.samples[loc].map((s) => s[f.key]);
          return {
            name: `${m.side.label}, ${loc === 'root' ? 'container root' : 'volume'}`,
            role: m.side.driver ? 'cowshed' : 'anchor',
            status: m.status, timesMs: times,
            ...(times.length ? { medianMs: median(times), minMs: Math.min(...times) } : {}),
            ...(f.key === 'b' ? { bytes: NEW_MB * 2 ** 20 } : {}),
          };
        })),
      }));
      const stamp = new Date().toISOString().replace(/:/g, '-').replace(/\..*/, 'Z');
      svgPath = join(opts.repo, 'bench/results', `volumes-${stamp}.svg`);
      mkdirSync(join(opts.repo, 'bench/results'), { recursive: true });
      writeFileSync(svgPath, plot(measured));
      return results;
    },
  };
  return { benchmark, table: () => summary(measured, svgPath) };
}

const med = (m: Measured, loc: Location, key: 'a' | 'b' | 'c'): number | undefined => {
  const xs = m.samples[loc].map((s) => s[key]);
  return xs.length ? median(xs) : undefined;
};

/** Root and volume side by side, one row per driver. */
function summary(measured: Measured[], svgPath: string | undefined): string[] {
  if (measured.length === 0) return [];
  const fmt = (v: number | undefined, unit: string): string => (v === undefined ? '' : unit === 'ms' ? v.toFixed(v < 10 ? 1 : 0) : v.toFixed(0));
  const lines = [
    '## Volumes: the container root against a volume (medians)',
    '',
    `| driver | (a) first write, root (ms) | (a) volume (ms) | (b) 1 GiB, root (MB/s) | (b) volume (MB/s) | (c) fsync'd 4 KiB, root (ops/s) | (c) volume (ops/s) |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const m of measured) {
    if (m.status !== 'ok') { lines.push(`| ${m.side.label} | ${m.status} | | | | | |`); continue; }
    const cells = FIGURES.flatMap((f) => LOCATIONS.map((loc) => {
      const v = med(m, loc, f.key);
      return fmt(v === undefined ? undefined : f.value(v), f.unit);
    }));
    lines.push(`| ${m.side.label} | ${cells.join(' | ')} |`);
  }
  if (svgPath) lines.push('', `Plot: ${svgPath}`);
  return lines;
}

// ---- SVG (bench/plot.ts) ---------------------------------------------------

/** Three bar panels (one per figure), a pair of bars (root, volume) per driver. */
export function plot(measured: Measured[]): string {
  const W = 980;
  const panelH = 230;
  const left = 200;
  const right = 40;
  const barH = 12;
  const colors: Record<Location, string> = { root: '#c0504d', volume: '#4f81bd' };
  const parts: string[] = [];
  let y = 40;
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">Writes inside a container: its own root against a volume</text>`);
  parts.push(legendItem(W - 220, 8, colors.root, 'container root'));
  parts.push(legendItem(W - 110, 8, colors.volume, 'volume'));
  for (const f of FIGURES) {
    const rows = measured.filter((m) => m.status === 'ok');
    const vals = rows.flatMap((m) => LOCATIONS.map((loc) => { const v = med(m, loc, f.key); return v === undefined ? 0 : f.value(v); }));
    const max = Math.max(1e-9, ...vals);
    const scale = (W - left - right - 60) / max;
    parts.push(`<text x="10" y="${y + 14}" font-size="13" font-weight="bold">${esc(`${f.title} — ${f.unit}, ${f.better} is better`)}</text>`);
    let ry = y + 28;
    for (const m of rows) {
      parts.push(`<text x="${left - 8}" y="${ry + barH + 4}" text-anchor="end" font-size="12">${esc(m.side.label)}</text>`);
      for (const loc of LOCATIONS) {
        const raw = med(m, loc, f.key);
        const v = raw === undefined ? 0 : f.value(raw);
        const w = Math.max(1, v * scale);
        parts.push(`<rect x="${left}" y="${ry}" width="${w.toFixed(1)}" height="${barH}" fill="${colors[loc]}"/>`);
        parts.push(`<text x="${(left + w + 4).toFixed(1)}" y="${ry + barH - 2}" font-size="11">${v.toFixed(v < 10 ? 1 : 0)}</text>`);
        ry += barH + 1;
      }
      ry += 8;
    }
    y = Math.max(ry, y + panelH) + 10;
  }
  return svgDocument(W, y, parts);
}
