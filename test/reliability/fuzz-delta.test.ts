// A seeded slice of fuzzing of the delta index and pack reader (fuzz-delta.ts),
// in a child process with a time limit: a hang is a finding too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const RUNS = Number(process.env.COWSHED_FUZZ_RUNS ?? 1000);
const SEED = Number(process.env.COWSHED_SEED ?? 13);

test(`delta index and pack reader: ${RUNS} fuzzed inputs (seed ${SEED}) give a result or a typed error`, () => {
  const r = spawnSync(process.execPath, [join(HERE, 'fuzz-delta.ts'), String(SEED), String(RUNS)], { encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.signal, null, `killed (${r.signal}): a hang?`);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { executions: number; accepted: number; refused: Record<string, number>; findings: unknown[] };
  assert.deepEqual(out.findings, []);
  assert.equal(out.executions, RUNS);
  // The fuzzing gets past the first check: some inputs are accepted, some refused.
  assert.ok(out.accepted > 0 && Object.values(out.refused).reduce((a, b) => a + b, 0) > 0, JSON.stringify(out));
});
