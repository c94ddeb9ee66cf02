// Container benchmarks (issue 3): create + mount, diff of 10 changes and
// commit of one changed file, cowshed (library call and whole CLI process)
// against podman, `btrfs subvolume snapshot` and `cp -a`, on the Debian image
// and on a 100k-entry synthetic image (the cost must not grow with the image).
//
// One store and one podman root, each with both images, are made on first use
// and shared by the three benchmarks; dispose() removes everything.
import { appendFileSync, chmodSync, existsSync, lstatSync, readdirSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { Store } from '../src/store/store.ts';
import { createContainer, removeContainer, listContainers } from '../src/containers/containers.ts';
import { diffUpper } from '../src/containers/diff.ts';
import { commitContainer } from '../src/containers/commit.ts';
import { containerLower, containerPaths } from '../src/drivers/composefs.ts';
import { generateTree } from '../scripts/gen-synthetic-tree.ts';
import {
  type Benchmark, type BenchResult, type Contender, exec, measure, needTool, podman, ScratchFs,
} from './lib.ts';
import { podmanOciRef } from '../test/helpers/cli.ts';

export interface ContainerBenchOptions {
  repo: string;
  /** Fixture cache (COWSHED_FIXTURES). */
  cache: string;
  runs: number;
  warmup: number;
}

const DEBIAN = 'debian:v1';
const SYNTH = 'synth100k:v1';
const SYNTH_ENTRIES = 100_000;

/**
 * The 100k-entry image, built once into the cache. Packed with `umoci
 * repack` (relative paths) rather than gen-synthetic-tree's `--oci` (`umoci
 * insert DIR /`), whose layer starts with an entry named "/" that cowshed's
 * import refuses as an absolute path.
 */
export async function ensureSyntheticLayout(cache: string): Promise<string> {
  const layout = join(cache, 'synthetic-100k-oci');
  const stamp = `${layout}.stamp`;
  if (existsSync(stamp) && existsSync(join(layout, 'index.json'))) return layout;
  process.stderr.write('bench: building the 100k-entry synthetic image (once, about 20 s)\n');
  const tmp = await mkdtemp(join(cache, '.synthetic-'));
  try {
    const oci = join(tmp, 'oci');
    const bundle = join(tmp, 'bundle');
    await exec('umoci', ['init', '--layout', oci]);
    await exec('umoci', ['new', '--image', `${oci}:v1`]);
    await exec('umoci', ['unpack', '--image', `${oci}:v1`, bundle]);
    generateTree(join(bundle, 'rootfs'), { entries: SYNTH_ENTRIES, seed: 1, ociFaithful: true });
    await exec('umoci', ['config', '--image', `${oci}:v1`, '--config.cmd', '/bin/sh']);
    await exec('umoci', ['repack', '--image', `${oci}:v1`, '--history.created_by', `gen-synthetic-tree --entries ${SYNTH_ENTRIES}`, bundle]);
    await exec('umoci', ['gc', '--layout', oci]);
    rmSync(layout, { recursive: true, force: true });
    renameSync(oci, layout);
    writeFileSync(stamp, `${new Date().toISOString()} ${SYNTH_ENTRIES} entries, seed 1\n`);
    return layout;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The first n regular files (single link, not empty) of a tree, depth first in name order. */
export function pickFiles(root: string, n: number): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      if (out.length >= n) return;
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, p));
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.nlink === 1 && st.size > 0) out.push(p);
    }
  };
  walk('');
  if (out.length < n) throw new Error(`${root}: fewer than ${n} regular files to change`);
  return out;
}

/**
 * The same 10 changes in a container's root: 4 files added (next to the
 * first picked file), 3 changed, 2 deleted, 1 chmod. `files` come from
 * pickFiles() on the image, so cowshed's and podman's containers get the same.
 */
