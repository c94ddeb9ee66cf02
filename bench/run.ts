// `npm run bench [NAME…]`: every benchmark (or those whose name contains one
// of the arguments; `npm run bench startup` for the installed command's
// start-up alone), cowshed against its anchors, report under bench/results/.
// Environment: COWSHED_FIXTURES (image cache, default /var/cache/cowshed-fixtures),
// BENCH_RUNS (timed runs per contender, default 5), BENCH_WARMUP (default 1),
// BENCH_BASELINE (a git commit: import-cold and composefs-create also time
// that commit's CLI, alternating with this one's; see bench/baseline.ts).
import { hash, randomFillSync } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FsVerityHasher } from '../src/composefs/fsverity.ts';
import {
  type Benchmark, type BenchResult, type Contender, exec, installPackage, isRoot, measure, needTool, podman, ScratchFs, throughputMBs,
  writeReport,
} from './lib.ts';
import { containerBenchmarks } from './containers.ts';
import { driverBenchmarks } from './drivers.ts';
import { registryBenchmarks } from './registry.ts';
import { trustBenchmarks } from './trust.ts';
import { volumeBenchmarks } from './volumes.ts';
import { startupBenchmarks } from './startup.ts';
import { fixturesDir, podmanOciRef } from '../test/helpers/cli.ts';
import { chunkedBenchmarks } from './chunked.ts';
import { deltaBenchmarks } from './deltas.ts';
import { storeSizeBenchmark } from './store-size.ts';
import { pageCacheBenchmark } from './page-cache.ts';
import { afterBeforeNote, type Baseline, baselineCheckout } from './baseline.ts';

const REPO = dirname(dirname(fileURLToPath(import.meta.url)));
const CACHE = fixturesDir();
const LAYOUT = join(CACHE, 'debian-oci');
const CLI = join(REPO, 'bin/cowshed.js');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1);
const MB = 1e6;
/** The older commit to compare with (BENCH_BASELINE), checked out by main() when set. */
let baseline: Baseline | undefined;
const baselineName = (what: string): string => `${what}, baseline ${baseline!.short}`;

/** The cowshed CLI as users run it: a fresh Node 24 process (this one's binary). */
async function cowshed(...args: string[]): Promise<void> {
  if (!existsSync(CLI)) throw new Error('bin/cowshed.js does not exist');
  await exec(process.execPath, [CLI, ...args], { cwd: REPO });
}

/** A contender that gets a fresh scratch filesystem for every run. */
function onFreshFs(name: string, role: Contender['role'], run: (fs: string) => Promise<unknown>, skip?: Contender['skip']): Contender {
  let fs: ScratchFs | undefined;
  return {
    name, role, skip,
    prepare: async () => { fs = await ScratchFs.create(); },
    run: async () => { await run(fs!.path); },
    cleanup: async () => { await fs?.dispose(); fs = undefined; },
  };
}

function v1LayerBlob(): string {
  const index = JSON.parse(readFileSync(join(LAYOUT, 'index.json'), 'utf8')) as
    { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'v1');
  if (!desc) throw new Error(`${LAYOUT} has no tag v1`);
  const blob = (d: string): string => join(LAYOUT, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(desc.digest), 'utf8')) as { layers: { digest: string }[] };
  return blob(manifest.layers[0]!.digest);
}

/** "target: ≤ N × <anchor>: R × — met" for a result with a cowshed row and an anchor row named by `anchor`. */
function targetNote(r: BenchResult, max: number, anchor: string): string {
  const cow = r.contenders.find((c) => c.role === 'cowshed')?.medianMs;
  const a = r.contenders.find((c) => c.role === 'anchor' && c.name.startsWith(anchor))?.medianMs;
  if (!cow || !a) return `target ≤ ${max} × ${anchor}: not measured`;
  const ratio = cow / a;
  return `target ≤ ${max} × ${anchor}: ${ratio.toFixed(2)} × — ${ratio <= max ? 'met' : 'NOT met'}`;
}

