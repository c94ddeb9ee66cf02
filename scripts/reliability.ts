// The reliability campaign (issue 6): crash safety under SIGKILL, full disk,
// tampering, hostile input fuzzing, concurrency and permissions, with its
// figures. Seeded: the same
// seed gives the same kill delays, tamper positions and fuzz inputs.
//
//   npm run test:reliability                       # the full campaign (~30 min; its crash part ~17 min)
//   node scripts/reliability.ts --seed 7 --kills 20 --fuzz-runs 20000 --rounds 10 --crash-ops import,gc
//   node scripts/reliability.ts --only fuzz        # crash | full-disk | tamper | fuzz | concurrency | permissions
//   node scripts/reliability.ts --only crash --drivers overlay,btrfs --crash-ops create,rm
//
// The crash part runs every operation under each driver of --drivers (btrfs
// on a loop-mounted btrfs, vfs on a loop-mounted xfs with reflink=1, made
// and removed by the campaign); pull runs under the first driver only, with
// a docker-registry on 127.0.0.1 started for it.
//
// Exits 1 when any check fails; prints each failure and, for fuzz findings,
// the file holding the input that triggered it.
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { crashCampaign, CRASH_DRIVERS, type CrashFigures, type CrashOp, type DriverName } from '../test/reliability/crash.ts';
import { tamperCampaign, type TamperFigures } from '../test/reliability/tamper.ts';
import { fuzzCampaign, type FuzzTargetFigures } from '../test/reliability/fuzz.ts';
import { concurrencyCampaign, type ConcurrencyFigures } from '../test/reliability/concurrency.ts';
import { fullDiskCampaign, type FullDiskFigures } from '../test/reliability/full-disk.ts';
import { buildEdgeImage } from '../test/fixtures/edge-image.ts';
import { removeTree, tempDir } from '../test/helpers/cli.ts';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: '6' },
    kills: { type: 'string', default: '10' },
    'crash-ops': { type: 'string', default: 'import,commit,rm,rmi,gc,create,pull' },
    /** Operations for the drivers after the first (default: --crash-ops). */
    'crash-ops-per-driver': { type: 'string' },
    drivers: { type: 'string', default: CRASH_DRIVERS.join(',') },
    'fuzz-runs': { type: 'string', default: '10000' },
    rounds: { type: 'string', default: '8' },
    only: { type: 'string', multiple: true },
  },
});
const seed = Number(values.seed);
const crashOps = values['crash-ops'].split(',') as CrashOp[];
const drivers = values.drivers.split(',') as DriverName[];
for (const op of [...crashOps, ...(values['crash-ops-per-driver']?.split(',') ?? [])]) {
  if (!['import', 'commit', 'rm', 'rmi', 'gc', 'create', 'pull'].includes(op)) throw new Error(`--crash-ops: unknown operation ${op}`);
}
for (const d of drivers) if (!CRASH_DRIVERS.includes(d)) throw new Error(`--drivers: unknown driver ${d} (${CRASH_DRIVERS.join(', ')})`);
const parts = new Set(values.only?.length ? values.only : ['crash', 'full-disk', 'tamper', 'fuzz', 'concurrency', 'permissions']);
const log = (l: string): void => console.log(`  ${l}`);
const started = performance.now();
const failures: string[] = [];

