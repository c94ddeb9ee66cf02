// `BENCH_BASELINE=<git rev> npm run bench import-cold composefs-create`:
// the CLI of an older commit as one more contender beside this checkout's,
// measured in the same run and alternating with it, so that a change's
// before and after survive the noise of a shared machine. The old tree is
// taken with `git archive` into a temporary directory (no worktree, nothing
// written into the repository); its node_modules is this checkout's when the
// lock file is the same, else its own `npm ci`.
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { type BenchResult, exec } from './lib.ts';

export interface Baseline {
  /** The commit, abbreviated, as the report names it. */
  short: string;
  /** The old tree (a package directory: `npm pack` works in it). */
  dir: string;
  /** Its bin/cowshed.js, run from source like this checkout's. */
  cli: string;
  dispose: () => Promise<void>;
}

export async function baselineCheckout(repo: string, rev: string): Promise<Baseline> {
  const short = (await exec('git', ['-C', repo, 'rev-parse', '--short', `${rev}^{commit}`])).stdout.trim();
  const dir = await mkdtemp('/var/tmp/cowshed-bench-baseline-');
  try {
    process.stderr.write(`bench: baseline ${short} into ${dir}\n`);
    await exec('sh', ['-c', 'git -C "$0" archive "$1" | tar -x -C "$2"', repo, short, dir]);
    const sameLock = (await exec('git', ['-C', repo, 'diff', '--quiet', short, '--', 'package-lock.json'], { allowFail: true })).code === 0;
    if (sameLock) await symlink(join(repo, 'node_modules'), join(dir, 'node_modules'));
    else await exec('npm', ['ci', '--no-audit', '--no-fund'], { cwd: dir });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  return { short, dir, cli: join(dir, 'bin', 'cowshed.js'), dispose: () => rm(dir, { recursive: true, force: true }) };
}

/** "after / before (<rev>): R" for a result with a cowshed row and the baseline's row (named by `marker`). */
export function afterBeforeNote(r: BenchResult, b: Baseline, marker: string): string {
  const after = r.contenders.find((c) => c.role === 'cowshed')?.medianMs;
  const before = r.contenders.find((c) => c.name.includes(marker))?.medianMs;
  if (!after || !before) return `after / before (${b.short}): not measured`;
  return `after / before (${b.short}): ${(after / before).toFixed(2)} (medians ${(after / 1000).toFixed(2)} s / ${(before / 1000).toFixed(2)} s)`;
}