const benchmarks: Benchmark[] = [
  {
    // What no import can beat: decompressing, hashing and writing its bytes.
    name: 'limits',
    needsImage: true,
    async run() {
      const blob = v1LayerBlob();
      const fs = await ScratchFs.create();
      try {
        const tar = join(fs.path, 'layer.tar');
        await exec('sh', ['-c', `gzip -dc '${blob}' > '${tar}'`]);
        const tarBytes = statSync(tar).size;
        const gz = await measure('limits: gzip -dc of the Debian layer', [
          { name: `gzip -dc (MB/s of output)`, role: 'reference', run: async () => { await exec('sh', ['-c', `gzip -dc '${blob}' >/dev/null`]); } },
        ], { runs: RUNS, warmup: WARMUP, bytes: tarBytes });
        const sha = await measure('limits: SHA-256 of the layer tar', [
          { name: 'sha256sum', role: 'reference', run: async () => { await exec('sha256sum', [tar]); } },
          { name: 'openssl dgst -sha256', role: 'reference', skip: needTool('openssl'), run: async () => { await exec('openssl', ['dgst', '-sha256', tar]); } },
        ], { runs: RUNS, warmup: WARMUP, bytes: tarBytes });
        const ddBytes = 256 * 2 ** 20;
        const dd = await measure('limits: sequential write + fsync', [
          {
            name: 'dd bs=1M count=256 conv=fsync', role: 'reference',
            run: async () => { await exec('dd', ['if=/dev/zero', `of=${join(fs.path, 'dd')}`, 'bs=1M', 'count=256', 'conv=fsync']); },
            cleanup: async () => { await rm(join(fs.path, 'dd'), { force: true }); },
          },
        ], { runs: RUNS, warmup: WARMUP, bytes: ddBytes });
        gz.notes.push(`the layer: ${(statSync(blob).size / MB).toFixed(0)} MB gzip, ${(tarBytes / MB).toFixed(0)} MB tar`);
        return [gz, sha, dd];
      } finally {
        await fs.dispose();
      }
    },
  },
  {
    name: 'fsverity',
    needsImage: false,
    async run() {
      const size = 256 * 2 ** 20;
      const buf = randomFillSync(Buffer.alloc(size)); // touched now, so no run pays for fresh memory
      const chunk = 2 ** 20;
      const fs = await ScratchFs.create();
      try {
        const file = join(fs.path, 'buf');
        await writeFile(file, buf);
        const r = await measure('fs-verity digest vs SHA-256, 256 MB in memory', [
          {
            name: 'FsVerityHasher (1 MiB chunks)', role: 'cowshed',
            run: async () => {
              const h = new FsVerityHasher();
              for (let off = 0; off < size; off += chunk) h.update(buf.subarray(off, off + chunk));
              h.digest();
            },
          },
          { name: "crypto.hash('sha256') one-shot", role: 'anchor', run: async () => { hash('sha256', buf); } },
          { name: '`fsverity digest` (C, file in page cache)', role: 'reference', skip: needTool('fsverity', 'fsverity'), run: async () => { await exec('fsverity', ['digest', file]); } },
        ], { runs: RUNS, warmup: WARMUP, bytes: size });
        const cow = r.contenders[0]!;
        const sha = r.contenders[1]!;
        if (cow.medianMs && sha.medianMs) r.notes.push(`fs-verity / SHA-256 throughput: ${(sha.medianMs / cow.medianMs).toFixed(2)} (target ≥ 0.6)`);
        return [r];
      } finally {
        await fs.dispose();
      }
    },
  },
  {
    name: 'import-cold',
    needsImage: true,
    async run() {
      const ref = `oci:${LAYOUT}:v1`;
      const r = await measure('import Debian v1 from OCI layout, cold (fresh fs per run)', [
        onFreshFs('cowshed import', 'cowshed', (d) => cowshed('--store', join(d, 'store'), 'import', ref, 'debian:v1')),
        onFreshFs('umoci unpack', 'anchor', (d) => exec('umoci', ['unpack', '--image', `${LAYOUT}:v1`, join(d, 'bundle')]), needTool('umoci', 'umoci')),
        onFreshFs('podman pull oci:', 'anchor', (d) => podman(d, 'pull', '-q', podmanOciRef(LAYOUT, 'v1')), needTool('podman', 'podman')),
        // What no import can beat on one core: decompressing the layer (Debian's is one gzip layer).
        { name: 'gzip -dc of the layer (single-core floor)', role: 'reference', run: async () => { await exec('sh', ['-c', 'gzip -dc < "$0" > /dev/null', v1LayerBlob()]); } },
        ...(baseline ? [onFreshFs(baselineName('cowshed import'), 'reference', (d) =>
          exec(process.execPath, [baseline!.cli, '--store', join(d, 'store'), 'import', ref, 'debian:v1'], { cwd: baseline!.dir }))] : []),
      ], { runs: RUNS, warmup: WARMUP });
      if (baseline) r.notes.push(afterBeforeNote(r, baseline, 'baseline'));
      const cow = r.contenders[0]?.medianMs;
      const pm = r.contenders[2]?.medianMs;
      const floor = r.contenders[3]?.medianMs;
      if (cow && pm) r.notes.push(`cowshed / podman pull oci:: ${(cow / pm).toFixed(2)} (target ≤ 0.6)`);
      if (cow && floor) r.notes.push(`cowshed / gunzip floor: ${(cow / floor).toFixed(2)} (target ≤ 1.3)`);
      return [r];
    },
  },
  {
    name: 'reimport',
    needsImage: true,
    async run() {
      const ref = `oci:${LAYOUT}:v1`;
      let cfs: ScratchFs | undefined;
      let pfs: ScratchFs | undefined;
      const r = await measure('import again after rmi (objects still present)', [
        {
          name: 'cowshed rmi; import', role: 'cowshed',
          before: async () => { cfs = await ScratchFs.create(); await cowshed('--store', join(cfs.path, 'store'), 'import', ref, 'debian:v1'); },
          prepare: async () => { await cowshed('--store', join(cfs!.path, 'store'), 'rmi', 'debian:v1'); },
          run: async () => { await cowshed('--store', join(cfs!.path, 'store'), 'import', ref, 'debian:v1'); },
          after: async () => { await cfs?.dispose(); },
        },
        {
          name: 'podman rmi; pull oci:', role: 'anchor', skip: needTool('podman', 'podman'),
          before: async () => { pfs = await ScratchFs.create(); await podman(pfs.path, 'pull', '-q', podmanOciRef(LAYOUT, 'v1')); },
          prepare: async () => { await podman(pfs!.path, 'rmi', '-a', '-f'); },
          run: async () => { await podman(pfs!.path, 'pull', '-q', podmanOciRef(LAYOUT, 'v1')); },
          after: async () => { await pfs?.dispose(); },
        },
        { name: 'node -e 0 (start-up floor)', role: 'reference', run: async () => { await exec(process.execPath, ['-e', '0']); } },
      ], { runs: RUNS, warmup: WARMUP });
      const [cow, , node] = r.contenders;
      if (cow?.medianMs && node?.medianMs) {
        r.notes.push(`cowshed beyond Node start-up: ${(cow.medianMs - node.medianMs).toFixed(0)} ms (target ≤ 200 ms)`);
      }
      return [r];
    },
  },
  {
    // Issue 15: the installed command against mkcomposefs 1.0.8 (the shared build), alternating.
    name: 'composefs-create',
    needsImage: true,
    async run() {
      const MKCOMPOSEFS = join(REPO, '..', 'shared', 'tools', 'composefs-1.0.8', 'mkcomposefs');
      const noMk = async (): Promise<string | undefined> =>
        existsSync(MKCOMPOSEFS) ? undefined : `mkcomposefs 1.0.8 not found at ${MKCOMPOSEFS} (see shared/tools)`;
      // The unpacked Debian rootfs, on its own filesystem, made once; the package installed once.
      const src = await ScratchFs.create();
      const inst = await installPackage(REPO);
      // The baseline commit installed the same way (its `cowshed` first on instB's PATH).
      const instB = baseline ? await installPackage(baseline.dir) : undefined;
      try {
        await exec('umoci', ['unpack', '--image', `${LAYOUT}:v1`, join(src.path, 'bundle')]);
        const rootfs = join(src.path, 'bundle/rootfs');
        const dump = join(src.path, 'rootfs.dump');
        await exec('sh', ['-c', `'${MKCOMPOSEFS}' '${rootfs}' '${join(src.path, 'mk.cfs')}' && cowshed composefs dump '${join(src.path, 'mk.cfs')}' > '${dump}'`], { env: inst.env });
        const cow = (...args: string[]): Promise<unknown> => exec('cowshed', args, { env: inst.env });
        const create = (d: string): Promise<unknown> => cow('composefs', 'create', '--digest-store', join(d, 'objects'), rootfs, join(d, 'image.cfs'));
        const mk = (d: string): Promise<unknown> => exec(MKCOMPOSEFS, [`--digest-store=${join(d, 'objects')}`, rootfs, join(d, 'image.cfs')]);
        // The same on one thread: shows what the hashing workers buy.
        const create1 = (d: string): Promise<unknown> => cow('composefs', 'create', '--threads', '1', '--digest-store', join(d, 'objects'), rootfs, join(d, 'image.cfs'));
        const erofs = (d: string): Promise<unknown> => exec('mkfs.erofs', ['--quiet', join(d, 'image.erofs'), rootfs]);
        const createB = (d: string): Promise<unknown> =>
          exec('cowshed', ['composefs', 'create', '--digest-store', join(d, 'objects'), rootfs, join(d, 'image.cfs')], { env: instB!.env });

        const cold = await measure('composefs create --digest-store of the Debian rootfs, cold (empty store)', [
          onFreshFs('cowshed composefs create', 'cowshed', create),
          onFreshFs('mkcomposefs 1.0.8 --digest-store', 'anchor', mk, noMk),
          onFreshFs('cowshed composefs create --threads 1', 'reference', create1),
          onFreshFs('mkfs.erofs (full image, data included)', 'reference', erofs, needTool('mkfs.erofs', 'erofs-utils')),
          ...(instB ? [onFreshFs(baselineName('cowshed composefs create'), 'reference', createB)] : []),
        ], { runs: RUNS, warmup: WARMUP });

        /** Same filesystem for every run; only the (single-file) image is removed between runs. */
        const warmContender = (name: string, role: Contender['role'], run: (d: string) => Promise<unknown>, skip?: Contender['skip']): Contender => {
          let fs: ScratchFs | undefined;
          return {
            name, role, skip,
            before: async () => { fs = await ScratchFs.create(); await run(fs.path); },
            prepare: async () => {
              for (const f of ['image.cfs', 'image.erofs']) await rm(join(fs!.path, f), { force: true });
            },
            run: async () => { await run(fs!.path); },
            after: async () => { await fs?.dispose(); },
          };
        };
        const warm = await measure('composefs create --digest-store of the Debian rootfs, warm (objects present)', [
          warmContender('cowshed composefs create', 'cowshed', create),
          warmContender('mkcomposefs 1.0.8 --digest-store', 'anchor', mk, noMk),
          warmContender('cowshed composefs create --threads 1', 'reference', create1),
          warmContender('mkfs.erofs (full image, data included)', 'reference', erofs, needTool('mkfs.erofs', 'erofs-utils')),
          ...(instB ? [warmContender(baselineName('cowshed composefs create'), 'reference', createB)] : []),
        ], { runs: RUNS, warmup: WARMUP });
        warm.notes.push('mkfs.erofs has no warm mode (it writes all the data every time): shown for scale only');

        const fromDump = await measure('composefs create --from-file, a dump of the Debian rootfs', [
          { name: 'cowshed composefs create --from-file', role: 'cowshed', run: async () => { await cow('composefs', 'create', '--from-file', dump, join(src.path, 'dump.cfs')); } },
          { name: 'mkcomposefs 1.0.8 --from-file', role: 'anchor', skip: noMk, run: async () => { await exec(MKCOMPOSEFS, ['--from-file', dump, join(src.path, 'dump-mk.cfs')]); } },
          { name: 'node -e 0 (Node 24 start-up floor)', role: 'reference', run: async () => { await exec(inst.node, ['-e', '0'], { env: inst.env }); } },
          ...(instB ? [{
            name: baselineName('cowshed composefs create --from-file'), role: 'reference' as const,
            run: async () => { await exec('cowshed', ['composefs', 'create', '--from-file', dump, join(src.path, 'dump-b.cfs')], { env: instB.env }); },
          }] : []),
        ], { runs: RUNS, warmup: WARMUP });

        const same = async (a: string, b: string): Promise<boolean> =>
          existsSync(a) && existsSync(b) && (await exec('cmp', ['-s', a, b], { allowFail: true })).code === 0;
        fromDump.notes.push(`images byte-identical to mkcomposefs's: ${await same(join(src.path, 'dump.cfs'), join(src.path, 'dump-mk.cfs')) ? 'yes' : 'NO'}`);
        const lines = (await exec('wc', ['-l', dump])).stdout.trim().split(' ')[0];
        fromDump.notes.push(`${lines} entries; all through the installed command (npm pack, npm install -g)`);
        for (const r of [cold, warm, fromDump]) r.notes.unshift(targetNote(r, 1.5, 'mkcomposefs'));
        if (baseline) for (const r of [cold, warm, fromDump]) r.notes.push(afterBeforeNote(r, baseline, 'baseline'));
        return [cold, warm, fromDump];
      } finally {
        await instB?.dispose();
        await inst.dispose();
        await src.dispose();
      }
    },
  },
];

