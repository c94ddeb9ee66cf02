// Registry benchmarks (issue 4), all against one docker-registry on
// 127.0.0.1 seeded once by skopeo with Debian v1 and v2: cold pull, pull
// again after rmi, update pull v1 → v2, and push of a committed image;
// cowshed (CLI, and the library in-process for its figures) against podman
// and skopeo + umoci. dispose() stops the registry and removes everything.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Store } from '../src/store/store.ts';
import { pullImage, type PullResult } from '../src/registry/pull.ts';
import { pushImage, type PushResult } from '../src/registry/push.ts';
import { createContainer, removeContainer, listContainers } from '../src/containers/containers.ts';
import { commitContainer } from '../src/containers/commit.ts';
import { writeOciLayout } from '../src/oci/layout-writer.ts';
import { ensureSyntheticLayout } from './containers.ts';
import {
  type Benchmark, type BenchResult, type Contender, exec, measure, needTool, podman, ScratchFs,
} from './lib.ts';

export interface RegistryBenchOptions {
  repo: string;
  /** Fixture cache (COWSHED_FIXTURES). */
  cache: string;
  runs: number;
  warmup: number;
}

const fmtBytes = (b: number): string =>
  Math.abs(b) >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(1)} kB`;

const medianOf = (r: BenchResult, name: string): number | undefined => r.contenders.find((c) => c.name === name)?.medianMs;

const ratioNote = (r: BenchResult, a: string, b: string, what: string): string | undefined => {
  const x = medianOf(r, a);
  const y = medianOf(r, b);
  return x && y ? `${what}: ${(x / y).toFixed(2)}` : undefined;
};

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Debian's docker-registry on a free loopback port, no auth, storage on its own scratch filesystem. */
export class LoopbackRegistry {
  readonly host: string;
  private readonly child: ChildProcess;
  private readonly fs: ScratchFs;
  private constructor(host: string, child: ChildProcess, fs: ScratchFs) { this.host = host; this.child = child; this.fs = fs; }

  static async start(): Promise<LoopbackRegistry> {
    const fs = await ScratchFs.create(4);
    const port = await freePort();
    const config = join(fs.path, 'config.yml');
    writeFileSync(config, [
      'version: 0.1',
      'log:', '  level: warn', '  accesslog:', '    disabled: true',
      'storage:', '  filesystem:', `    rootdirectory: ${join(fs.path, 'data')}`, '  delete:', '    enabled: true',
      'http:', `  addr: 127.0.0.1:${port}`, '',
    ].join('\n'));
    const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
    const reg = new LoopbackRegistry(`127.0.0.1:${port}`, child, fs);
    for (let i = 0; i < 100; i++) {
      if (child.exitCode !== null) break;
      try {
        await fetch(`http://127.0.0.1:${port}/v2/`);
        return reg;
      } catch { await sleep(50); }
    }
    await reg.stop();
    throw new Error(`docker-registry did not start: ${stderr.trim().split('\n').at(-1) ?? ''}`);
  }

  /** Stops the registry (by its PID) and removes its storage. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
      c.kill('SIGTERM');
      await Promise.race([exited, sleep(3000).then(() => { c.kill('SIGKILL'); return exited; })]);
    }
    await this.fs.dispose();
  }

  /** Compressed sizes of the layers of repo:tag (from its manifest). */
  async layers(repoTag: string): Promise<{ digest: string; size: number }[]> {
    const [repo, tag] = repoTag.split(':');
    const res = await fetch(`http://${this.host}/v2/${repo}/manifests/${tag}`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
    });
    if (!res.ok) throw new Error(`manifest ${repoTag}: HTTP ${res.status}`);
    return ((await res.json()) as { layers: { digest: string; size: number }[] }).layers;
  }
}