const work = tempDir('cowshed-reliability-');
let crash: CrashFigures[] = [];
let tamper: TamperFigures | undefined;
let fuzz: FuzzTargetFigures[] = [];
let conc: ConcurrencyFigures | undefined;
let disk: FullDiskFigures | undefined;
let perms: { passed: number; total: number; lines: string[] } | undefined;
try {
  const edge = join(work, 'edge');
  if (parts.has('crash') || parts.has('concurrency') || parts.has('full-disk')) await buildEdgeImage(edge);
  if (parts.has('crash')) {
    console.log(`crash safety: SIGKILL at random moments, ${values.kills} per operation per driver (${drivers.join(', ')}; seed ${seed})`);
    const t0 = performance.now();
    crash = await crashCampaign({
      kills: Number(values.kills), seed, log, edgeLayout: edge, ops: crashOps, drivers,
      opsPerDriver: values['crash-ops-per-driver']?.split(',') as CrashOp[] | undefined,
    });
    console.log(`crash safety took ${((performance.now() - t0) / 60_000).toFixed(1)} min`);
    failures.push(...crash.flatMap((f) => f.failures));
  }
  if (parts.has('full-disk')) {
    console.log('full disk: a store on a 120 MB loop-mounted ext4');
    disk = await fullDiskCampaign({ log, edgeLayout: edge });
    for (const c of disk.cases) if (!(c.refusedClearly && c.intact && c.spaceBack)) failures.push(`full disk ${c.name}: ${c.notes.join('; ')}`);
  }
  if (parts.has('tamper')) {
    console.log(`tampering (seed ${seed})`);
    tamper = await tamperCampaign({ seed, log });
    for (const c of tamper.cases) if (!Object.values(c.detectedBy).every(Boolean)) failures.push(`tamper ${c.name}: ${c.notes.join('; ')}`);
  }
  if (parts.has('fuzz')) {
    console.log(`hostile input: ${values['fuzz-runs']} inputs per parser (seed ${seed})`);
    fuzz = await fuzzCampaign({ runs: Number(values['fuzz-runs']), seed, log });
    failures.push(...fuzz.flatMap((t) => t.findings.map((f) => `fuzz ${t.target} ${f.kind}: ${f.message} (input ${f.input})`)));
  }
  if (parts.has('concurrency')) {
    console.log(`concurrency: ${values.rounds} rounds of 8 processes (seed ${seed})`);
    conc = await concurrencyCampaign({ rounds: Number(values.rounds), seed, log, edgeLayout: edge });
    failures.push(...conc.failures);
  }
  if (parts.has('permissions')) {
    // The permissions checks are node:test cases (other users kept out, a root container
    // attacking the store under each driver, a container racing its commit): run them here too.
    console.log('permissions: other users, container attacks on the store under each driver, a commit raced');
    const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', join(import.meta.dirname, '..', 'test', 'reliability', 'permissions.test.ts')], { encoding: 'utf8' });
    const lines = r.stdout.split('\n').filter((l) => /^\s*(not )?ok \d+ - /.test(l) && !/^(not )?ok/.test(l));
    for (const l of [...lines, ...r.stdout.split('\n').filter((l) => l.startsWith('# ') && /commits made/.test(l))]) log(l.trim());
    perms = { passed: lines.filter((l) => /^\s*ok/.test(l)).length, total: lines.length, lines };
    if (r.status !== 0 || perms.passed !== perms.total) failures.push(`permissions: ${perms.total - perms.passed} of ${perms.total} checks failed (node --test test/reliability/permissions.test.ts)`);
  }
} finally {
  removeTree(work);
}

console.log(`\nFigures (seed ${seed}, ${((performance.now() - started) / 60_000).toFixed(1)} min):`);
if (crash.length) {
  console.log('| driver | operation | kills survived | landed mid-run | needed fsck --repair (problems found) | left an incomplete container (rm -f removes it) | uninterrupted run |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const f of crash) {
    const kinds = Object.entries(f.problemKinds).map(([k, n]) => `${n} ${k}`).join(', ');
    console.log(`| ${f.driver} | ${f.op} | ${f.survived}/${f.n} | ${f.landed} | ${f.repaired}${kinds ? ` (${kinds})` : ''} | ${f.op === 'create' ? f.incomplete : '-'} | ${f.durationMs} ms |`);
  }
}
if (disk) console.log(`out-of-space cases handled: ${disk.passed}/${disk.total} (clear error, store intact, space given back)`);
if (tamper) {
  console.log(`tamper cases detected: ${tamper.detected}/${tamper.total} (${tamper.cases.length} cases x fsck, mount --verify, run --verify)`);
}
if (fuzz.length) {
  const exec = fuzz.filter((t) => t.target !== 'bombs').reduce((n, t) => n + Math.max(0, t.executions), 0);
  const findings = fuzz.reduce((n, t) => n + t.findings.length, 0);
  console.log(`fuzz executions: ${exec} over ${fuzz.length - 1} parsers, plus ${fuzz.find((t) => t.target === 'bombs')?.executions ?? 0} bomb cases; findings: ${findings}`);
  for (const t of fuzz) {
    if (t.target === 'bombs') continue;
    const refused = Object.values(t.refused).reduce((a, b) => a + b, 0);
    console.log(`  ${t.target}: ${t.executions} executions (${t.accepted} accepted, ${refused} refused with a typed error), ${t.findings.length} findings`);
  }
}
if (conc) {
  const refused = Object.values(conc.refused).reduce((a, b) => a + b, 0);
  console.log(`concurrent operations completed: ${conc.completed}/${conc.operations} (${refused} refused with an expected busy/locked error) in ${conc.rounds} rounds of 8`);
}
if (perms) console.log(`permission checks passed: ${perms.passed}/${perms.total} (other users refused; a root container cannot write into the store through symlinks or hardlinks under composefs, overlay, btrfs and vfs; a racing container never leaks host files into a commit)`);
if (failures.length) {
  console.log(`\n${failures.length} failures:`);
  for (const f of failures) console.log(`- ${f}`);
  process.exitCode = 1;
} else {
  console.log('\nno failures');
}