// Installed-command start-up against podman (issue 10): packs and installs the package into a temporary prefix.
const startup = startupBenchmarks({ repo: REPO, cache: CACHE, runs: RUNS, warmup: WARMUP });
benchmarks.push(startup.benchmark);

// create, diff, commit (issue 3): they share one store and podman root, removed at the end.
const containers = containerBenchmarks({ repo: REPO, cache: CACHE, runs: RUNS, warmup: WARMUP });
benchmarks.push(...containers.benchmarks);

// The storage-driver table (issue 5): one store per driver on its own filesystem, removed at the end.
const drivers = driverBenchmarks({ repo: REPO, cache: CACHE, runs: RUNS, warmup: WARMUP });
benchmarks.push(drivers.benchmark);

// volumes (issue 16): root against volume, every driver and podman; BENCH_VOLUME_RUNS (default 3) runs each.
const volumes = volumeBenchmarks({ repo: REPO, cache: CACHE, runs: Number(process.env.BENCH_VOLUME_RUNS ?? 3) });
benchmarks.push(volumes.benchmark);

// pull-cold, pull-again, pull-update, push-commit (issue 4): one loopback registry, stopped at the end.
const registry = registryBenchmarks({ repo: REPO, cache: CACHE, runs: RUNS, warmup: WARMUP });
benchmarks.push(...registry.benchmarks);