export function registryBenchmarks(opts: RegistryBenchOptions): { benchmarks: Benchmark[]; dispose: () => Promise<void> } {
  const m = { runs: opts.runs, warmup: opts.warmup };
  const layout = join(opts.cache, 'debian-oci');
  const cli = join(opts.repo, 'bin/cowshed.js');
  const cowshed = async (store: string, ...args: string[]): Promise<string> =>
    (await exec(process.execPath, [cli, '--store', store, ...args], { cwd: opts.repo })).stdout.trim();
  const noPodman = needTool('podman', 'podman');
  const noUmoci = async (): Promise<string | undefined> => (await needTool('skopeo', 'skopeo')()) ?? (await needTool('umoci', 'umoci')());

  let registryP: Promise<LoopbackRegistry> | undefined;
  /** The registry, seeded with debian:v1 and debian:v2 by skopeo on first use. */
  const registry = (): Promise<LoopbackRegistry> => registryP ??= (async () => {
    const reg = await LoopbackRegistry.start();
    for (const tag of ['v1', 'v2']) {
      await exec('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:${tag}`, `docker://${reg.host}/debian:${tag}`]);
    }
    return reg;
  })();
  const ref = async (tag: string): Promise<string> => `${(await registry()).host}/debian:${tag}`;

  /**
   * The same small update layer (a new directory of 20 files of 4 kB, 2 kB
   * of them new names of one inode) on the Debian image (7k entries) and on
   * the 100k-entry synthetic one, pushed as debian:small and synth:small,
   * with synth:v1; first use only.
   */
  let smallP: Promise<void> | undefined;
  const smallUpdates = (): Promise<void> => smallP ??= (async () => {
    const reg = await registry();
    const tmp = mkdtempSync(join(opts.cache, '.bench-small-'));
    try {
      const tar = join(tmp, 'small.tar');
      await exec('python3', ['-c', [
        'import sys, tarfile, io',
        'with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:',
        '    d = tarfile.TarInfo("cowshed-update"); d.type = tarfile.DIRTYPE; d.mode = 0o755; d.mtime = 1750000000; t.addfile(d)',
        '    for i in range(20):',
        '        data = bytes([i]) * 4096',
        '        f = tarfile.TarInfo("cowshed-update/f%02d" % i); f.size = len(data); f.mode = 0o644; f.mtime = 1750000000',
        '        t.addfile(f, io.BytesIO(data))',
      ].join('\n'), tar]);
      await exec('gzip', ['-n', '-6', tar]);
      for (const [name, base, tag] of [['debian', layout, 'v1'], ['synth', await ensureSyntheticLayout(opts.cache), 'v1']] as const) {
        const index = JSON.parse(readFileSync(join(base, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
        const md = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === tag)!.digest;
        const manifest = JSON.parse(readFileSync(join(base, 'blobs', 'sha256', md.slice(7)), 'utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
        const config = JSON.parse(readFileSync(join(base, 'blobs', 'sha256', manifest.config.digest.slice(7)), 'utf8')) as { rootfs?: unknown; history?: unknown };
        delete config.rootfs;
        delete config.history;
        const out = join(tmp, `${name}-oci`);
        await writeOciLayout(out, {
          config, tag: 'small',
          layers: [...manifest.layers.map((l) => ({ path: join(base, 'blobs', 'sha256', l.digest.slice(7)) })), { path: `${tar}.gz` }],
        });
        if (name === 'synth') await exec('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${base}:v1`, `docker://${reg.host}/synth:v1`]);
        await exec('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${out}:small`, `docker://${reg.host}/${name}:small`]);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  })();

  /** Scratch filesystems and stores still open, disposed at the end whatever happened. */
  const live = new Set<ScratchFs>();
  const stores = new Set<Store>();
  const scratch = async (): Promise<ScratchFs> => { const fs = await ScratchFs.create(4); live.add(fs); return fs; };
  const drop = async (fs: ScratchFs | undefined): Promise<void> => { if (fs) { live.delete(fs); await fs.dispose(); } };
  const openStore = async (dir: string): Promise<Store> => { const s = await Store.open(dir); stores.add(s); return s; };
  const closeStore = (s: Store | undefined): void => {
    if (!s) return;
    for (const c of listContainers(s, { all: true })) removeContainer(s, c.id, { force: true });
    s.close();
    stores.delete(s);
  };

  /** A contender on a fresh scratch filesystem per run; setup (untimed) runs first on it. */
  const freshEach = (name: string, role: Contender['role'], run: (d: string) => Promise<unknown>,
    setup?: (d: string) => Promise<unknown>, skip?: Contender['skip']): Contender => {
    let fs: ScratchFs | undefined;
    return {
      name, role, skip,
      before: async () => { await registry(); },
      prepare: async () => { fs = await scratch(); if (setup) await setup(fs.path); },
      run: async () => { await run(fs!.path); },
      cleanup: async () => { await drop(fs); fs = undefined; },
    };
  };

  /** Library pull into a fresh store per run; keeps the last run's result for the notes. */
  const libPull = (name: string, tag: string, setupTag?: string): Contender & { last?: PullResult } => {
    let fs: ScratchFs | undefined;
    let store: Store | undefined;
    const c: Contender & { last?: PullResult } = {
      name, role: 'cowshed',
      before: async () => { await registry(); },
      prepare: async () => {
        fs = await scratch();
        store = await openStore(join(fs.path, 'store'));
        if (setupTag) await pullImage(store, await ref(setupTag), { tlsVerify: false });
      },
      run: async () => { c.last = await pullImage(store!, await ref(tag), { tlsVerify: false }); },
      cleanup: async () => { closeStore(store); store = undefined; await drop(fs); fs = undefined; },
    };
    return c;
  };

  const pullCold: Benchmark = {
    name: 'pull-cold',
    needsImage: true,
    async run() {
      const v1 = await ref('v1');
      const lib = libPull('pullImage() (in-process)', 'v1');
      const r = await measure('pull Debian v1 from a loopback registry, cold (fresh fs per run)', [
        freshEach('cowshed pull', 'cowshed', (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', v1)),
        lib,
        freshEach('podman pull', 'anchor', (d) => podman(d, 'pull', '-q', '--tls-verify=false', v1), undefined, noPodman),
        freshEach('skopeo copy + umoci unpack', 'anchor', async (d) => {
          await exec('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${v1}`, `oci:${join(d, 'oci')}:v1`]);
          await exec('umoci', ['unpack', '--image', `${join(d, 'oci')}:v1`, join(d, 'bundle')]);
        }, undefined, noUmoci),
      ], m);
      const x = ratioNote(r, 'cowshed pull', 'podman pull', 'cowshed pull / podman pull (target ≤ 0.5)');
      if (x) r.notes.push(x);
      if (lib.last) {
        r.notes.push(`pullImage(): ${fmtBytes(lib.last.bytesFetched)} fetched in ${lib.last.blobRequests} blob requests, ` +
          `${lib.last.objectsWritten} objects (${fmtBytes(lib.last.bytesWritten)}) written, ${lib.last.entries} entries`);
      }
      return [r];
    },
  };

  const pullAgain: Benchmark = {
    name: 'pull-again',
    needsImage: true,
    async run() {
      const v1 = await ref('v1');
      let cfs: ScratchFs | undefined;
      let lfs: ScratchFs | undefined;
      let pfs: ScratchFs | undefined;
      let store: Store | undefined;
      let last: PullResult | undefined;
      const r = await measure('pull Debian v1 again after rmi (objects still present)', [
        {
          name: 'cowshed rmi; pull', role: 'cowshed',
          before: async () => { cfs = await scratch(); await cowshed(join(cfs.path, 'store'), 'pull', '-q', '--tls-verify=false', v1); },
          prepare: async () => { await cowshed(join(cfs!.path, 'store'), 'rmi', v1); },
          run: async () => { await cowshed(join(cfs!.path, 'store'), 'pull', '-q', '--tls-verify=false', v1); },
          after: async () => { await drop(cfs); },
        },
        {
          name: 'removeImage(); pullImage() (in-process)', role: 'cowshed',
          before: async () => {
            lfs = await scratch();
            store = await openStore(join(lfs.path, 'store'));
            await pullImage(store, v1, { tlsVerify: false });
          },
          prepare: async () => { store!.removeImage(v1); },
          run: async () => { last = await pullImage(store!, v1, { tlsVerify: false }); },
          after: async () => { closeStore(store); await drop(lfs); },
        },
        {
          name: 'podman rmi; pull', role: 'anchor', skip: noPodman,
          before: async () => { pfs = await scratch(); await podman(pfs.path, 'pull', '-q', '--tls-verify=false', v1); },
          prepare: async () => { await podman(pfs!.path, 'rmi', '-a', '-f'); },
          run: async () => { await podman(pfs!.path, 'pull', '-q', '--tls-verify=false', v1); },
          after: async () => { await drop(pfs); },
        },
        { name: 'node -e 0 (start-up floor)', role: 'reference', run: async () => { await exec(process.execPath, ['-e', '0']); } },
      ], m);
      const cow = medianOf(r, 'cowshed rmi; pull');
      const node = medianOf(r, 'node -e 0 (start-up floor)');
      if (cow && node) r.notes.push(`cowshed pull beyond Node start-up: ${(cow - node).toFixed(0)} ms`);
      if (last) {
        r.notes.push(`pullImage(): ${last.blobRequests} blob requests, ${fmtBytes(last.bytesFetched)} fetched, ` +
          `${last.localLayers} layers rebuilt locally, ${last.objectsWritten} objects written (expected: 0 blob GETs)`);
      }
      return [r];
    },
  };

  const pullUpdate: Benchmark = {
    name: 'pull-update',
    needsImage: true,
    async run() {
      const v1 = await ref('v1');
      const v2 = await ref('v2');
      const lib = libPull('pullImage() v2 (in-process)', 'v2', 'v1');
      const r = await measure('pull Debian v2 with v1 present (fresh fs + v1 pulled before each run)', [
        freshEach('cowshed pull v2', 'cowshed', (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', v2),
          (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', v1)),
        lib,
        freshEach('podman pull v2', 'anchor', (d) => podman(d, 'pull', '-q', '--tls-verify=false', v2),
          (d) => podman(d, 'pull', '-q', '--tls-verify=false', v1), noPodman),
      ], m);
      const pv = medianOf(r, 'cowshed pull v2');
      const pp = medianOf(r, 'podman pull v2');
      if (pv && pp) r.notes.push(`cowshed pull v2 / podman pull v2: ${(pv / pp).toFixed(2)} (target ≤ 1: ${pv / pp <= 1 ? 'met' : 'not met'})`);
      const reg = await registry();
      const l1 = new Set((await reg.layers('debian:v1')).map((l) => l.digest));
      const fresh = (await reg.layers('debian:v2')).filter((l) => !l1.has(l.digest));
      r.notes.push(`v2 has ${fresh.length} layer(s) v1 lacks: ${fmtBytes(fresh.reduce((s, l) => s + l.size, 0))} compressed`);
      if (lib.last) {
        r.notes.push(`pullImage() v2: ${fmtBytes(lib.last.bytesFetched)} fetched in ${lib.last.blobRequests} blob requests ` +
          `(${lib.last.localLayers} layers rebuilt locally), ${lib.last.objectsWritten} files written ` +
          `(${fmtBytes(lib.last.bytesWritten)}) of ${lib.last.entries} entries`);
      }
      // The same small layer on a 7k- and a 100k-entry base: the cost must follow the change.
      const host = (await registry()).host;
      const small = (name: string, repo: string): Contender => {
        const c = freshEach(name, 'cowshed', (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', `${host}/${repo}:small`),
          (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', `${host}/${repo}:v1`));
        return { ...c, before: async () => { await smallUpdates(); } };
      };
      const s = await measure('update pull of one small new layer (20 files), 7k- against 100k-entry base (fresh fs + base pulled before each run)', [
        small('cowshed pull, Debian (7k entries) + small layer', 'debian'),
        small('cowshed pull, 100k-entry image + small layer', 'synth'),
        freshEach('podman pull, Debian + small layer', 'anchor', (d) => podman(d, 'pull', '-q', '--tls-verify=false', `${host}/debian:small`),
          (d) => podman(d, 'pull', '-q', '--tls-verify=false', `${host}/debian:v1`), noPodman),
      ], m);
      const a = medianOf(s, 'cowshed pull, Debian (7k entries) + small layer');
      const b = medianOf(s, 'cowshed pull, 100k-entry image + small layer');
      const p = medianOf(s, 'podman pull, Debian + small layer');
      if (a && p) s.notes.push(`cowshed / podman, Debian + small layer: ${(a / p).toFixed(2)} (target ≤ 1: ${a / p <= 1 ? 'met' : 'not met'})`);
      if (a && b) s.notes.push(`100k-entry base / Debian base: ${(b / a).toFixed(2)} (target ≤ 1.5: ${b / a <= 1.5 ? 'met' : 'not met'})`);
      return [r, s];
    },
  };

  const pushCommit: Benchmark = {
    name: 'push-commit',
    needsImage: true,
    async run() {
      const reg = await registry();
      const v1 = await ref('v1');
      const file = 'etc/bench-pushed-file';
      let n = 0;
      /** cowshed: store with v1 pulled and pushed to `repo` (untimed); per run one committed image. */
      const cowPush = (name: string, repo: string, viaCli: boolean): Contender & { last?: PushResult } => {
        let fs: ScratchFs | undefined;
        let store: Store | undefined;
        let image: string | undefined;
        const c: Contender & { last?: PushResult } = {
          name, role: 'cowshed',
          before: async () => {
            fs = await scratch();
            store = await openStore(join(fs.path, 'store'));
            await pullImage(store, v1, { tlsVerify: false });
            await pushImage(store, v1, `${reg.host}/${repo}:v1`, { tlsVerify: false });
          },
          prepare: async () => {
            const ctr = await createContainer(store!, v1);
            writeFileSync(join(ctr.rootfs, file), randomBytes(4096));
            image = `bench-push:${n++}`;
            await commitContainer(store!, ctr.id, image);
            removeContainer(store!, ctr.id);
            // The CLI opens the store itself: release this process's handle meanwhile.
            if (viaCli) { closeStore(store); store = undefined; }
          },
          run: async () => {
            if (viaCli) await cowshed(join(fs!.path, 'store'), 'push', '-q', '--tls-verify=false', image!, `${reg.host}/${repo}:c${n}`);
            else c.last = await pushImage(store!, image!, `${reg.host}/${repo}:c${n}`, { tlsVerify: false });
          },
          cleanup: async () => { store ??= await openStore(join(fs!.path, 'store')); },
          after: async () => { closeStore(store); await drop(fs); },
        };
        return c;
      };
      let pfs: ScratchFs | undefined;
      let committed: string | undefined;
      const podmanPush: Contender = {
        name: 'podman push', role: 'anchor', skip: noPodman,
        before: async () => {
          pfs = await scratch();
          await podman(pfs.path, 'pull', '-q', '--tls-verify=false', v1);
          await podman(pfs.path, 'push', '-q', '--tls-verify=false', v1, `${reg.host}/podman-push:v1`);
        },
        prepare: async () => {
          const id = (await podman(pfs!.path, 'create', v1, '/bin/sh')).stdout.trim();
          writeFileSync(join((await podman(pfs!.path, 'mount', id)).stdout.trim(), file), randomBytes(4096));
          committed = `localhost/bench-push:${n++}`;
          await podman(pfs!.path, 'commit', '-q', id, committed);
          await podman(pfs!.path, 'rm', '-f', id);
        },
        run: async () => { await podman(pfs!.path, 'push', '-q', '--tls-verify=false', committed!, `${reg.host}/podman-push:c${n}`); },
        after: async () => {
          if (pfs) {
            await podman(pfs.path, 'rm', '-a', '-f');
            await podman(pfs.path, 'rmi', '-a', '-f');
          }
          await drop(pfs);
        },
      };
      const lib = cowPush('pushImage() (in-process)', 'cowshed-lib-push', false);
      const r = await measure('push of a committed Debian image (1 new 4 kB file), base layers already pushed', [
        cowPush('cowshed push', 'cowshed-cli-push', true),
        lib,
        podmanPush,
      ], m);
      const x = ratioNote(r, 'cowshed push', 'podman push', 'cowshed push / podman push');
      if (x) r.notes.push(x);
      if (lib.last) {
        const acts = lib.last.layers.map((l) => `${l.action} ${fmtBytes(l.size)}`).join(', ');
        r.notes.push(`pushImage(): ${fmtBytes(lib.last.bytesSent)} sent; layers: ${acts}; config ${lib.last.configUploaded ? 'uploaded' : 'already there'}`);
      }
      r.notes.push('podman\'s bytes sent are not reported by podman; it also skips base layers the registry has');
      return [r];
    },
  };

  return {
    benchmarks: [pullCold, pullAgain, pullUpdate, pushCommit],
    dispose: async () => {
      const errors: string[] = [];
      const attempt = async (f: () => unknown): Promise<void> => {
        try { await f(); } catch (e) { errors.push(e instanceof Error ? e.message.split('\n')[0]! : String(e)); }
      };
      for (const s of [...stores]) await attempt(() => closeStore(s));
      for (const fs of [...live]) await attempt(() => drop(fs));
      if (registryP) await attempt(async () => (await registryP!).stop());
      if (errors.length) process.stderr.write(`bench: registry cleanup: ${errors.join('; ')}\n`);
    },
  };
}
