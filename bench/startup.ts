// Start-up of the installed command (issues 10 and 15): `npm pack`, `npm install -g`
// into a temporary prefix, then `cowshed --version`, `ps`, `create` and `diff`
// (a container with bench/containers.ts's ten changes) through that command (the sh launcher and the Node 24 the package depends
// on, with the system's directories on PATH, as a user runs it) against the
// same podman commands, alternating. `npm run bench startup` runs just this.
// dispose() removes the containers, the scratch filesystem and the prefix.
import { join } from 'node:path';
import { type Benchmark, type BenchResult, type Contender, exec, installPackage, measure, needTool, podman, ScratchFs } from './lib.ts';
import { podmanOciRef } from '../test/helpers/cli.ts';
import { makeTenChanges, pickFiles } from './containers.ts';

export interface StartupBenchOptions {
  repo: string;
  /** Fixture cache (COWSHED_FIXTURES). */
  cache: string;
  runs: number;
  warmup: number;
}

export function startupBenchmarks(opts: StartupBenchOptions): { benchmark: Benchmark; dispose: () => Promise<void> } {
  let disposePackage: (() => Promise<void>) | undefined;
  let fs: ScratchFs | undefined;
  let podmanUsed = false;
  const m = { runs: opts.runs, warmup: opts.warmup };

  const benchmark: Benchmark = {
    name: 'startup',
    needsImage: true,
    async run(): Promise<BenchResult[]> {
      const inst = await installPackage(opts.repo);
      disposePackage = inst.dispose;
      const { env, node: node24 } = inst;

      fs = await ScratchFs.create();
      const store = join(fs.path, 'store');
      const pdir = join(fs.path, 'podman');
      const layout = join(opts.cache, 'debian-oci');
      const cowshed = (...args: string[]) => exec('cowshed', ['--store', store, ...args], { env });
      const pm = (...args: string[]) => podman(pdir, ...args);
      const noPodman = needTool('podman', 'podman');
      await cowshed('import', `oci:${layout}:v1`, 'debian:v1');
      // One container keeps the image's EROFS mount up, as in steady use (podman's layers need nothing like it).
      await cowshed('create', '--name', 'holder', 'debian:v1');
      let podmanImage = '';
      const podmanReady = async (): Promise<void> => {
        podmanUsed = true;
        if (!podmanImage) podmanImage = (await pm('pull', '-q', podmanOciRef(layout, 'v1'))).stdout.trim();
      };

      const simple = (name: string, role: Contender['role'], cmd: string, args: string[], skip?: Contender['skip']): Contender => ({
        name, role, skip, run: async () => { await exec(cmd, args, { env }); },
      });
      const version = await measure('start-up: --version (installed command)', [
        simple('cowshed --version', 'cowshed', 'cowshed', ['--version']),
        simple('podman --version', 'anchor', 'podman', ['--version'], noPodman),
        simple('node -e 0 (Node 24 start-up floor)', 'reference', node24, ['-e', '0']),
      ], m);
      const ps = await measure('start-up: ps (installed command, one container)', [
        { name: 'cowshed ps', role: 'cowshed', run: async () => { await cowshed('ps'); } },
        { name: 'podman ps', role: 'anchor', skip: noPodman, before: podmanReady, run: async () => { await pm('ps'); } },
      ], m);

      let cid: string | undefined;
      let pid: string | undefined;
      let rid: string | undefined;
      const create = await measure('start-up: create (installed command, Debian)', [
        {
          name: 'cowshed create', role: 'cowshed',
          run: async () => { cid = (await cowshed('create', 'debian:v1')).stdout.trim(); },
          cleanup: async () => { if (cid) await cowshed('rm', '-f', cid); cid = undefined; },
        },
        {
          name: 'podman create', role: 'anchor', skip: noPodman, before: podmanReady,
          run: async () => { pid = (await pm('create', podmanImage, '/bin/sh')).stdout.trim(); },
          cleanup: async () => { if (pid) await pm('rm', '-f', pid); pid = undefined; },
        },
        {
          name: 'node bin/cowshed.js create (checkout, TypeScript sources)', role: 'reference',
          run: async () => { rid = (await exec(node24, [join(opts.repo, 'bin', 'cowshed.js'), '--store', store, 'create', 'debian:v1'], { env })).stdout.trim(); },
          cleanup: async () => { if (rid) await cowshed('rm', '-f', rid); rid = undefined; },
        },
      ], m);

      // The same ten changes in a cowshed and a podman container, both left mounted (podman diff need not mount).
      const root = (await cowshed('mount', (await cowshed('create', '--name', 'differ', 'debian:v1')).stdout.trim())).stdout.trim();
      const files = pickFiles(root, 6);
      makeTenChanges(root, files);
      let podmanDiffer = '';
      const diff = await measure('start-up: diff (installed command, a container with 10 changes)', [
        { name: 'cowshed diff', role: 'cowshed', run: async () => { await cowshed('diff', 'differ'); } },
        {
          name: 'podman diff', role: 'anchor', skip: noPodman,
          before: async () => {
            await podmanReady();
            if (podmanDiffer) return;
            podmanDiffer = (await pm('create', podmanImage, '/bin/sh')).stdout.trim();
            makeTenChanges((await pm('mount', podmanDiffer)).stdout.trim(), files);
          },
          run: async () => { await pm('diff', podmanDiffer); },
        },
      ], m);

      for (const [r, what] of [[version, '--version'], [ps, 'ps'], [create, 'create'], [diff, 'diff']] as const) {
        const target = r.contenders.find((c) => c.role === 'anchor');
        const cow = r.contenders.find((c) => c.role === 'cowshed');
        if (cow?.medianMs && target?.medianMs) r.notes.push(`cowshed ${what} / podman ${what}: ${(cow.medianMs / target.medianMs).toFixed(2)} (target ≤ 1)`);
      }
      const floor = version.contenders.find((c) => c.role === 'reference')?.medianMs;
      const pv = version.contenders.find((c) => c.role === 'anchor')?.medianMs;
      if (floor && pv) version.notes.push(`node -e 0 / podman --version: ${(floor / pv).toFixed(2)} (Node's own start-up, below which no command goes)`);
      create.notes.push('the installed command: sh launcher → the package\'s Node 24 → dist/cli/entry.js, with the system\'s /usr/bin first on PATH');
      return [version, ps, create, diff];
    },
  };

  const dispose = async (): Promise<void> => {
    if (fs) {
      if (podmanUsed) await podman(join(fs.path, 'podman'), 'rm', '-a', '-f').catch(() => undefined);
      await fs.dispose(); // unmounts what is left below it (the containers' overlays, the image's EROFS mount)
      fs = undefined;
    }
    await disposePackage?.();
    disposePackage = undefined;
  };
  return { benchmark, dispose };
}