// Signature verification on pull and mount (issue 14): its own registry, stopped at the end.
const trust = trustBenchmarks({ repo: REPO, cache: CACHE, runs: RUNS, warmup: WARMUP });
benchmarks.push(...trust.benchmarks);
// zstd-chunked-update, zstd-chunked-cold (issue 12): their own loopback registry, stopped at the end.
const chunked = chunkedBenchmarks({ repo: REPO, cache: CACHE, runs: RUNS, warmup: WARMUP });
benchmarks.push(...chunked.benchmarks);
// Updates by deltas on the ten-version series (issue 13): `npm run bench deltas`.
const deltas = deltaBenchmarks({ repo: REPO, cache: CACHE });
benchmarks.push(deltas.benchmark);
// Store size for ten versions, page cache of N containers (issue 15): each adds its own section to the report.
benchmarks.push(storeSizeBenchmark({ repo: REPO, cache: CACHE }), pageCacheBenchmark({ repo: REPO, cache: CACHE }));

/** Import time against max(decompress, hash, write) of the layer's bytes. */
function limitsSummary(results: BenchResult[]): string[] {
  const find = (bench: string, contender: string) =>
    results.find((r) => r.name.startsWith(bench))?.contenders.find((c) => c.name.startsWith(contender));
  const gz = find('limits: gzip', 'gzip');
  // The fastest SHA-256 at hand is the limit (coreutils' sha256sum is much slower than openssl here).
  const sha = find('limits: SHA-256', 'openssl')?.medianMs ? find('limits: SHA-256', 'openssl') : find('limits: SHA-256', 'sha256sum');
  const dd = find('limits: sequential', 'dd');
  const imp = find('import Debian', 'cowshed');
  if (!gz?.medianMs || !sha?.medianMs || !dd || !gz.bytes) return [];
  const ddRate = throughputMBs(dd);
  const writeMs = ddRate ? gz.bytes / MB / ddRate * 1000 : 0;
  const bound = Math.max(gz.medianMs, sha.medianMs, writeMs);
  const lines = [
    '## Physical limits for the Debian v1 layer',
    '',
    `gzip -dc ${(gz.medianMs / 1000).toFixed(2)} s, SHA-256 ${(sha.medianMs / 1000).toFixed(2)} s, ` +
      `sequential write ${(writeMs / 1000).toFixed(2)} s: an import cannot beat ${(bound / 1000).toFixed(2)} s.`,
  ];
  if (imp?.medianMs) lines.push(`cowshed import (cold) took ${(imp.medianMs / 1000).toFixed(2)} s = ${(imp.medianMs / bound).toFixed(2)} × that bound.`);
  return lines;
}

