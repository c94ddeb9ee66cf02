// Eight cowshed processes at once on one store: a short seeded slice (the full one: npm run test:reliability).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { concurrencyCampaign } from './concurrency.ts';

const ROUNDS = Number(process.env.COWSHED_CONCURRENCY_ROUNDS ?? 2);
const SEED = Number(process.env.COWSHED_SEED ?? 6);

test(`concurrency: ${ROUNDS} round(s) of 8 processes on one store (seed ${SEED})`, { timeout: 600_000 }, async () => {
  const fig = await concurrencyCampaign({ rounds: ROUNDS, seed: SEED, log: (l) => console.log(`# ${l}`) });
  assert.deepEqual(fig.failures, []);
  assert.equal(fig.operations, ROUNDS * 8);
});
