// The storage-driver table (issue 5): the same operations on the Debian image
// for every cowshed driver, each on the filesystem it is meant for, side by
// side with podman (overlay driver, throwaway root) as the anchor:
//   composefs, overlay on ext4; btrfs on btrfs; vfs on xfs (reflinks) and on ext4 (copies).
// zfs is left out: it needs the zfs-fuse daemon and a pool, and zfs-fuse is slow.
//
// Every driver gets its own scratch filesystem with a store holding debian:v1
// and big:v1 (debian:v1 plus a 100 MB file, committed); podman gets the same
// two images. Each figure is one measure() call with one contender per
// driver; driverTable() then lays the medians out as one table, figures as rows.
import { appendFileSync, statfsSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Store, type DriverName } from '../src/store/store.ts';
import { containerDiff, createContainer, listContainers, removeContainer } from '../src/containers/containers.ts';
import { commitContainer } from '../src/containers/commit.ts';
import { pickFiles, makeTenChanges } from './containers.ts';
import {
  type Benchmark, type BenchResult, type Contender, exec, measure, needTool, podman, ScratchFs,
} from './lib.ts';
import { podmanOciRef } from '../test/helpers/cli.ts';

export interface DriverBenchOptions {
  repo: string;
  /** Fixture cache (COWSHED_FIXTURES). */
  cache: string;
  runs: number;
  warmup: number;
}

type FsType = 'ext4' | 'btrfs' | 'xfs';
type ImageKey = 'debian' | 'big';

interface Config { label: string; driver: DriverName; fsType: FsType; sizeGiB: number }

/** How many containers the "many" rows make (BENCH_DRIVER_MANY, default 100). */
const MANY = Number(process.env.BENCH_DRIVER_MANY ?? 100);
const BIG_FILE = 'big.bin';
const BIG_BYTES = 100 * 2 ** 20;

const CONFIGS: Config[] = [
  { label: 'composefs (ext4)', driver: 'composefs', fsType: 'ext4', sizeGiB: 6 },
  { label: 'overlay (ext4)', driver: 'overlay', fsType: 'ext4', sizeGiB: 6 },
  { label: 'btrfs (btrfs)', driver: 'btrfs', fsType: 'btrfs', sizeGiB: 6 },
  { label: 'vfs (xfs, reflink)', driver: 'vfs', fsType: 'xfs', sizeGiB: 8 },
  // Every container is a full 215 MB copy: room for MANY of them plus the big-image ones.
  { label: 'vfs (ext4, copy)', driver: 'vfs', fsType: 'ext4', sizeGiB: Math.ceil(MANY * 0.25) + 8 },
];
const PODMAN_LABEL = 'podman (overlay, ext4)';

interface Made { id: string; rootfs: string }

/** One column of the table: a driver's store (or podman's root) on its own filesystem. */
interface Side {
  label: string;
  role: Contender['role'];
  skip?: Contender['skip'];
  /** Filesystem, store and images; untimed. */
  setup(): Promise<void>;
  create(image: ImageKey): Promise<Made>;
  /** Create + mount of a Debian container as a user runs it (whole processes): the id. */
  createCli(): Promise<string>;
  createMany(image: ImageKey, n: number): Promise<string[]>;
  remove(id: string): Promise<void>;
  /** Lines of the container's diff. */
  diff(id: string): Promise<number>;
  commit(id: string, tag: string): Promise<void>;
  removeImage(tag: string): Promise<void>;
  /** Filesystem bytes in use (df) and du of where containers live. */
  disk(): Promise<{ df: number; du: number }>;
  /** Notes from setup (first container of an image, ...). */
  setupNotes: Map<string, number>;
  dispose(): Promise<void>;
}

const usedBytes = async (path: string): Promise<number> => {
  // btrfs updates its counters at transaction commit.
  await exec('sync', ['-f', path]);
  const s = statfsSync(path);
  return (s.blocks - s.bfree) * s.bsize;
};

/**
 * du of a directory. -x keeps du out of overlay merged/ mounts (it would count
 * the whole image once per container), but btrfs snapshots are subvolumes with
 * their own st_dev, which -x would skip: there du crosses (no mounts below).
 */
