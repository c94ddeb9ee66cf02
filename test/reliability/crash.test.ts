// A short seeded slice of the crash campaign (the full one: npm run test:reliability).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashCampaign, CRASH_OPS } from './crash.ts';
import { slowOnly } from '../helpers/slow.ts';

const KILLS = Number(process.env.COWSHED_CRASH_KILLS ?? 1);
const SEED = Number(process.env.COWSHED_SEED ?? 6);

test(`crash safety: SIGKILL during import, commit, rm, rmi, gc, create, pull (${KILLS} per operation, seed ${SEED})`, { timeout: 600_000 }, async () => {
  const figures = await crashCampaign({ kills: KILLS, seed: SEED, ops: [...CRASH_OPS, 'create', 'pull'], log: (l) => console.log(`# ${l}`) });
  const failures = figures.flatMap((f) => f.failures);
  assert.deepEqual(failures, []);
  for (const f of figures) assert.equal(f.survived, f.n, `${f.driver} ${f.op}`);
});

// Under npm run test:slow; npm test keeps driver-crash-state.test.ts, the regression tests of what this found.
test(`crash safety under the overlay, btrfs and vfs drivers: SIGKILL during create, commit, rm (${KILLS} per operation, seed ${SEED})`, { timeout: 600_000, skip: slowOnly }, async () => {
  const figures = await crashCampaign({ kills: KILLS, seed: SEED, ops: ['create', 'commit', 'rm'], drivers: ['overlay', 'btrfs', 'vfs'], log: (l) => console.log(`# ${l}`) });
  assert.deepEqual(figures.map((f) => `${f.driver} ${f.op}`), ['overlay', 'btrfs', 'vfs'].flatMap((d) => ['create', 'commit', 'rm'].map((op) => `${d} ${op}`)));
  const failures = figures.flatMap((f) => f.failures);
  assert.deepEqual(failures, []);
  for (const f of figures) assert.equal(f.survived, f.n, `${f.driver} ${f.op}`);
});
