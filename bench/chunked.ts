// zstd:chunked benchmarks (issue 12), against one docker-registry on
// 127.0.0.1 holding a "rebuilt" Debian image in two versions (one full layer
// each, ~1% of the files edited in v2, derived from the fixture at run time)
// as zstd:chunked and as gzip:
//   zstd-chunked-update: pull v2 with v1 present: cowshed's partial pull,
//     cowshed pulling the whole layer, podman 4.3 (which pulls these whole);
//     bytes and time.
//   zstd-chunked-cold: cold pull of v1 as zstd:chunked against gzip.
//   zstd-chunked-bigfile: pull v2 of a one-file image (a large incompressible
//     file, a few bytes edited in the middle) with v1 present: chunk-level
//     reuse (only the changed chunks fetched) against the file fetched whole
//     (chunk lookup off) and podman 4.3 (whole layer); bytes and time.
// Select with `npm run bench zstd-chunked`.
import { createCipheriv } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.ts';
import { pullImage, type PullResult } from '../src/registry/pull.ts';
import { pushImage } from '../src/registry/push.ts';
import { rebuiltVersions } from '../test/helpers/rebuilt-image.ts';
import { type Benchmark, type Contender, measure, needTool, podman, ScratchFs } from './lib.ts';
import { LoopbackRegistry } from './registry.ts';

export interface ChunkedBenchOptions { repo: string; cache: string; runs: number; warmup: number }

/** The big file of zstd-chunked-bigfile. */
const BIG_FILE = 64 << 20;

const fmtBytes = (b: number): string => (Math.abs(b) >= 1e6 ? `${(b / 1e6).toFixed(2)} MB` : `${(b / 1e3).toFixed(1)} kB`);

