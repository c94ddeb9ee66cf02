// Update deltas on the ten-version series (issue 13): for each server
// policy (full images only; consecutive deltas; every pair; log distances,
// i.e. skip-deltas), what the server stores and what a client fetches for
// an adjacent update, the average pair i < j and from scratch, with the
// time to generate and to apply; beside them OSTree static deltas, plain
// layer pulls and `btrfs send -p | zstd` of snapshots on a loop btrfs,
// zstd:chunked partial pulls, and the per-file plan (deltas and zstd:chunked
// ranges, whichever is cheaper per file) pulled for real.
//
// Client bytes come from the same planner the pull uses (src/delta/plan.ts)
// over the deltas on the policy's path from i to j, with a store that holds
// exactly version i; one pair per policy is also applied for real into a
// fresh store (bytes read and time measured, result checked by image id).
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.ts';
import { createDelta } from '../src/delta/create.ts';
import { encodeIndex, type DeltaIndex } from '../src/delta/format.ts';
import { DeltaPlanner, layerKey } from '../src/delta/plan.ts';
import { bytesReadBy, openLocalDelta, writeDeltaLayout, type DeltaReader } from '../src/delta/artifact.ts';
import { deltaImageSource, prepareDelta } from '../src/delta/apply.ts';
import { parsePolicy, policyBases } from '../src/delta/policy.ts';
import { splitRefs, storedSplit } from '../src/delta/split-refs.ts';
import { type Benchmark, exec, ScratchFs, which } from './lib.ts';
import { startRegistry } from '../test/registry/servers.ts';

export interface DeltaBenchOptions { repo: string; cache: string }

