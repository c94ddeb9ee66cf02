// Concurrency: rounds of eight cowshed processes at once on one store
// (imports and registry pulls of overlapping images, create, commit, rmi, gc,
// run, rm, tag).
// No process may hang; each exits 0 or with one expected line (busy, locked);
// after each round fsck is clean, every image that was not removed is still
// there and reads, and what succeeded is visible.
import { writeFileSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, debianFixture, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { buildEdgeImage, EDGE_TAG, pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { startRegistryWithDebian, type RunningRegistry } from '../registry/servers.ts';
import { cowshedAsync, listImages, mountAndRead, prng, isOneLineError, orphanImageMounts, strayContainerState, type AsyncCliResult } from './lib.ts';

export interface ConcurrencyFigures {
  rounds: number;
  operations: number;
  completed: number;
  /** Expected refusals (busy, locked), by message. */
  refused: Record<string, number>;
  failures: string[];
}

/** One-line errors a process may give when another holds what it needs. */
const EXPECTED_ERROR = /busy|locked|in use|try again|garbage-collected|waiting for other cowshed|is mounted; run cowshed umount|is used by container|no such image: race:|was removed while/i;
const TIMEOUT_MS = 240_000;

interface Op { label: string; args: string[]; effect?: { image?: string; removes?: string; container?: string; removedContainer?: string } }

export async function concurrencyCampaign(opts: { rounds: number; seed: number; procs?: number; edgeLayout?: string; log?: (l: string) => void }): Promise<ConcurrencyFigures> {
  const log = opts.log ?? (() => {});
  const rand = prng(opts.seed);
  const procs = opts.procs ?? 8;
  const { layout: debian } = debianFixture();
  const work = tempDir('cowshed-concurrency-');
  const fig: ConcurrencyFigures = { rounds: opts.rounds, operations: 0, completed: 0, refused: {}, failures: [] };
  let registry: RunningRegistry | undefined;
  try {
    let edge = opts.edgeLayout;
    if (!edge) { edge = join(work, 'edge'); await buildEdgeImage(edge); }
    // Debian's docker-registry on loopback, holding the same images the rounds import.
    registry = await startRegistryWithDebian(join(work, 'registry'), debian, ['v1', 'v2']);
    const pulled = (tag: string): string => `${registry!.host}/debian:${tag}`;
    const store = join(work, 'store');
    cowshedOk(store, 'import', `oci:${debian}:v1`, 'debian:v1');
    const cc = lastLine(cowshedOk(store, 'create', '--name', 'cc', 'debian:v1'));
    writeFileSync(join(lastLine(cowshedOk(store, 'mount', cc)), 'etc', 'concurrency'), 'committed\n');
    const osRelease = mountAndRead(store, 'debian:v1', 'etc/os-release');
    // Images the rounds may remove: one fresh per round, made beforehand.
    const victims: string[] = [];
    /** Containers made by earlier rounds, for rm to race with the rest. */
    const oldContainers: string[] = [];

    for (let round = 0; round < opts.rounds; round++) {
      // Removals race with imports of the same content: last round's v2 and edge images go while this round imports them again.
      const now = listImages(store);
      for (const prev of [`deb2:r${round - 1}`, `edge:r${round - 1}`, pulled('v1'), pulled('v2')]) if (now.has(prev) && !victims.includes(prev)) victims.push(prev);
      const v = `victim:r${round}`;
      cowshedOk(store, 'tag', 'debian:v1', v);
      victims.push(v);
      const pool: (() => Op)[] = [
        () => ({ label: 'import debian v1', args: ['import', `oci:${debian}:v1`, `deb1:r${round}`], effect: { image: `deb1:r${round}` } }),
        () => ({ label: 'import debian v2', args: ['import', `oci:${debian}:v2`, `deb2:r${round}`], effect: { image: `deb2:r${round}` } }),
        () => ({ label: 'import edge', args: ['import', `oci:${edge}:${EDGE_TAG}`, `edge:r${round}`], effect: { image: `edge:r${round}` } }),
        () => ({ label: 'create', args: ['create', '--name', `c${round}-${Math.floor(rand() * 1e6)}`, 'debian:v1'] }),
        () => ({ label: 'commit', args: ['commit', 'cc', `commit:r${round}`], effect: { image: `commit:r${round}` } }),
        () => { const t = victims.shift(); return t ? { label: 'rmi', args: ['rmi', t], effect: { removes: t } } : { label: 'images', args: ['images'] }; },
        () => ({ label: 'gc', args: ['gc'] }),
        () => ({ label: 'run', args: ['run', '--rm', 'debian:v1', '--', '/bin/true'] }),
        () => ({ label: 'tag', args: ['tag', 'debian:v1', `tagged:r${round}`], effect: { image: `tagged:r${round}` } }),
        () => ({ label: 'df', args: ['df'] }),
        () => { const c = oldContainers.shift(); return c ? { label: 'rm', args: ['rm', '-f', c], effect: { removedContainer: c } } : { label: 'ps', args: ['ps', '-a'] }; },
        () => ({ label: 'mount --verify', args: ['mount', '--verify', 'debian:v1'] }),
        () => ({ label: 'pull debian v2', args: ['--quiet', 'pull', '--tls-verify=false', pulled('v2')], effect: { image: pulled('v2') } }),
        () => ({ label: 'pull debian v1', args: ['--quiet', 'pull', '--tls-verify=false', pulled('v1')], effect: { image: pulled('v1') } }),
      ];
      // Even rounds: the import-heavy mix (import v1, v2 and edge while v2 is pulled, create, commit, rmi, gc).
      // Odd rounds: a fresh image that one process mounts with --verify, one removes and one
      // creates a container from, while v1 is pulled, edge imports, a commit runs and gc collects.
      let ops: Op[];
      if (round % 2 === 0) {
        ops = [0, 1, 2, 3, 4, 5, 6, 12].slice(0, procs).map((i) => pool[i]());
      } else {
        const race = `race:r${round}`;
        cowshedOk(store, 'import', `dir:${raceTree(join(work, 'race-tree'), round)}`, race);
        ops = [pool[13](), pool[2](), pool[4](), pool[6](), pool[5](),
          { label: 'mount --verify race', args: ['mount', '--verify', race] },
          { label: 'rmi race', args: ['rmi', race], effect: { removes: race } },
          { label: 'create race', args: ['create', '--name', `race${round}`, race] }].slice(0, procs);
      }
      while (ops.length < procs) ops.push(pool[Math.floor(rand() * pool.length)]());
      for (const o of ops) if (o.label === 'create') o.effect = { container: o.args[2] };
      const before = listImages(store);
      const results: AsyncCliResult[] = await Promise.all(ops.map((o) => cowshedAsync(store, o.args, { timeoutMs: TIMEOUT_MS })));
      fig.operations += ops.length;
      const problems: string[] = [];
      const removed = new Set<string>();
      const added = new Set<string>();
      const outcome: string[] = [];
      results.forEach((r, i) => {
        const o = ops[i];
        if (r.timedOut) { problems.push(`${o.label}: no exit within ${TIMEOUT_MS / 1000} s (deadlock?)`); return; }
        if (r.status === 0) {
          fig.completed++;
          outcome.push(`${o.label} ok`);
          if (o.effect?.image) added.add(o.effect.image);
          if (o.effect?.removes) removed.add(o.effect.removes);
          return;
        }
        const msg = r.stderr.trim();
        if (isOneLineError(msg) && EXPECTED_ERROR.test(msg)) {
          const key = msg.replace(/^cowshed: /, '').replace(/\S*:r\d+\S*/g, 'X').slice(0, 100);
          fig.refused[key] = (fig.refused[key] ?? 0) + 1;
          outcome.push(`${o.label} refused`);
          if (o.effect?.removes) victims.push(o.effect.removes); // still there: let a later round remove it
          return;
        }
        problems.push(`${o.label} (${o.args.join(' ')}) exit ${r.status}${r.signal ? ` ${r.signal}` : ''}: ${msg.slice(0, 500)}`);
      });

      const f = cowshed(store, 'fsck');
      if (f.status !== 0) problems.push(`fsck: ${f.stdout.trim()} ${f.stderr.trim()}`);
      const after = listImages(store);
      for (const [name, id] of before) {
        if (removed.has(name)) { if (after.has(name)) problems.push(`rmi ${name} succeeded but it is still listed`); continue; }
        if (after.get(name) !== id) problems.push(`image ${name} lost or changed by round ${round}`);
      }
      for (const name of added) if (!after.has(name)) problems.push(`${name} was reported made but is not listed`);
      const ps = cowshedOk(store, 'ps', '-a');
      ops.forEach((o, i) => { if (o.effect?.container && results[i].status === 0 && !ps.includes(o.effect.container)) problems.push(`container ${o.effect.container} made but not listed`); });
      try {
        if (!mountAndRead(store, 'debian:v1', 'etc/os-release').equals(osRelease)) problems.push('debian:v1 reads differently');
      } catch (e) { problems.push(`debian:v1: ${(e as Error).message}`); }
      for (const name of added) {
        try { mountAndRead(store, name, name.startsWith('edge') ? 'files/small.txt' : 'etc/os-release'); } catch (e) { problems.push(`${name}: ${(e as Error).message}`); }
      }
      if (added.has(`commit:r${round}`)) {
        try {
          if (mountAndRead(store, `commit:r${round}`, 'etc/concurrency').toString() !== 'committed\n') problems.push(`commit:r${round} lost the change`);
        } catch (e) { problems.push(`commit:r${round}: ${(e as Error).message}`); }
      }
      ops.forEach((o, i) => {
        if (o.effect?.removedContainer && results[i].status === 0 && containerNames(store).includes(o.effect.removedContainer)) problems.push(`rm ${o.effect.removedContainer} succeeded but it is still listed`);
        if (o.effect?.removedContainer && results[i].status !== 0) oldContainers.push(o.effect.removedContainer);
        if (o.effect?.container && results[i].status === 0) oldContainers.push(o.effect.container);
      });
      problems.push(...orphanImageMounts(store), ...strayContainerState(store));
      // A mount or container that won the race must still read; then undo it so the image can go.
      ops.forEach((o, i) => {
        if (results[i].status !== 0) return;
        if (o.label === 'mount --verify race' || o.label === 'create race') {
          const root = lastLine(results[i].stdout);
          try {
            const where = o.label === 'create race' ? lastLine(cowshedOk(store, 'mount', o.args[2])) : root;
            readFileSync(join(where, 'd0', 'f0'));
          } catch (e) { problems.push(`${o.label} succeeded but its files do not read: ${(e as Error).message}`); }
        }
      });
      if (ops.some((o) => o.label === 'mount --verify race')) cowshed(store, 'umount', `race:r${round}`);
      if (ops.some((o) => o.label === 'mount --verify')) cowshed(store, 'umount', 'debian:v1');
      log(`round ${round}: ${outcome.join(', ')}${problems.length ? ' -- FAILED' : ''}`);
      for (const p of problems) { log(`  ${p}`); fig.failures.push(`round ${round}: ${p}`); }
    }
    const last = cowshed(store, 'fsck');
    if (last.status !== 0) fig.failures.push(`final fsck: ${last.stdout}`);
    return fig;
  } finally {
    await registry?.stop();
    removeTree(work);
  }
}

function containerNames(store: string): string[] {
  return cowshedOk(store, 'ps', '-a').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).pop()!);
}

/** A tree big enough that mount --verify takes a moment (2000 files), with contents unique to the round. */
function raceTree(dir: string, seed: number): string {
  rmSync(dir, { recursive: true, force: true });
  for (let d = 0; d < 10; d++) {
    mkdirSync(join(dir, `d${d}`), { recursive: true });
    for (let f = 0; f < 200; f++) writeFileSync(join(dir, `d${d}`, `f${f}`), pseudoRandomBytes(2000 + f, seed * 10_000 + d * 200 + f + 1));
  }
  return dir;
}