export function chunkedBenchmarks(opts: ChunkedBenchOptions): { benchmarks: Benchmark[]; dispose: () => Promise<void> } {
  const m = { runs: opts.runs, warmup: opts.warmup };
  const live = new Set<ScratchFs>();
  const scratch = async (): Promise<ScratchFs> => { const fs = await ScratchFs.create(4); live.add(fs); return fs; };
  const drop = async (fs: ScratchFs | undefined): Promise<void> => { if (fs) { live.delete(fs); await fs.dispose(); } };

  interface Setup { reg: LoopbackRegistry; changed: number; files: number; bigFile: number }
  let setupP: Promise<Setup> | undefined;
  /** The registry with rebuilt:v1/v2 (zstd:chunked) and rebuilt-gz:v1/v2 (gzip), pushed by cowshed once. */
  const setup = (): Promise<Setup> => setupP ??= (async () => {
    const reg = await LoopbackRegistry.start();
    const fs = await scratch();
    try {
      const rb = rebuiltVersions(join(opts.cache, 'debian-rootfs.tar'), fs.path);
      const store = await Store.open(join(fs.path, 'store'));
      try {
        for (const t of ['v1', 'v2'] as const) {
          await store.importImage(`tar:${t === 'v1' ? rb.v1 : rb.v2}`, `rebuilt:${t}`);
          await pushImage(store, `rebuilt:${t}`, `${reg.host}/rebuilt:${t}`, { tlsVerify: false, compression: 'zstd:chunked' });
          await pushImage(store, `rebuilt:${t}`, `${reg.host}/rebuilt-gz:${t}`, { tlsVerify: false, compression: 'gzip' });
        }
        // bigfile:v1/v2: one incompressible file (AES-CTR keystream, fixed key), v2 with 5 bytes flipped in the middle.
        const big = Buffer.alloc(BIG_FILE);
        const ks = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16)).update(big);
        const dir = join(fs.path, 'bigfile');
        mkdirSync(dir);
        for (const t of ['v1', 'v2'] as const) {
          if (t === 'v2') for (let k = 0; k < 5; k++) ks[(BIG_FILE >> 1) + k * 3] ^= 0xff;
          writeFileSync(join(dir, 'big.bin'), ks);
          await store.importImage(`dir:${dir}`, `bigfile:${t}`);
          await pushImage(store, `bigfile:${t}`, `${reg.host}/bigfile:${t}`, { tlsVerify: false, compression: 'zstd:chunked' });
        }
      } finally {
        store.close();
      }
      return { reg, changed: rb.changed.length, files: rb.files, bigFile: BIG_FILE };
    } finally {
      await drop(fs);
    }
  })();

  /** A library pull into a fresh store per run (after an untimed pull of `before`); keeps the last result. */
  const libPull = (name: string, role: Contender['role'], repoTag: string, before: string | undefined, partial: boolean | 'no-chunks'): Contender & { last?: PullResult } => {
    let fs: ScratchFs | undefined;
    let store: Store | undefined;
    const c: Contender & { last?: PullResult } = {
      name, role,
      before: async () => { await setup(); },
      prepare: async () => {
        const { reg } = await setup();
        fs = await scratch();
        store = await Store.open(join(fs.path, 'store'));
        if (before) await pullImage(store, `${reg.host}/${before}`, { tlsVerify: false });
      },
      run: async () => {
        const how = partial === 'no-chunks' ? { partial: { chunks: false as const } } : partial ? {} : { partial: false as const };
        c.last = await pullImage(store!, `${(await setup()).reg.host}/${repoTag}`, { tlsVerify: false, ...how });
      },
      cleanup: async () => { store?.close(); store = undefined; await drop(fs); fs = undefined; },
    };
    return c;
  };
  const podmanPull = (name: string, repoTag: string, before: string): Contender => {
    let fs: ScratchFs | undefined;
    return {
      name, role: 'anchor', skip: needTool('podman', 'podman'),
      before: async () => { await setup(); },
      prepare: async () => { fs = await scratch(); await podman(fs.path, 'pull', '-q', '--tls-verify=false', `${(await setup()).reg.host}/${before}`); },
      run: async () => { await podman(fs!.path, 'pull', '-q', '--tls-verify=false', `${(await setup()).reg.host}/${repoTag}`); },
      cleanup: async () => { await drop(fs); fs = undefined; },
    };
  };

  const describePull = (label: string, p: PullResult | undefined): string | undefined => {
    if (!p) return undefined;
    const part = (x: PullResult['layers'][number]): string => x.filesPartial ? `, ${x.filesPartial} in part: ${fmtBytes(x.filesPartialBytes ?? 0)} of ${fmtBytes(x.filesPartialSize ?? 0)}` : '';
    const l = p.layers.map((x) => `${x.method}${x.method === 'partial' ? ` (${x.filesFetched} files fetched${part(x)}, ${x.filesFound} found in the store)` : ''}`).join(', ');
    return `${label}: ${fmtBytes(p.bytesFetched)} fetched; layer: ${l}`;
  };

  const update: Benchmark = {
    name: 'zstd-chunked-update',
    needsImage: true,
    async run() {
      const partial = libPull('cowshed partial pull v2 (zstd:chunked, in-process)', 'cowshed', 'rebuilt:v2', 'rebuilt:v1', true);
      const whole = libPull('cowshed whole-layer pull v2 (zstd, in-process)', 'cowshed', 'rebuilt:v2', 'rebuilt:v1', false);
      const r = await measure('update pull of a rebuilt Debian image (one full layer, ~1% of files edited), v1 present', [
        partial, whole, podmanPull('podman pull v2 (whole layer)', 'rebuilt:v2', 'rebuilt:v1'),
      ], m);
      const s = await setup();
      const [layer] = await s.reg.layers('rebuilt:v2');
      r.notes.push(`v2: ${s.changed} of ${s.files} files edited; its layer is ${fmtBytes(layer!.size)} as zstd:chunked (podman 4.3 fetches it whole)`);
      for (const x of [describePull('partial', partial.last), describePull('whole-layer', whole.last)]) if (x) r.notes.push(x);
      if (partial.last) r.notes.push(`partial pull fetched ${(100 * partial.last.bytesFetched / layer!.size).toFixed(1)}% of the v2 layer's bytes`);
      return [r];
    },
  };

  const cold: Benchmark = {
    name: 'zstd-chunked-cold',
    needsImage: true,
    async run() {
      const z = libPull('cowshed cold pull v1 as zstd:chunked (in-process)', 'cowshed', 'rebuilt:v1', undefined, true);
      const g = libPull('cowshed cold pull v1 as gzip (in-process)', 'anchor', 'rebuilt-gz:v1', undefined, true);
      const r = await measure('cold pull of the rebuilt Debian image: zstd:chunked against gzip', [z, g], m);
      const s = await setup();
      const [zl] = await s.reg.layers('rebuilt:v1');
      const [gl] = await s.reg.layers('rebuilt-gz:v1');
      r.notes.push(`layer: ${fmtBytes(zl!.size)} as zstd:chunked, ${fmtBytes(gl!.size)} as gzip`);
      for (const x of [describePull('zstd:chunked', z.last), describePull('gzip', g.last)]) if (x) r.notes.push(x);
      return [r];
    },
  };

  const bigfile: Benchmark = {
    name: 'zstd-chunked-bigfile',
    needsImage: true,
    async run() {
      const reuse = libPull('cowshed partial pull v2, chunk reuse (in-process)', 'cowshed', 'bigfile:v2', 'bigfile:v1', true);
      const whole = libPull('cowshed partial pull v2, chunk lookup off: the file whole (in-process)', 'anchor', 'bigfile:v2', 'bigfile:v1', 'no-chunks');
      const r = await measure(`update pull of a one-file image (${fmtBytes(BIG_FILE)} incompressible file, 5 bytes edited in the middle), v1 present`, [
        reuse, whole, { ...podmanPull('podman pull v2 (whole layer)', 'bigfile:v2', 'bigfile:v1'), role: 'reference' },
      ], m);
      const s = await setup();
      const [layer] = await s.reg.layers('bigfile:v2');
      r.notes.push(`v2 layer: ${fmtBytes(layer!.size)} as zstd:chunked`);
      for (const x of [describePull('chunk reuse', reuse.last), describePull('chunk lookup off', whole.last)]) if (x) r.notes.push(x);
      if (reuse.last && whole.last) r.notes.push(`bytes fetched: ${(reuse.last.bytesFetched / whole.last.bytesFetched).toFixed(4)} × the file fetched whole`);
      return [r];
    },
  };

  return {
    benchmarks: [update, cold, bigfile],
    dispose: async () => {
      if (setupP) { try { await (await setupP).reg.stop(); } catch { /* setup failed: nothing started */ } }
      for (const fs of [...live]) await drop(fs);
    },
  };
}