export function makeTenChanges(rootfs: string, files: string[]): void {
  const dir = dirname(files[0]!);
  for (let i = 0; i < 4; i++) writeFileSync(join(rootfs, dir, `bench-added-${i}`), `added ${i}\n`);
  for (const f of files.slice(0, 3)) appendFileSync(join(rootfs, f), 'changed\n');
  for (const f of files.slice(3, 5)) rmSync(join(rootfs, f));
  const f = join(rootfs, files[5]!);
  chmodSync(f, lstatSync(f).mode & 0o7777 ^ 0o100);
}

/** Bytes used on the filesystem holding path (for the df delta). */
const usedBytes = (path: string): number => {
  const s = statfsSync(path);
  return (s.blocks - s.bfree) * s.bsize;
};

const duBytes = async (path: string): Promise<number> =>
  Number((await exec('du', ['-sx', '--block-size=1', path])).stdout.split('\t')[0]);

const fmtBytes = (b: number): string =>
  Math.abs(b) >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(0)} kB`;

const ratioNote = (r: BenchResult, a: string, b: string, what: string): string | undefined => {
  const x = r.contenders.find((c) => c.name === a)?.medianMs;
  const y = r.contenders.find((c) => c.name === b)?.medianMs;
  return x && y ? `${what}: ${(x / y).toFixed(2)}` : undefined;
};

const medianOf = (r: BenchResult, name: string): number | undefined => r.contenders.find((c) => c.name === name)?.medianMs;

/** The shared store, podman root and unpacked rootfs, made on first use. */
class Fixtures {
  private readonly opts: ContainerBenchOptions;
  private fs: ScratchFs | undefined;
  private storeP: Promise<Store> | undefined;
  private podmanP = new Map<string, Promise<string>>();
  private synthP: Promise<string> | undefined;
  private rootfsP: Promise<ScratchFs> | undefined;
  private btrfsP: Promise<ScratchFs> | undefined;

  constructor(opts: ContainerBenchOptions) { this.opts = opts; }

  get debianLayout(): string { return join(this.opts.cache, 'debian-oci'); }
  get storeDir(): string { return join(this.fs!.path, 'store'); }
  get podmanDir(): string { return join(this.fs!.path, 'podman'); }

  private async scratch(): Promise<string> {
    this.fs ??= await ScratchFs.create(12);
    return this.fs.path;
  }

  synthLayout(): Promise<string> {
    return this.synthP ??= ensureSyntheticLayout(this.opts.cache);
  }

  /** The cowshed store with both images imported. */
  store(): Promise<Store> {
    return this.storeP ??= (async () => {
      const synth = await this.synthLayout();
      await this.scratch();
      const store = await Store.open(this.storeDir);
      await store.importImage(`oci:${this.debianLayout}:v1`, DEBIAN);
      await store.importImage(`oci:${synth}:v1`, SYNTH);
      return store;
    })();
  }

  /** A podman image id, pulled once from the OCI layout into the throwaway podman root. */
  podmanImage(which: 'debian' | 'synth'): Promise<string> {
    let p = this.podmanP.get(which);
    if (!p) {
      p = (async () => {
        const layout = which === 'debian' ? this.debianLayout : await this.synthLayout();
        await this.scratch();
        return (await podman(this.podmanDir, 'pull', '-q', podmanOciRef(layout, 'v1'))).stdout.trim();
      })();
      this.podmanP.set(which, p);
    }
    return p;
  }

  /** The Debian rootfs unpacked on a fresh ext4 (for cp -a): path of the rootfs. */
  async ext4Rootfs(): Promise<string> {
    const fs = await (this.rootfsP ??= (async () => {
      const fs = await ScratchFs.create(4);
      await exec('mkdir', [join(fs.path, 'rootfs')]);
      await exec('tar', ['-C', join(fs.path, 'rootfs'), '--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', join(this.opts.cache, 'debian-rootfs.tar')]);
      return fs;
    })());
    return join(fs.path, 'rootfs');
  }

  /** A btrfs filesystem with the Debian rootfs in subvolume `base`: the filesystem's path. */
  async btrfs(): Promise<string> {
    const fs = await (this.btrfsP ??= (async () => {
      const fs = await ScratchFs.create(4, 'btrfs');
      await exec('btrfs', ['-q', 'subvolume', 'create', join(fs.path, 'base')]);
      await exec('tar', ['-C', join(fs.path, 'base'), '--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', join(this.opts.cache, 'debian-rootfs.tar')]);
      return fs;
    })());
    return fs.path;
  }

  async dispose(): Promise<void> {
    const errors: string[] = [];
    const attempt = async (f: () => unknown): Promise<void> => {
      try { await f(); } catch (e) { errors.push(e instanceof Error ? e.message.split('\n')[0]! : String(e)); }
    };
    if (this.storeP) {
      await attempt(async () => {
        const store = await this.storeP!;
        for (const c of listContainers(store, { all: true })) await attempt(() => removeContainer(store, c.id, { force: true }));
        store.close();
      });
    }
    if (this.podmanP.size > 0) {
      await attempt(() => podman(this.podmanDir, 'rm', '-a', '-f'));
      await attempt(() => podman(this.podmanDir, 'rmi', '-a', '-f'));
    }
    // ScratchFs.dispose unmounts whatever is left below (overlays, EROFS loops) before its own filesystem.
    for (const p of [this.rootfsP, this.btrfsP]) if (p) await attempt(async () => (await p).dispose());
    if (this.fs) await attempt(() => this.fs!.dispose());
    if (this.synthP) await attempt(() => this.synthP);
    if (errors.length) process.stderr.write(`bench: container fixtures cleanup: ${errors.join('; ')}\n`);
  }
}

export function containerBenchmarks(opts: ContainerBenchOptions): { benchmarks: Benchmark[]; dispose: () => Promise<void> } {
  const fx = new Fixtures(opts);
  const m = { runs: opts.runs, warmup: opts.warmup };
  const cli = join(opts.repo, 'bin/cowshed.js');
  const cowshed = async (...args: string[]): Promise<string> =>
    (await exec(process.execPath, [cli, '--store', fx.storeDir, ...args], { cwd: opts.repo })).stdout.trim();
  const pm = (...args: string[]) => podman(fx.podmanDir, ...args);
  const noPodman = needTool('podman', 'podman');

  /** A cowshed container that keeps an image's EROFS mount up, as in steady use (one per image). */
  const holders = new Map<string, string>();
  const holdImage = async (image: string): Promise<void> => {
    const store = await fx.store();
    if (!holders.has(image)) holders.set(image, (await createContainer(store, image)).id);
  };

  // ---- create + mount ----
  const libCreate = (name: string, image: string): Contender => {
    let store: Store;
    let id: string | undefined;
    return {
      name, role: 'cowshed',
      before: async () => { store = await fx.store(); await holdImage(image); },
      run: async () => { id = (await createContainer(store, image)).id; },
      cleanup: async () => { if (id) removeContainer(store, id); id = undefined; },
    };
  };
  const cliCreate = (name: string, image: string, withMount: boolean): Contender => {
    let store: Store;
    let id: string | undefined;
    return {
      name, role: 'cowshed',
      before: async () => { store = await fx.store(); await holdImage(image); },
      run: async () => {
        id = await cowshed('create', image);
        if (withMount) await cowshed('mount', id);
      },
      cleanup: async () => { if (id) removeContainer(store, id); id = undefined; },
    };
  };
  const podmanCreate = (name: string, which: 'debian' | 'synth', withMount: boolean): Contender => {
    let image: string;
    let id: string | undefined;
    return {
      name, role: 'anchor', skip: noPodman,
      before: async () => { image = await fx.podmanImage(which); },
      run: async () => {
        id = (await pm('create', image, '/bin/sh')).stdout.trim();
        if (withMount) await pm('mount', id);
      },
      cleanup: async () => { if (id) await pm('rm', '-f', id); id = undefined; },
    };
  };

  const createBench: Benchmark = {
    name: 'create',
    needsImage: true,
    async run() {
      let n = 0;
      const btrfsRun = (): Contender => {
        let path: string;
        let snap: string | undefined;
        return {
          name: 'btrfs subvolume snapshot (Debian rootfs)', role: 'anchor', skip: needTool('btrfs', 'btrfs-progs'),
          before: async () => { path = await fx.btrfs(); },
          run: async () => { snap = join(path, `snap-${n++}`); await exec('btrfs', ['-q', 'subvolume', 'snapshot', join(path, 'base'), snap]); },
          cleanup: async () => { if (snap) await exec('btrfs', ['-q', 'subvolume', 'delete', snap]); snap = undefined; },
        };
      };
      const cpRun = (): Contender => {
        let rootfs: string;
        return {
          // Copies stay until the end: deleting them between runs would slow the next copy (ext4 inode allocator, BENCH.md).
          name: 'cp -a (Debian rootfs, ext4)', role: 'anchor',
          before: async () => { rootfs = await fx.ext4Rootfs(); },
          run: async () => { await exec('cp', ['-a', rootfs, `${rootfs}-copy-${n++}`]); },
        };
      };
      const lib = await measure('create + mount one container, library call (in-process)', [
        libCreate('createContainer(), Debian', DEBIAN),
        libCreate('createContainer(), 100k-entry image', SYNTH),
        btrfsRun(),
        cpRun(),
      ], m);
      const libMs = medianOf(lib, 'createContainer(), Debian');
      if (libMs) lib.notes.push(`library create on Debian: ${libMs.toFixed(1)} ms (target ≤ 15 ms)`);
      const scale = ratioNote(lib, 'createContainer(), 100k-entry image', 'createContainer(), Debian', '100k-entry / Debian (target ≤ 1.5)');
      if (scale) lib.notes.push(scale);
      lib.notes.push('the image\'s EROFS mount is already up (another container of the image holds it), as in steady use');
      lib.notes.push('btrfs and cp -a are whole processes (a few ms of fork + exec included); they copy or snapshot the unpacked Debian rootfs');

      const proc = await measure('create (+ mount) one container, whole CLI processes', [
        cliCreate('cowshed create, Debian', DEBIAN, false),
        cliCreate('cowshed create + cowshed mount, Debian', DEBIAN, true),
        cliCreate('cowshed create, 100k-entry image', SYNTH, false),
        podmanCreate('podman create, Debian', 'debian', false),
        podmanCreate('podman create + podman mount, Debian', 'debian', true),
        podmanCreate('podman create, 100k-entry image', 'synth', false),
        { name: 'node -e 0 (start-up floor)', role: 'reference', run: async () => { await exec(process.execPath, ['-e', '0']); } },
      ], m);
      const r1 = ratioNote(proc, 'cowshed create, Debian', 'podman create, Debian', 'cowshed create / podman create (target ≤ 0.3)');
      const r2 = ratioNote(proc, 'cowshed create + cowshed mount, Debian', 'podman create + podman mount, Debian', 'cowshed create + mount / podman create + mount');
      for (const r of [r1, r2]) if (r) proc.notes.push(r);
      const cliMs = medianOf(proc, 'cowshed create, Debian');
      const floor = medianOf(proc, 'node -e 0 (start-up floor)');
      if (cliMs && floor) proc.notes.push(`cowshed create beyond Node start-up: ${(cliMs - floor).toFixed(0)} ms`);
      proc.notes.push('neither create mounts the container (its first mount or commit does); the + mount rows are two processes each');

      // 100 containers in one go, and what they cost on disk.
      let store: Store;
      let ids: string[] = [];
      let disk: string | undefined;
      let before = { du: 0, df: 0 };
      const hundred = await measure('create + mount 100 containers, library call (in-process)', [{
        name: '100 × createContainer(), Debian', role: 'cowshed',
        before: async () => { store = await fx.store(); await holdImage(DEBIAN); },
        prepare: async () => { before = { du: await duBytes(store.paths.containers), df: usedBytes(store.paths.containers) }; },
        run: async () => { for (let i = 0; i < 100; i++) ids.push((await createContainer(store, DEBIAN)).id); },
        cleanup: async () => {
          if (disk === undefined && ids.length === 100) {
            const du = await duBytes(store.paths.containers) - before.du;
            const df = usedBytes(store.paths.containers) - before.df;
            disk = `disk used by 100 containers: du ${fmtBytes(du)} (containers dir), df ${fmtBytes(df)}`;
          }
          for (const id of ids) removeContainer(store, id);
          ids = [];
        },
      }], m);
      if (disk) hundred.notes.push(disk);
      const per = medianOf(hundred, '100 × createContainer(), Debian');
      if (per) hundred.notes.push(`${(per / 100).toFixed(1)} ms per container with up to 100 mounted`);
      const rootfs = await duBytes(await fx.ext4Rootfs());
      if (rootfs) hundred.notes.push(`for scale: one cp -a copy of the Debian rootfs is ${fmtBytes(rootfs)}`);
      return [lib, proc, hundred];
    },
  };

  // ---- diff ----
  interface DiffSetup { cow: string; podman?: string; podmanError?: string; files: string[] }
  const diffSetups = new Map<string, Promise<DiffSetup>>();
  const diffSetup = (image: string, which: 'debian' | 'synth'): Promise<DiffSetup> => {
    let p = diffSetups.get(image);
    if (!p) {
      p = (async () => {
        const store = await fx.store();
        const c = await createContainer(store, image);
        const files = pickFiles(containerLower(store, c.id), 6);
        makeTenChanges(c.rootfs, files);
        const setup: DiffSetup = { cow: c.id, files };
        if (!await noPodman()) {
          try {
            const id = (await pm('create', await fx.podmanImage(which), '/bin/sh')).stdout.trim();
            setup.podman = id;
            // Left mounted, like the cowshed container: podman diff need not mount it.
            makeTenChanges((await pm('mount', id)).stdout.trim(), files);
          } catch (e) {
            setup.podmanError = e instanceof Error ? e.message.split('\n')[0] : String(e);
          }
        }
        return setup;
      })();
      diffSetups.set(image, p);
    }
    return p;
  };
  const diffTable = async (label: string, image: string, which: 'debian' | 'synth'): Promise<BenchResult> => {
    let store: Store;
    let setup: DiffSetup;
    const lines = new Map<string, number>();
    const ready = async (): Promise<void> => { store = await fx.store(); setup = await diffSetup(image, which); };
    const r = await measure(`diff of a container with 10 changes, ${label}`, [
      {
        name: 'cowshed diff (CLI)', role: 'cowshed', before: ready,
        run: async () => { lines.set('cowshed diff', (await cowshed('diff', setup.cow)).split('\n').length); },
      },
      {
        name: 'diffUpper() (in-process)', role: 'cowshed', before: ready,
        run: async () => {
          const p = containerPaths(store, setup.cow);
          lines.set('diffUpper', diffUpper(p.upper, containerLower(store, setup.cow)).length);
        },
      },
      {
        name: 'podman diff', role: 'anchor', skip: noPodman,
        before: async () => { await ready(); if (!setup.podman) throw new Error(setup.podmanError ?? 'no podman container'); },
        run: async () => { lines.set('podman diff', (await pm('diff', setup.podman!)).stdout.trim().split('\n').length); },
      },
    ], m);
    if (lines.size) r.notes.push(`lines reported: ${[...lines].map(([k, v]) => `${k} ${v}`).join(', ')} (10 changes plus changed parent directories)`);
    return r;
  };

  const diffBench: Benchmark = {
    name: 'diff',
    needsImage: true,
    async run() {
      const debian = await diffTable('Debian', DEBIAN, 'debian');
      const synth = await diffTable('100k-entry image', SYNTH, 'synth');
      for (const name of ['cowshed diff (CLI)', 'diffUpper() (in-process)', 'podman diff']) {
        const a = medianOf(synth, name);
        const b = medianOf(debian, name);
        if (a && b) synth.notes.push(`${name}, 100k-entry / Debian: ${(a / b).toFixed(2)} (must not grow with image size)`);
      }
      const libMs = medianOf(debian, 'diffUpper() (in-process)');
      const cliMs = medianOf(debian, 'cowshed diff (CLI)');
      if (libMs && cliMs) debian.notes.push(`diffUpper() ${libMs.toFixed(0)} ms, whole CLI ${cliMs.toFixed(0)} ms (target ≤ 50 ms)`);
      return [debian, synth];
    },
  };

  // ---- commit ----
  /** The file that commit benchmarks change: the image's first regular file, found once per image. */
  const commitFiles = new Map<string, Promise<string>>();
  const commitFile = (image: string): Promise<string> => {
    let p = commitFiles.get(image);
    if (!p) {
      p = (async () => {
        const store = await fx.store();
        const probe = await createContainer(store, image);
        try { return pickFiles(containerLower(store, probe.id), 1)[0]!; } finally { removeContainer(store, probe.id); }
      })();
      commitFiles.set(image, p);
    }
    return p;
  };
  let commits = 0;
  /** A fresh container per run with one file changed (new random bytes each time, so nothing dedups by luck). */
  const cowCommit = (name: string, image: string, viaCli: boolean): Contender => {
    let store: Store;
    let file: string;
    let id: string | undefined;
    let committed: string | undefined;
    return {
      name, role: 'cowshed',
      before: async () => { store = await fx.store(); await holdImage(image); file = await commitFile(image); },
      prepare: async () => {
        const c = await createContainer(store, image);
        id = c.id;
        writeFileSync(join(c.rootfs, file), randomBytes(4096));
        committed = `bench-commit:${commits++}`;
      },
      run: async () => {
        if (viaCli) await cowshed('commit', id!, committed!);
        else await commitContainer(store, id!, committed!);
      },
      cleanup: async () => {
        if (id) removeContainer(store, id);
        if (committed) try { store.removeImage(committed); } catch { /* the commit failed: no image */ }
        id = committed = undefined;
      },
    };
  };
  const podmanCommit = (name: string, image: string, which: 'debian' | 'synth'): Contender => {
    let podmanImage: string;
    let file: string;
    let id: string | undefined;
    let committed: string | undefined;
    return {
      name, role: 'anchor', skip: noPodman,
      before: async () => { podmanImage = await fx.podmanImage(which); file = await commitFile(image); },
      prepare: async () => {
        id = (await pm('create', podmanImage, '/bin/sh')).stdout.trim();
        writeFileSync(join((await pm('mount', id)).stdout.trim(), file), randomBytes(4096));
        committed = `localhost/bench-commit:${commits++}`;
      },
      run: async () => { await pm('commit', '-q', id!, committed!); },
      cleanup: async () => {
        if (id) await pm('rm', '-f', id);
        if (committed) await pm('rmi', '-f', committed);
        id = committed = undefined;
      },
    };
  };

  const commitBench: Benchmark = {
    name: 'commit',
    needsImage: true,
    async run() {
      const debian = await measure('commit of a container with 1 changed file, Debian', [
        cowCommit('cowshed commit (CLI)', DEBIAN, true),
        cowCommit('commitContainer() (in-process)', DEBIAN, false),
        podmanCommit('podman commit', DEBIAN, 'debian'),
      ], m);
      const lib = medianOf(debian, 'commitContainer() (in-process)');
      if (lib) debian.notes.push(`commitContainer(): ${lib.toFixed(0)} ms (target ≤ 100 ms)`);
      const x = ratioNote(debian, 'commitContainer() (in-process)', 'podman commit', 'commitContainer() / podman commit');
      if (x) debian.notes.push(x);
      // Not a target: shows how commit scales (it writes a composefs image of the whole tree).
      const synth = await measure('commit of a container with 1 changed file, 100k-entry image', [
        cowCommit('commitContainer() (in-process)', SYNTH, false),
        podmanCommit('podman commit', SYNTH, 'synth'),
      ], m);
      for (const name of ['commitContainer() (in-process)', 'podman commit']) {
        const a = medianOf(synth, name);
        const b = medianOf(debian, name);
        if (a && b) synth.notes.push(`${name}, 100k-entry / Debian: ${(a / b).toFixed(2)}`);
      }
      return [debian, synth];
    },
  };

  return {
    benchmarks: [createBench, diffBench, commitBench],
    // The holders go with the store's cleanup, which removes every container.
    dispose: () => fx.dispose(),
  };
}