/**
 * Issue 15's goals, one row each: the figure, its anchor, the ratio and whether
 * it is met, from this run's results (and the store-size section's target line).
 */
function targetsSummary(results: BenchResult[], lines: string[]): string[] {
  const med = (bench: string, contender: string): number | undefined =>
    results.find((r) => r.name.startsWith(bench))?.contenders.find((c) => c.name.startsWith(contender) && c.status === 'ok')?.medianMs;
  const ms = (x: number): string => x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(0)} ms`;
  const rows: string[] = [];
  const row = (goal: string, a: [string, string], b: [string, string], max: number): void => {
    const x = med(...a), y = med(...b);
    if (x === undefined || y === undefined) { rows.push(`| ${goal} | not measured | | | |`); return; }
    rows.push(`| ${goal} | ${ms(x)} | ${ms(y)} | ${(x / y).toFixed(2)} × (≤ ${max}) | ${x / y <= max ? 'met' : 'not met'} |`);
  };
  const commit = 'commit of a container with 1 changed file, Debian';
  row('commit, 1 changed file, CLI vs podman commit', [commit, 'cowshed commit (CLI)'], [commit, 'podman commit'], 1);
  row('commit on a 100k-entry image vs on Debian (in-process)',
    ['commit of a container with 1 changed file, 100k-entry image', 'commitContainer()'], [commit, 'commitContainer()'], 1.5);
  const upd = 'update pull of one small new layer';
  row('update pull of one small layer vs podman pull', [upd, 'cowshed pull, Debian'], [upd, 'podman pull'], 1);
  row('the same on a 100k-entry base vs a 7k-entry base', [upd, 'cowshed pull, 100k'], [upd, 'cowshed pull, Debian'], 1.5);
  for (const [bench, what] of [['composefs create --digest-store of the Debian rootfs, cold', 'cold'], ['composefs create --digest-store of the Debian rootfs, warm', 'warm'],
    ['composefs create --from-file', 'from a dump']] as const) {
    row(`composefs create, ${what}, vs mkcomposefs 1.0.8`, [bench, 'cowshed composefs create'], [bench, 'mkcomposefs'], 1.5);
  }
  const imp = 'import Debian v1 from OCI layout, cold';
  row('cold import of Debian vs podman pull oci:', [imp, 'cowshed import'], [imp, 'podman pull oci:'], 0.6);
  row('cold import of Debian vs the single-core gunzip floor', [imp, 'cowshed import'], [imp, 'gzip -dc'], 1.3);
  for (const [bench, what] of [['start-up: --version', '--version'], ['start-up: ps', 'ps'], ['start-up: create', 'create'], ['start-up: diff', 'diff']] as const) {
    row(`installed \`cowshed ${what}\` vs podman's`, [bench, `cowshed ${what}`], [bench, `podman ${what}`], 1);
  }
  const push = 'push of a committed Debian image';
  row('push of a commit, CLI vs podman push', [push, 'cowshed push'], [push, 'podman push'], 1);
  const size = lines.find((l) => l.startsWith('Target: cowshed ≤ 1.1'));
  const sizeRatio = size?.match(/: ([0-9.]+) × \(apparent\) — (met|not met)/);
  rows.push(sizeRatio ? `| store size for ten versions vs the unique file bytes | | | ${sizeRatio[1]} × (≤ 1.1) | ${sizeRatio[2]} |` : '| store size for ten versions | not measured | | | |');
  if (rows.every((r) => r.includes('not measured'))) return [];
  return ['## Issue 15 targets (this run)', '', '| goal | cowshed | anchor | ratio | |', '| --- | ---: | ---: | ---: | --- |', ...rows];
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  // A word that is a benchmark's whole name selects just that one ("create" is not "composefs-create").
  const selects = (w: string, name: string): boolean => benchmarks.some((b) => b.name === w) ? name === w : name.includes(w);
  const selected = benchmarks.filter((b) => wanted.length === 0 || wanted.some((w) => selects(w, b.name)));
  if (selected.length === 0) {
    process.stderr.write(`bench: no benchmark matches ${wanted.join(' ')}; names: ${benchmarks.map((b) => b.name).join(', ')}\n`);
    process.exit(2);
  }
  if (!isRoot()) process.stderr.write('bench: not root: no fresh loop filesystems, and image benchmarks are skipped\n');
  let imageReady = existsSync(join(LAYOUT, 'index.json'));
  if (!imageReady && isRoot() && selected.some((b) => b.needsImage)) {
    process.stderr.write('bench: building the Debian test image (once, about a minute)\n');
    await exec('bash', [join(REPO, 'scripts/build-debian-image.sh')], { env: { ...process.env, COWSHED_FIXTURES: CACHE } });
    imageReady = existsSync(join(LAYOUT, 'index.json'));
  }

  const results: BenchResult[] = [];
  const extra: string[] = [];
  const t0 = performance.now();
  if (process.env.BENCH_BASELINE) baseline = await baselineCheckout(REPO, process.env.BENCH_BASELINE);
  try {
    for (const b of selected) {
      if (b.needsImage && !imageReady) {
        extra.push(`- ${b.name}: skipped: the Debian test image is missing (run scripts/build-debian-image.sh as root)`);
        continue;
      }
      process.stderr.write(`bench: ${b.name}\n`);
      try {
        results.push(...await b.run());
      } catch (e) {
        extra.push(`- ${b.name}: failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
      }
    }
  } finally {
    await containers.dispose();
    await drivers.dispose();
    await registry.dispose();
    await trust.dispose();
    await startup.dispose();
    await chunked.dispose();
    await deltas.dispose();
    await baseline?.dispose();
  }
  const summary = limitsSummary(results);
  if (extra.length) extra.unshift('## Not run', '');
  if (summary.length) extra.push('', ...summary);
  const driverTable = drivers.table();
  if (driverTable.length) extra.push('', ...driverTable);
  const volumeTable = volumes.table();
  if (volumeTable.length) extra.push('', ...volumeTable);
  if (deltas.table().length) extra.push('', ...deltas.table());
  for (const b of selected) if (b.table?.().length) extra.push('', ...b.table());
  try {
    const targets = targetsSummary(results, extra);
    if (targets.length) extra.push('', ...targets);
  } catch (e) {
    extra.push('', `(targets summary failed: ${(e as Error).message})`); // never lose a long run's report to it
  }
  extra.push('', `Total bench time ${((performance.now() - t0) / 1000).toFixed(0)} s; ${RUNS} runs + ${WARMUP} warm-up per contender.`);
  const { path, body } = await writeReport(REPO, results, extra);
  process.stdout.write(body);
  process.stderr.write(`bench: report written to ${path}\n`);
}

await main();