const duBytes = async (path: string, crossDevices: boolean): Promise<number> =>
  Number((await exec('du', [crossDevices ? '-s' : '-sx', '--block-size=1', path])).stdout.split('\t')[0]);

const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
  const t0 = performance.now();
  const r = await f();
  return [r, performance.now() - t0];
};

/** Writes BIG_BYTES of random data (1 MiB at a time) into file. */
function writeBigFile(file: string): void {
  const chunk = randomBytes(2 ** 20);
  writeFileSync(file, '');
  for (let i = 0; i < BIG_BYTES / chunk.length; i++) {
    chunk.writeUInt32LE(i, 0); // no two chunks alike, so nothing dedups by accident
    appendFileSync(file, chunk);
  }
}

function cowshedSide(cfg: Config, opts: DriverBenchOptions): Side {
  let fs: ScratchFs | undefined;
  let store: Store | undefined;
  const holders: string[] = [];
  const layout = join(opts.cache, 'debian-oci');
  const tags: Record<ImageKey, string> = { debian: 'debian:v1', big: 'big:v1' };
  const cli = join(opts.repo, 'bin/cowshed.js');
  const side: Side = {
    label: cfg.label,
    role: 'cowshed',
    skip: cfg.fsType === 'btrfs' ? needTool('mkfs.btrfs', 'btrfs-progs') : cfg.fsType === 'xfs' ? needTool('mkfs.xfs', 'xfsprogs') : undefined,
    setupNotes: new Map(),
    async setup() {
      if (store) return;
      fs = await ScratchFs.create(cfg.sizeGiB, cfg.fsType);
      store = await Store.open(join(fs.path, 'store'), { driver: cfg.driver });
      await store.importImage(`oci:${layout}:v1`, tags.debian);
      // The first container of an image pays for what the driver makes once per image
      // (overlay: layer directories; btrfs: the image subvolume; composefs: the EROFS mount).
      const [first, ms] = await timed(() => createContainer(store!, tags.debian));
      side.setupNotes.set('first', ms);
      writeBigFile(join(first.rootfs, BIG_FILE));
      await commitContainer(store, first.id, tags.big);
      removeContainer(store, first.id);
      // Holders keep per-image state up (EROFS mounts), as in steady use; big:v1's first use is paid here.
      holders.push((await createContainer(store, tags.debian)).id);
      holders.push((await createContainer(store, tags.big)).id);
    },
    async create(image) {
      const c = await createContainer(store!, tags[image]);
      return { id: c.id, rootfs: c.rootfs };
    },
    async createCli() {
      // Two processes, as on podman's side: create leaves the mount to the first mount (as podman create does).
      const r = await exec(process.execPath, [cli, '--store', store!.paths.root, 'create', tags.debian], { cwd: opts.repo });
      const id = r.stdout.trim().split('\n').at(-1)!;
      await exec(process.execPath, [cli, '--store', store!.paths.root, 'mount', id], { cwd: opts.repo });
      return id;
    },
    async createMany(image, n) {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push((await createContainer(store!, tags[image])).id);
      return ids;
    },
    async remove(id) { removeContainer(store!, id, { force: true }); },
    async diff(id) { return containerDiff(store!, id).length; },
    async commit(id, tag) { await commitContainer(store!, id, tag); },
    async removeImage(tag) { store!.removeImage(tag); },
    async disk() {
      return { df: await usedBytes(fs!.path), du: await duBytes(store!.paths.containers, cfg.driver === 'btrfs') };
    },
    async dispose() {
      if (store) {
        for (const c of listContainers(store, { all: true })) {
          try { removeContainer(store, c.id, { force: true }); } catch { /* the filesystem goes below anyway */ }
        }
        store.close();
        store = undefined;
      }
      // Unmounts what is left below (overlays, EROFS loops), then the filesystem.
      await fs?.dispose();
      fs = undefined;
    },
  };
  return side;
}