const N = 10;
const fmt = (b: number): string => (b >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
/** Pairs (i < j) beside adjacent ones where the anchors are measured (all pairs would take too long for OSTree). */
const SAMPLE_PAIRS: Array<[number, number]> = [[1, 3], [2, 7], [1, 10], [4, 9], [3, 8], [5, 6], [6, 10], [2, 5]];
/** Pairs pulled for real with the per-file plan: every adjacent update, v1→v3, and 2→7 (no log delta starts at v2). */
const PER_FILE_PAIRS: Array<[number, number]> = [...Array.from({ length: N - 1 }, (_, k): [number, number] => [k + 1, k + 2]), [1, 3], [2, 7]];

interface PolicyRow { name: string; server: number; adjacent: number; random: number; scratch: number; genMs: number; applyMs?: number; applyPair?: string; applyBytes?: number }

export function deltaBenchmarks(opts: DeltaBenchOptions): { benchmark: Benchmark; dispose: () => Promise<void>; table: () => string[] } {
  const live = new Set<ScratchFs>();
  const stores = new Set<Store>();
  const lines: string[] = [];
  const cli = join(opts.repo, 'bin/cowshed.js');

  const benchmark: Benchmark = {
    name: 'deltas',
    needsImage: true,
    async run() {
      const series = execFileSync('bash', [join(opts.repo, 'scripts/build-debian-series.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!;
      const fs = await ScratchFs.create(16);
      live.add(fs);
      const storeDir = join(fs.path, 'store');
      const store = await Store.open(storeDir);
      stores.add(store);
      const name = (k: number) => `series:v${k}`;
      const layerSize: number[] = [];
      const ids: string[] = [];
      for (let k = 1; k <= N; k++) {
        process.stderr.write(`bench deltas: import v${k}\n`);
        const r = await store.importImage(`oci:${series}:v${k}`, name(k));
        ids[k] = r.id;
        layerSize[k] = store.inspectImage(name(k)).layers.reduce((a, l) => a + l.size, 0);
      }
      const objectsOf = (k: number) => new Set(store.db.all<{ digest: string }>('SELECT digest FROM image_objects WHERE image_id = ?', ids[k]).map((r) => r.digest));
      const layersOf = (k: number) => new Set(store.inspectImage(name(k)).layers.map((l) => l.diffId.slice(7)));

      // Every pair's delta (each policy uses a subset).
      const deltas = new Map<string, { index: DeltaIndex; indexBytes: number; size: number; ms: number }>();
      const deltaDir = join(fs.path, 'deltas');
      for (let j = 2; j <= N; j++) {
        for (let i = 1; i < j; i++) {
          const t0 = performance.now();
          const d = await createDelta(store, name(i), name(j));
          const ms = performance.now() - t0;
          const ixBytes = encodeIndex(d.index).length;
          await writeDeltaLayout(deltaDir, d, `v${i}-v${j}`);
          deltas.set(`${i}-${j}`, { index: d.index, indexBytes: ixBytes, size: ixBytes + d.packs.reduce((a, p) => a + p.length, 0), ms });
        }
        process.stderr.write(`bench deltas: deltas to v${j} made\n`);
      }

      const policies: Array<{ name: string; spec: string | undefined }> = [
        { name: 'full images only', spec: undefined },
        { name: 'consecutive deltas', spec: 'consecutive' },
        { name: 'every pair', spec: 'all' },
        { name: 'log distances (skip-delta, default)', spec: 'log' },
      ];
      /** Deltas on the path from i to j: from j, the delta whose base is the oldest version not below i. */
      const pathOf = (have: Set<string>, i: number, j: number): Array<[number, number]> | undefined => {
        const path: Array<[number, number]> = [];
        let cur = j;
        while (cur !== i) {
          const bases = [...have].filter((k) => k.endsWith(`-${cur}`)).map((k) => Number(k.split('-')[0])).filter((b) => b >= i);
          if (bases.length === 0) return undefined;
          const b = Math.min(...bases);
          path.push([b, cur]);
          cur = b;
        }
        return path;
      };
      /** Bytes a host holding exactly version i fetches to get j under a policy (never more than the layer). */
      const clientBytes = (have: Set<string>, i: number, j: number): number => {
        const path = pathOf(have, i, j);
        if (!path) return layerSize[j];
        const ixs = path.map(([b, t]) => deltas.get(`${b}-${t}`)!);
        const objs = objectsOf(i);
        const lays = layersOf(i);
        const planner = new DeltaPlanner(ixs.map((d) => d.index), { object: (h) => objs.has(h), layer: (h) => lays.has(h) });
        const target = store.inspectImage(name(j)).layers.map((l) => l.diffId);
        const refs = target.flatMap((d) => splitRefs(storedSplit(store, d)!).map((r) => r.digest));
        const c = planner.closure([...target.map(layerKey), ...refs]);
        if (c.missing.length > 0) return layerSize[j];
        return Math.min(layerSize[j], c.bytes + ixs.reduce((a, d) => a + d.indexBytes, 0));
      };

      const rows: PolicyRow[] = [];
      const fullServer = layerSize.slice(1).reduce((a, b) => a + b, 0);
      const scratchAvg = layerSize.slice(1).reduce((a, b) => a + b, 0) / N;
      for (const p of policies) {
        const have = new Set<string>();
        if (p.spec !== undefined) {
          const pol = parsePolicy(p.spec);
          for (let j = 2; j <= N; j++) for (const b of policyBases(pol, j)) have.add(`${b}-${j}`);
        }
        let adjacent = 0;
        for (let j = 2; j <= N; j++) adjacent += clientBytes(have, j - 1, j);
        let random = 0;
        let pairs = 0;
        for (let j = 2; j <= N; j++) for (let i = 1; i < j; i++) { random += clientBytes(have, i, j); pairs++; }
        const server = fullServer + [...have].reduce((a, k) => a + deltas.get(k)!.size, 0);
        const genMs = [...have].reduce((a, k) => a + deltas.get(k)!.ms, 0);
        rows.push({ name: p.name, server, adjacent: adjacent / (N - 1), random: random / pairs, scratch: scratchAvg, genMs });
        // One real apply per delta policy: 2 → 7 into a store holding only v2.
        if (p.spec !== undefined) {
          const path = pathOf(have, 2, 7)!;
          const sub = join(fs.path, `apply-${rows.length}`);
          const s2 = await Store.open(sub);
          stores.add(s2);
          await s2.importImage(`oci:${series}:v2`, name(2));
          const readers: DeltaReader[] = [];
          const t0 = performance.now();
          for (const [b, t] of path) readers.push(await openLocalDelta(`oci:${deltaDir}:v${b}-v${t}`));
          const target = readers[0].index;
          const prepared = await prepareDelta(s2, readers, store.inspectImage(name(7)).layers.map((l) => l.diffId));
          let id: string;
          try {
            id = (await s2.importSource(deltaImageSource(target, prepared, s2, 'bench'), name(7))).id;
          } finally {
            prepared.dispose();
          }
          const ms = performance.now() - t0;
          if (id !== ids[7]) throw new Error(`apply 2 → 7 (${p.name}) gave ${id}, not ${ids[7]}`);
          const row = rows.at(-1)!;
          row.applyMs = ms;
          row.applyPair = `2→7 via ${path.map(([b, t]) => `${b}→${t}`).reverse().join(', ')}`;
          row.applyBytes = bytesReadBy(readers);
          s2.close();
          stores.delete(s2);
          execFileSync('rm', ['-rf', sub]);
        }
      }

      const emit = (extra: string[]): void => {
        lines.push('## Updates by deltas: ten versions of a rebuilt Debian image (issue 13)', '');
        lines.push(`Each version one full layer (${fmt(scratchAvg)} gzip on average); about 2% of files edited by a few bytes, 3 added and 2 removed between neighbours (scripts/build-debian-series.sh).`, '');
        lines.push('| policy | server stores | adjacent update | average pair i<j | from scratch | time to generate (all deltas) | apply (real) |');
        lines.push('| --- | --- | --- | --- | --- | --- | --- |');
        for (const r of rows) {
          const apply = r.applyMs === undefined ? '—' : `${secs(r.applyMs)} for ${r.applyPair} (${fmt(r.applyBytes!)} read)`;
          lines.push(`| ${r.name} | ${fmt(r.server)} | ${fmt(r.adjacent)} | ${fmt(r.random)} | ${fmt(r.scratch)} | ${r.genMs ? secs(r.genMs) : '—'} | ${apply} |`);
        }
        lines.push(...extra);
      };
      try {
        emit(await anchors());
      } catch (e) {
        emit([`| anchors failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)} | | | | | | |`]);
      }
      await store.close();
      stores.delete(store);
      return [];

      async function anchors(): Promise<string[]> {
      const out: string[] = [];
      // ---- anchors: OSTree static deltas and btrfs send -p, on the same trees (mounted from the store).
      const anchorPairs: Array<[number, number]> = [];
      for (let j = 2; j <= N; j++) anchorPairs.push([j - 1, j]);
      for (const p of SAMPLE_PAIRS) if (p[1] - p[0] !== 1) anchorPairs.push(p);
      const haveOstree = (await which('ostree')) && (await which('rsync'));
      const btrfsFs = (await which('mkfs.btrfs')) && (await which('rsync')) ? await ScratchFs.create(8, 'btrfs') : undefined;
      if (btrfsFs) live.add(btrfsFs);
      const repo = join(fs.path, 'ostree');
      if (haveOstree) await exec('ostree', ['init', '--repo', repo, '--mode=bare']);
      const commitMs: number[] = [];
      for (let k = 1; k <= N; k++) {
        const mnt = (await exec(process.execPath, [cli, '--store', storeDir, 'mount', name(k)])).stdout.trim().split('\n').pop()!;
        try {
          if (haveOstree) {
            // OSTree cannot hold device nodes, fifos or sockets (/dev/console, …): it commits a copy without them.
            const plain = join(fs.path, 'ostree-tree');
            await exec('rsync', ['-aHAX', '--delete', '--no-devices', '--no-specials', `${mnt}/`, `${plain}/`]);
            const t0 = performance.now();
            await exec('ostree', ['commit', '--repo', repo, '--branch', `v${k}`, `--tree=dir=${plain}`, '--no-bindings']);
            commitMs.push(performance.now() - t0);
          }
          if (btrfsFs) {
            const w = join(btrfsFs.path, 'work');
            if (k === 1) await exec('btrfs', ['subvolume', 'create', w]);
            await exec('rsync', ['-aHAX', '--delete', '--inplace', '--no-whole-file', `${mnt}/`, `${w}/`]);
            await exec('btrfs', ['subvolume', 'snapshot', '-r', w, join(btrfsFs.path, `v${k}`)]);
          }
        } finally {
          await exec(process.execPath, [cli, '--store', storeDir, 'umount', name(k)], { allowFail: true });
        }
        process.stderr.write(`bench deltas: anchors v${k}\n`);
      }
      const dirBytes = (d: string): number => {
        let n = 0;
        if (!existsSync(d)) return 0;
        for (const e of readdirSync(d, { withFileTypes: true })) n += e.isDirectory() ? dirBytes(join(d, e.name)) : lstatSync(join(d, e.name)).size; // bare repos hold symlinks
        return n;
      };
      const ostreeDelta = async (from: number | undefined, to: number): Promise<{ bytes: number; ms: number }> => {
        const before = dirBytes(join(repo, 'deltas'));
        const t0 = performance.now();
        await exec('ostree', ['static-delta', 'generate', '--repo', repo, ...(from === undefined ? ['--empty'] : [`--from=v${from}`]), `--to=v${to}`]);
        return { bytes: dirBytes(join(repo, 'deltas')) - before, ms: performance.now() - t0 };
      };
      const btrfsSend = async (from: number | undefined, to: number): Promise<number> => {
        const args = ['send', '-q', ...(from === undefined ? [] : ['-p', join(btrfsFs!.path, `v${from}`)]), join(btrfsFs!.path, `v${to}`)];
        const r = await exec('sh', ['-c', `btrfs ${args.map((a) => `'${a}'`).join(' ')} | zstd -3 -q -c | wc -c`]);
        return Number(r.stdout.trim());
      };
      const ost = new Map<string, { bytes: number; ms: number }>();
      const btr = new Map<string, number>();
      for (const [i, j] of anchorPairs) {
        if (haveOstree) ost.set(`${i}-${j}`, await ostreeDelta(i, j));
        if (btrfsFs) btr.set(`${i}-${j}`, await btrfsSend(i, j));
      }
      // zstd:chunked partial pulls of the same versions, for real: every version
      // pushed as zstd:chunked to a docker-registry on loopback; for each pair a
      // fresh store holding version i pulls version j without deltas.
      const chunked = new Map<string, number>();
      let chunkedScratch: number | undefined;
      let chunkedServer = 0;
      const perFile = new Map<string, { bytes: number; plan: string }>();
      let perFileServer = 0;
      if (await which('docker-registry')) {
        const reg = await startRegistry(join(fs.path, 'registry'));
        try {
          const cliIn = (store: string, ...args: string[]) => exec(process.execPath, [cli, '--store', store, ...args]);
          for (let k = 1; k <= N; k++) await cliIn(storeDir, 'push', '-q', '--tls-verify=false', '--compression-format', 'zstd:chunked', name(k), `${reg.host}/series:v${k}`);
          chunkedServer = dirBytes(join(fs.path, 'registry'));
          const pull = async (client: string, k: number): Promise<number> =>
            (JSON.parse((await cliIn(client, 'pull', '--json', '--no-deltas', '--tls-verify=false', `${reg.host}/series:v${k}`)).stdout.trim().split('\n').pop()!) as { bytesFetched: number }).bytesFetched;
          for (const [i, j] of anchorPairs) {
            const client = join(fs.path, `chunked-${i}-${j}`);
            await cliIn(client, 'import', `oci:${series}:v${i}`, name(i));
            chunked.set(`${i}-${j}`, await pull(client, j));
            rmSync(client, { recursive: true, force: true });
          }
          chunkedScratch = await pull(join(fs.path, 'chunked-scratch'), N);
          rmSync(join(fs.path, 'chunked-scratch'), { recursive: true, force: true });
          // The per-file plan (src/delta/mixed.ts): the same zstd:chunked versions with
          // log-distance deltas next to them (push --deltas again: the layers are there
          // already), pulled with deltas into a store holding version i. Each layer takes
          // the cheapest of the deltas, the ranges, per file both, or the layer.
          for (let k = 2; k <= N; k++) await cliIn(storeDir, 'push', '-q', '--tls-verify=false', '--deltas', '--compression-format', 'zstd:chunked', name(k), `${reg.host}/series:v${k}`);
          perFileServer = dirBytes(join(fs.path, 'registry'));
          for (const [i, j] of PER_FILE_PAIRS) {
            const client = join(fs.path, `perfile-${i}-${j}`);
            await cliIn(client, 'import', `oci:${series}:v${i}`, name(i));
            const r = JSON.parse((await cliIn(client, 'pull', '--json', '--tls-verify=false', `${reg.host}/series:v${j}`)).stdout.trim().split('\n').pop()!) as { bytesFetched: number; layers: Array<{ plan?: string }> };
            perFile.set(`${i}-${j}`, { bytes: r.bytesFetched, plan: r.layers.map((l) => l.plan ?? '?').join('+') });
            rmSync(client, { recursive: true, force: true });
          }
          process.stderr.write('bench deltas: per-file plan pulls\n');
        } finally {
          await reg.stop();
        }
        process.stderr.write('bench deltas: zstd:chunked partial pulls\n');
      }
      const ostScratch = haveOstree ? await ostreeDelta(undefined, N) : undefined;
      const btrScratch = btrfsFs ? await btrfsSend(undefined, N) : undefined;
      const avg = (m: Map<string, number>, keys: string[]): number => keys.reduce((a, k) => a + m.get(k)!, 0) / keys.length;
      const adjKeys = anchorPairs.filter(([i, j]) => j - i === 1).map(([i, j]) => `${i}-${j}`);
      const sampleKeys = anchorPairs.map(([i, j]) => `${i}-${j}`);
      const ostBytes = new Map([...ost].map(([k, v]) => [k, v.bytes]));

      // Our figures on the same sample of pairs, for a like-for-like column.
      const logHave = new Set<string>();
      for (let j = 2; j <= N; j++) for (const b of policyBases(parsePolicy('log'), j)) logHave.add(`${b}-${j}`);
      const ours13 = clientBytes(logHave, 1, 3);
      const oursSample = sampleKeys.reduce((a, k) => { const [i, j] = k.split('-').map(Number); return a + clientBytes(logHave, i, j); }, 0) / sampleKeys.length;

      if (haveOstree) {
        const adj = avg(ostBytes, adjKeys);
        const genAll = [...ost.values()].reduce((a, v) => a + v.ms, 0);
        out.push(`| OSTree static deltas (consecutive + ${sampleKeys.length - adjKeys.length} sample pairs) | repo ${fmt(dirBytes(join(repo, 'objects')))} + deltas ${fmt(dirBytes(join(repo, 'deltas')))} | ${fmt(adj)} | ${fmt(avg(ostBytes, sampleKeys))} (sample) | ${fmt(ostScratch!.bytes)} (--empty) | ${secs(genAll)} for ${ost.size} deltas; commits ${secs(commitMs.reduce((a, b) => a + b, 0))} | — |`);
      }
      if (btrfsFs) {
        out.push(`| btrfs send -p \\| zstd -3 (rsync --inplace snapshots) | — | ${fmt(avg(btr, adjKeys))} | ${fmt(avg(btr, sampleKeys))} (sample) | ${fmt(btrScratch!)} | — | — |`);
      }
      out.push(`| plain layer pull | ${fmt(fullServer)} | ${fmt(scratchAvg)} | ${fmt(scratchAvg)} | ${fmt(scratchAvg)} | — | — |`);
      if (chunkedScratch !== undefined) {
        out.push(`| zstd:chunked partial pull (docker-registry on loopback, --no-deltas) | registry ${fmt(chunkedServer)} | ${fmt(avg(chunked, adjKeys))} | ${fmt(avg(chunked, sampleKeys))} (sample) | ${fmt(chunkedScratch)} | — | — |`);
      }
      if (perFile.size > 0) {
        const pf = (k: string): string => `${fmt(perFile.get(k)!.bytes)} (${perFile.get(k)!.plan}${chunked.has(k) ? `; ranges alone ${fmt(chunked.get(k)!)}` : ''})`;
        const adjPlans = [...new Set(adjKeys.map((k) => perFile.get(k)!.plan))].join(', ');
        const others = PER_FILE_PAIRS.filter(([i, j]) => j - i !== 1).map(([i, j]) => `v${i}→v${j} ${pf(`${i}-${j}`)}`).join('; ');
        out.push(`| per-file plan (deltas + zstd:chunked ranges) | registry ${fmt(perFileServer)} (layers + log deltas) | ${fmt(avg(new Map([...perFile].map(([k, v]) => [k, v.bytes])), adjKeys))} (${adjPlans}) | ${others} | ${fmt(chunkedScratch!)} (no deltas to an empty store) | — | — |`);
      }
      out.push('');
      if (haveOstree) {
        const o13 = ost.get('1-3')!.bytes;
        out.push(`Done-when: v1→v3 with log-distance deltas fetches ${fmt(ours13)}; \`ostree static-delta generate --from v1 --to v3\` is ${fmt(o13)} (${(ours13 / o13).toFixed(3)} × OSTree). On the ${sampleKeys.length} sample pairs: cowshed ${fmt(oursSample)} vs OSTree ${fmt(avg(ostBytes, sampleKeys))} on average.`);
        if (chunked.has('1-3')) out.push(`A zstd:chunked partial pull of v3 onto v1 fetches ${fmt(chunked.get('1-3')!)} (${(chunked.get('1-3')! / o13).toFixed(2)} × OSTree).`);
      }
      if (perFile.size > 0) out.push('Per-file plan: real pulls (manifest, referrers, delta indexes included) into a store that imported version i from the layout, so it holds no pushed manifest a delta chain starts from: only the deltas straight to the target are read, and a layer whose tar-split record is a patch against a layer the store lacks (v2→v7) is paired with its TOC by file size (plan in parentheses).');
      out.push('Client bytes include the delta indexes fetched; a host that holds version i and nothing else. "average pair" is over all 45 pairs i<j for cowshed policies. OSTree commits a copy of each tree without its device nodes (it cannot hold them).');
      return out;
      }
    },
  };

  return {
    benchmark,
    table: () => lines,
    dispose: async () => {
      for (const s of stores) { try { s.close(); } catch { /* closed */ } }
      for (const f of live) await f.dispose();
      live.clear();
    },
  };
}
