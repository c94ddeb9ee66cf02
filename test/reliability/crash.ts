// Crash safety: SIGKILL the CLI at a random moment of an operation, then
// demand that fsck is clean (or fsck --repair makes it clean without losing
// an image committed before), that tmp/ is empty, that the same command run
// again completes, and that every earlier image still mounts and reads.
import { writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, debianFixture, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { buildEdgeImage, EDGE_TAG, pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { cowshedAsync, fsckOrRepair, listImages, mountAndRead, prng, tmpEntries, isOneLineError, strayContainerState, orphanImageMounts, type AsyncCliResult } from './lib.ts';

export type CrashOp = 'import' | 'commit' | 'rm' | 'rmi' | 'gc' | 'create';
/** The operations of issue 6; 'create' can be asked for too. */
export const CRASH_OPS: CrashOp[] = ['import', 'commit', 'rm', 'rmi', 'gc'];

export interface CrashFigures {
  op: CrashOp;
  /** Kills attempted. */
  n: number;
  /** Kills that landed while the process ran (a kill that comes after the exit is drawn again, up to 3 times). */
  landed: number;
  /** Attempts after which every check held. */
  survived: number;
  /** Kills after which fsck was not clean and --repair was needed (and worked, if survived). */
  repaired: number;
  /** What fsck found after the kills, by kind (tmp = leftovers of the killed process). */
  problemKinds: Record<string, number>;
  /** Duration of an uninterrupted run, ms: kills are spread over [half the CLI's start-up, this). */
  durationMs: number;
  failures: string[];
}

export interface CrashOptions {
  kills: number;
  seed: number;
  ops?: CrashOp[];
  log?: (line: string) => void;
  /** Reuse an edge-image layout (built here when absent). */
  edgeLayout?: string;
}

/** What an earlier image must still read like: name → [file, bytes]. */
interface Witness { image: string; id: string; file: string; content: Buffer }

interface OpPlan {
  store: string;
  /** Makes the state the command acts on (before each attempt). */
  prepare(i: number): void;
  command(i: number): string[];
  /** After a kill: is the command's effect already complete (so a re-run may say "no such …")? */
  done(i: number): boolean;
  /** After a successful re-run: undo, so the next attempt does the real work again. */
  reset(i: number): void;
}

export async function crashCampaign(opts: CrashOptions): Promise<CrashFigures[]> {
  const log = opts.log ?? (() => {});
  const rand = prng(opts.seed);
  const ops = opts.ops ?? CRASH_OPS;
  const { layout: debian } = debianFixture();
  const work = tempDir('cowshed-crash-');
  const results: CrashFigures[] = [];
  try {
    let edge = opts.edgeLayout;
    if (!edge) { edge = join(work, 'edge'); await buildEdgeImage(edge); }

    // Store A (import): holds only the edge image, so importing Debian does real work.
    // Store B (the rest): the edge image and a container of it with changes to commit; images
    // for rmi and gc to remove are small unique trees (dir:), so fsck of the store stays quick.
    const storeA = join(work, 'store-a');
    const storeB = join(work, 'store-b');
    cowshedOk(storeA, 'import', `oci:${edge}:${EDGE_TAG}`, 'edge:e');
    const witnessA: Witness[] = [witness(storeA, 'edge:e', 'files/small.txt')];
    let witnessB: Witness[] = [];
    if (ops.some((o) => o !== 'import')) {
      cowshedOk(storeB, 'import', `oci:${edge}:${EDGE_TAG}`, 'edge:e');
      cowshedOk(storeB, 'import', `dir:${uniqueTree(join(work, 'base-tree'), 0)}`, 'base:1');
      const cid = lastLine(cowshedOk(storeB, 'create', '--name', 'cc', 'edge:e'));
      const root = lastLine(cowshedOk(storeB, 'mount', cid));
      // Changes worth committing: a few MB of new files, an edit, a deletion.
      mkdirSync(join(root, 'added'));
      for (let k = 0; k < 40; k++) writeFileSync(join(root, 'added', `f${k}`), pseudoRandomBytes(100_000, 1000 + k));
      writeFileSync(join(root, 'files/small.txt'), 'changed\n');
      rmSync(join(root, 'files/medium.bin'));
      witnessB = [witness(storeB, 'edge:e', 'files/small.txt'), witness(storeB, 'base:1', 'd0/f0')];
    }
    const victimTree = (i: number): string => uniqueTree(join(work, `victim-tree-${i}`), i + 1);

    const plans: Record<CrashOp, OpPlan> = {
      import: {
        store: storeA,
        prepare: () => {},
        command: () => ['import', `oci:${debian}:v1`, 'victim:import'],
        done: () => listImages(storeA).has('victim:import'),
        reset: () => { cowshedOk(storeA, 'rmi', 'victim:import'); cowshedOk(storeA, 'gc'); },
      },
      commit: {
        store: storeB,
        prepare: () => {},
        command: () => ['commit', 'cc', 'victim:commit'],
        done: () => listImages(storeB).has('victim:commit'),
        reset: () => { cowshedOk(storeB, 'rmi', 'victim:commit'); cowshedOk(storeB, 'gc'); },
      },
      rm: {
        store: storeB,
        prepare: (i) => {
          const id = lastLine(cowshedOk(storeB, 'create', '--name', `rm${i}`, 'edge:e'));
          writeFileSync(join(lastLine(cowshedOk(storeB, 'mount', id)), 'scratch'), 'x'.repeat(10_000));
        },
        command: (i) => ['rm', '-f', `rm${i}`],
        done: (i) => !containerNames(storeB).includes(`rm${i}`),
        reset: () => {},
      },
      rmi: {
        store: storeB,
        prepare: (i) => { cowshedOk(storeB, 'import', `dir:${victimTree(i)}`, 'victim:rmi'); },
        command: () => ['rmi', 'victim:rmi'],
        done: () => !listImages(storeB).has('victim:rmi'),
        reset: () => {},
      },
      create: {
        store: storeB,
        prepare: () => {},
        command: (i) => ['create', '--name', `cr${i}`, 'edge:e'],
        done: (i) => containerNames(storeB).includes(`cr${i}`),
        reset: (i) => { cowshedOk(storeB, 'rm', '-f', `cr${i}`); },
      },
      gc: {
        store: storeB,
        prepare: (i) => { cowshedOk(storeB, 'import', `dir:${victimTree(i)}`, 'victim:gc'); cowshedOk(storeB, 'rmi', 'victim:gc'); },
        command: () => ['gc'],
        done: () => true,
        reset: () => {},
      },
    };

    // Node start-up and module loading take most of a short command: aim the kills past half of it.
    const startup = (await cowshedAsync(storeA, ['images'])).ms;
    for (const op of ops) {
      const plan = plans[op];
      const witnesses = op === 'import' ? witnessA : witnessB;
      // One uninterrupted run to measure the operation (index -1 keeps names apart).
      plan.prepare(-1);
      const t = await cowshedAsync(plan.store, plan.command(-1));
      if (t.status !== 0) throw new Error(`${op}: uninterrupted run failed: ${t.stderr}`);
      plan.reset(-1);
      const fig: CrashFigures = { op, n: opts.kills, landed: 0, survived: 0, repaired: 0, problemKinds: {}, durationMs: Math.round(t.ms), failures: [] };
      let seq = 0;
      for (let n = 0; n < opts.kills; n++) {
        // A kill that comes after the command has exited tests nothing: undo and draw again (a shorter window each time).
        let i = 0;
        let delay = 0;
        let r: AsyncCliResult | undefined;
        for (let attempt = 0; attempt < 4; attempt++) {
          i = seq++;
          plan.prepare(i);
          const from = Math.min(startup / 2, t.ms / 2);
          delay = Math.floor(from + rand() * (t.ms * 0.8 ** attempt - from));
          r = await cowshedAsync(plan.store, plan.command(i), { killAfterMs: delay });
          if (r.killed || r.status !== 0) break;
          plan.reset(i);
        }
        if (!r) throw new Error('unreachable');
        if (r.killed) fig.landed++;
        const problems: string[] = [];
        if (!r.killed && r.status !== 0) problems.push(`failed on its own (exit ${r.status}): ${r.stderr.trim()}`);
        const f = fsckOrRepair(plan.store);
        if (f.repaired) fig.repaired++;
        for (const p of f.problems) {
          const kind = /^problem: (\w+):/.exec(p)?.[1] ?? 'other';
          fig.problemKinds[kind] = (fig.problemKinds[kind] ?? 0) + 1;
        }
        if (!f.clean) problems.push(`fsck not clean after --repair: ${f.problems.join(' | ')} ${f.detail}`);
        const leftovers = tmpEntries(plan.store);
        if (leftovers.length) problems.push(`tmp/ not empty after fsck: ${leftovers.join(' ')}`);
        const images = listImages(plan.store);
        for (const w of witnesses) {
          if (images.get(w.image) !== w.id) { problems.push(`earlier image ${w.image} lost (now ${images.get(w.image) ?? 'absent'})`); continue; }
          try {
            if (!mountAndRead(plan.store, w.image, w.file).equals(w.content)) problems.push(`${w.image}:/${w.file} reads differently`);
          } catch (e) { problems.push(`${w.image}: ${(e as Error).message}`); }
        }
        const wasDone = plan.done(i);
        const again = cowshed(plan.store, ...plan.command(i));
        if (again.status !== 0 && !(wasDone && isOneLineError(again.stderr))) {
          problems.push(`re-run of ${plan.command(i).join(' ')} failed (exit ${again.status}): ${again.stderr.trim()}`);
        }
        if (again.status === 0 || wasDone) {
          try { plan.reset(i); } catch (e) { problems.push(`undoing the command failed: ${(e as Error).message.split('\n').slice(0, 3).join(' ')}`); }
        }
        cowshed(plan.store, 'gc');
        const after = tmpEntries(plan.store);
        if (after.length) problems.push(`tmp/ not empty after re-run and gc: ${after.join(' ')}`);
        problems.push(...strayContainerState(plan.store), ...orphanImageMounts(plan.store));
        const final = cowshed(plan.store, 'fsck');
        if (final.status !== 0) problems.push(`fsck after re-run: ${final.stdout.trim()}`);
        const line = `${op} #${n}: kill at ${delay} ms of ~${Math.round(t.ms)} ms (${r.killed ? 'landed' : `exited first, status ${r.status}`})` +
          `${f.repaired ? `, fsck --repair needed (${f.problems.length} problems: ${f.problems[0]?.slice(0, 120)})` : ''}: ${problems.length ? 'FAILED' : 'ok'}`;
        log(line);
        if (problems.length) fig.failures.push(`${line}\n    ${problems.join('\n    ')}`);
        else fig.survived++;
      }
      log(`${op}: survived ${fig.survived}/${fig.n} kills (${fig.landed} landed mid-run, ${fig.repaired} needed --repair)`);
      results.push(fig);
    }
    // The last word: every earlier image verifies byte for byte.
    for (const [store, ws] of [[storeA, witnessA], [storeB, witnessB]] as const) {
      for (const w of ws) {
        try { mountAndRead(store, w.image, w.file, true); } catch (e) { results[0]?.failures.push(`final mount --verify of ${w.image}: ${(e as Error).message}`); }
      }
    }
    return results;
  } finally {
    removeTree(work);
  }
}

function witness(store: string, image: string, file: string): Witness {
  const id = listImages(store).get(image);
  if (!id) throw new Error(`no image ${image}`);
  return { image, id, file, content: mountAndRead(store, image, file) };
}

function containerNames(store: string): string[] {
  return cowshedOk(store, 'ps', '-a').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).pop()!);
}

/** A tree of 1000 files (3 MB) whose contents depend on `seed`: each victim image has objects of its own for rmi and gc to remove. */
function uniqueTree(dir: string, seed: number): string {
  rmSync(dir, { recursive: true, force: true });
  for (let d = 0; d < 8; d++) {
    mkdirSync(join(dir, `d${d}`), { recursive: true });
    for (let f = 0; f < 125; f++) writeFileSync(join(dir, `d${d}`, `f${f}`), pseudoRandomBytes(3000 + f, seed * 1000 + d * 125 + f + 1));
  }
  return dir;
}