/** The anchor: podman with the overlay driver in a throwaway root on ext4. */
function podmanSide(opts: DriverBenchOptions): Side {
  let fs: ScratchFs | undefined;
  const images: Partial<Record<ImageKey, string>> = {};
  const pm = (...args: string[]) => podman(fs!.path, ...args);
  const createOne = async (image: ImageKey): Promise<string> => (await pm('create', images[image]!, '/bin/sh')).stdout.trim();
  const side: Side = {
    label: PODMAN_LABEL,
    role: 'anchor',
    skip: needTool('podman', 'podman'),
    setupNotes: new Map(),
    async setup() {
      if (fs) return;
      fs = await ScratchFs.create(6);
      images.debian = (await pm('pull', '-q', podmanOciRef(join(opts.cache, 'debian-oci'), 'v1'))).stdout.trim();
      const [made, ms] = await timed(() => side.create('debian'));
      side.setupNotes.set('first', ms);
      writeBigFile(join(made.rootfs, BIG_FILE));
      await pm('commit', '-q', made.id, 'localhost/big:v1');
      images.big = 'localhost/big:v1';
      await side.remove(made.id);
    },
    async create(image) {
      const id = await createOne(image);
      return { id, rootfs: (await pm('mount', id)).stdout.trim() };
    },
    async createCli() { return (await side.create('debian')).id; },
    async createMany(image, n) {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push(await createOne(image));
      await pm('mount', ...ids); // one process mounts them all
      return ids;
    },
    async remove(id) { await pm('rm', '-f', id); },
    async diff(id) { return (await pm('diff', id)).stdout.trim().split('\n').length; },
    async commit(id, tag) { await pm('commit', '-q', id, `localhost/${tag}`); },
    async removeImage(tag) { await pm('rmi', '-f', `localhost/${tag}`); },
    async disk() { return { df: await usedBytes(fs!.path), du: await duBytes(join(fs!.path, 'root'), false) }; },
    async dispose() {
      if (!fs) return;
      await pm('rm', '-a', '-f').catch(() => undefined);
      await pm('rmi', '-a', '-f').catch(() => undefined);
      await fs.dispose();
      fs = undefined;
    },
  };
  return side;
}

/** A contender for one side whose side is set up on first use. */
function contender(side: Side, c: Omit<Contender, 'name' | 'role' | 'skip' | 'before'>): Contender {
  return { name: side.label, role: side.role, skip: side.skip, before: () => side.setup(), ...c };
}

