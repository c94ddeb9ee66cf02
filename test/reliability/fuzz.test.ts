// A short seeded slice of the fuzz campaign (the full one: npm run test:reliability).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzzCampaign } from './fuzz.ts';

const RUNS = Number(process.env.COWSHED_FUZZ_RUNS ?? 300);
const SEED = Number(process.env.COWSHED_SEED ?? 6);

test(`hostile input: ${RUNS} fuzz inputs per parser (seed ${SEED}), decompression and tar bombs`, { timeout: 600_000 }, async () => {
  const figures = await fuzzCampaign({ runs: RUNS, seed: SEED, log: (l) => console.log(`# ${l}`) });
  assert.deepEqual(figures.flatMap((f) => f.findings.map((x) => `${x.target} ${x.kind}: ${x.message}`)), []);
  for (const f of figures) assert.ok(f.executions > 0, f.target);
});