const dropCaches = (): Promise<unknown> => exec('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);

// ---------------------------------------------------------------------------
// The table

/** One row of the driver table: a label and a cell per column (label → text). */
interface Row { figure: string; cells: Map<string, string> }

const fmtMs = (ms: number | undefined): string =>
  ms === undefined ? '–' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
const fmtBytes = (b: number | undefined): string =>
  b === undefined ? '–' : Math.abs(b) >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : Math.abs(b) >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(0)} kB`;

/** A row from a measure() result: each contender's median, or why it has none. */
function timeRow(figure: string, r: BenchResult): Row {
  const cells = new Map<string, string>();
  for (const c of r.contenders) cells.set(c.name, c.medianMs !== undefined ? fmtMs(c.medianMs) : c.status.startsWith('skipped') ? 'skipped' : 'failed');
  return { figure, cells };
}

export function driverBenchmarks(opts: DriverBenchOptions): { benchmark: Benchmark; table: () => string[]; dispose: () => Promise<void> } {
  const sides: Side[] = [...CONFIGS.map((c) => cowshedSide(c, opts)), podmanSide(opts)];
  const m = { runs: opts.runs, warmup: opts.warmup };
  const rows: Row[] = [];
  const notes: string[] = [];
  const cli = join(opts.repo, 'bin/cowshed.js');
  let tagCount = 0;

  const benchmark: Benchmark = {
    name: 'drivers',
    needsImage: true,
    async run() {
      const results: BenchResult[] = [];
      const layout = join(opts.cache, 'debian-oci');

      // ---- import, cold: a fresh filesystem and store per run ----
      const importContenders: Contender[] = [...CONFIGS.map((cfg): Contender => {
        let fs: ScratchFs | undefined;
        return {
          name: cfg.label, role: 'cowshed', skip: sides.find((s) => s.label === cfg.label)!.skip,
          prepare: async () => { fs = await ScratchFs.create(4, cfg.fsType); },
          run: async () => {
            await exec(process.execPath, [cli, '--store', join(fs!.path, 'store'), '--driver', cfg.driver, 'import', `oci:${layout}:v1`, 'debian:v1'], { cwd: opts.repo });
          },
          cleanup: async () => { await fs?.dispose(); fs = undefined; },
        };
      }), (() => {
        let fs: ScratchFs | undefined;
        return {
          name: PODMAN_LABEL, role: 'anchor', skip: needTool('podman', 'podman'),
          prepare: async () => { fs = await ScratchFs.create(4); },
          run: async () => { await podman(fs!.path, 'pull', '-q', podmanOciRef(layout, 'v1')); },
          cleanup: async () => { await fs?.dispose(); fs = undefined; },
        } satisfies Contender;
      })()];
      const imp = await measure('drivers: import Debian v1, cold (fresh filesystem per run, CLI)', importContenders, { runs: opts.runs, warmup: 0 });
      results.push(imp);
      rows.push(timeRow('import, cold (CLI process)', imp));

      // ---- create + mount one container ----
      let made = new Map<Side, string>();
      const one = await measure('drivers: create + mount one container (cowshed in-process; podman create + mount)', sides.map((s) => contender(s, {
        run: async () => { made.set(s, (await s.create('debian')).id); },
        cleanup: async () => { const id = made.get(s); made.delete(s); if (id) await s.remove(id); },
      })), m);
      results.push(one);
      rows.push(timeRow('create + mount 1 container (median)', one));

      const cliOne = await measure('drivers: create + mount one container, whole CLI process', sides.map((s) => contender(s, {
        run: async () => { made.set(s, await s.createCli()); },
        cleanup: async () => { const id = made.get(s); made.delete(s); if (id) await s.remove(id); },
      })), m);
      results.push(cliOne);
      rows.push(timeRow('create + mount 1 container, CLI process (median)', cliOne));

      const firstRow: Row = { figure: 'first container of an image (once per image; setup, 1 run)', cells: new Map() };
      for (const s of sides) firstRow.cells.set(s.label, fmtMs(s.setupNotes.get('first')));
      rows.push(firstRow);

      // ---- disk for 1 container ----
      const disk1: Row = { figure: 'disk, 1 container: df / du', cells: new Map() };
      for (const s of sides) {
        if (await s.skip?.()) { disk1.cells.set(s.label, 'skipped'); continue; }
        try {
          const before = await s.disk();
          const c = await s.create('debian');
          const after = await s.disk();
          await s.remove(c.id);
          disk1.cells.set(s.label, `${fmtBytes(after.df - before.df)} / ${fmtBytes(after.du - before.du)}`);
        } catch (e) { disk1.cells.set(s.label, `failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`); }
      }

      // ---- MANY containers, one run ----
      const diskMany: Row = { figure: `disk, ${MANY} containers: df / du`, cells: new Map() };
      let ids: string[] = [];
      let before = { df: 0, du: 0 };
      const many = await measure(`drivers: create + mount ${MANY} containers (total)`, sides.map((s) => contender(s, {
        prepare: async () => { before = await s.disk(); },
        run: async () => { ids = await s.createMany('debian', MANY); },
        cleanup: async () => {
          if (ids.length === MANY) {
            const after = await s.disk();
            diskMany.cells.set(s.label, `${fmtBytes(after.df - before.df)} / ${fmtBytes(after.du - before.du)}`);
          }
          for (const id of ids) await s.remove(id);
          ids = [];
        },
      })), { runs: 1, warmup: 0 });
      results.push(many);
      rows.push(timeRow(`create + mount ${MANY} containers (total, 1 run)`, many));

      // ---- first read of the 100 MB file, caches dropped ----
      let c: Made | undefined;
      const read = await measure('drivers: first read of a 100 MB file in a new container (caches dropped)', sides.map((s) => contender(s, {
        prepare: async () => { c = await s.create('big'); await dropCaches(); },
        run: async () => { await exec('dd', [`if=${join(c!.rootfs, BIG_FILE)}`, 'of=/dev/null', 'bs=1M', 'status=none']); },
        cleanup: async () => { if (c) await s.remove(c.id); c = undefined; },
      })), m);
      results.push(read);
      rows.push(timeRow('first read of a 100 MB file (caches dropped, dd)', read));

      // ---- copy-up: append one byte to the 100 MB file ----
      const copyUp = await measure('drivers: append 1 byte to a 100 MB image file (copy-up)', sides.map((s) => contender(s, {
        prepare: async () => { c = await s.create('big'); },
        run: async () => { appendFileSync(join(c!.rootfs, BIG_FILE), 'x'); },
        cleanup: async () => { if (c) await s.remove(c.id); c = undefined; },
      })), m);
      results.push(copyUp);
      rows.push(timeRow('append 1 byte to a 100 MB file (copy-up)', copyUp));

      // ---- diff of 10 changes ----
      const diffIds = new Map<Side, string>();
      let files: string[] | undefined;
      const lines = new Map<string, number>();
      const diff = await measure('drivers: diff of a container with 10 changes (cowshed in-process)', sides.map((s) => ({
        ...contender(s, {
          run: async () => { lines.set(s.label, await s.diff(diffIds.get(s)!)); },
        }),
        before: async () => {
          await s.setup();
          const made = await s.create('debian');
          files ??= pickFiles(made.rootfs, 6);
          makeTenChanges(made.rootfs, files);
          diffIds.set(s, made.id);
        },
        after: async () => { const id = diffIds.get(s); if (id) await s.remove(id); },
      })), m);
      results.push(diff);
      rows.push(timeRow('diff, 10 changes (median)', diff));
      if (lines.size) notes.push(`diff lines reported: ${[...lines].map(([k, v]) => `${k} ${v}`).join(', ')}`);

      // ---- commit of 1 changed file ----
      let tag: string | undefined;
      const commit = await measure('drivers: commit of a container with 1 changed file (cowshed in-process)', sides.map((s) => contender(s, {
        prepare: async () => {
          c = await s.create('debian');
          files ??= pickFiles(c.rootfs, 6);
          writeFileSync(join(c.rootfs, files[0]!), randomBytes(4096));
          tag = `bench-commit:${tagCount++}`;
        },
        run: async () => { await s.commit(c!.id, tag!); },
        cleanup: async () => {
          if (c) await s.remove(c.id);
          if (tag) await s.removeImage(tag).catch(() => undefined);
          c = tag = undefined;
        },
      })), m);
      results.push(commit);
      rows.push(timeRow('commit, 1 changed file (median)', commit));

      rows.push(disk1, diskMany);
      made = new Map();
      return results;
    },
  };

  return {
    benchmark,
    table: () => {
      if (rows.length === 0) return [];
      const labels = sides.map((s) => s.label);
      return [
        '## Storage drivers, side by side (Debian v1)',
        '',
        `| figure | ${labels.join(' | ')} |`,
        `| --- | ${labels.map(() => '---:').join(' | ')} |`,
        ...rows.map((r) => `| ${r.figure} | ${labels.map((l) => r.cells.get(l) ?? '–').join(' | ')} |`),
        '',
        '- cowshed columns: library calls in this process unless the row says CLI; podman: its CLI (create + mount = two processes).',
        '- copy-up: the source file is in the page cache; btrfs and vfs have no copy-up (a reflink or copy was made at create).',
        '- df: used-blocks delta of the scratch filesystem; du: `du -s` delta of the store\'s containers dir ' +
          '(podman: its whole root). du counts reflinked and snapshot-shared extents in full; df shows what they really cost.',
        '- zfs is not in the table: it needs the zfs-fuse daemon and a pool (see test/drivers/zfs.test.ts).',
        ...notes.map((n) => `- ${n}`),
      ];
    },
    dispose: async () => {
      for (const s of sides) {
        try { await s.dispose(); } catch (e) {
          process.stderr.write(`bench: drivers cleanup, ${s.label}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}\n`);
        }
      }
    },
  };
}
