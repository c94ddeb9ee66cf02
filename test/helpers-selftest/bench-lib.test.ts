// The benchmark harness: alternation, medians, ratios, and rows that say
// "skipped" or "failed" instead of the whole run crashing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Contender, formatTable, measure, median } from '../../bench/lib.ts';

void test('median of odd and even counts', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

void test('measure alternates contenders, keeps going past failures, and reports skips', async () => {
  const order: string[] = [];
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const calls = { prepare: 0, cleanup: 0, before: 0, after: 0 };
  const contenders: Contender[] = [
    {
      name: 'cow', role: 'cowshed',
      before: async () => { calls.before++; },
      prepare: async () => { calls.prepare++; },
      run: async () => { order.push('cow'); await sleep(20); },
      cleanup: async () => { calls.cleanup++; },
      after: async () => { calls.after++; },
    },
    { name: 'anchor', role: 'anchor', run: async () => { order.push('anchor'); await sleep(40); } },
    { name: 'broken', role: 'anchor', run: async () => { order.push('broken'); throw new Error('boom\nstack'); } },
    { name: 'absent', role: 'anchor', skip: () => 'tool not installed', run: async () => { order.push('absent'); } },
  ];
  const r = await measure('selftest', contenders, { runs: 3, warmup: 1, bytes: 1e6 });
  // Iteration k starts with contender k: cow, anchor, broken (fails once, then never again).
  assert.deepEqual(order.slice(0, 3), ['cow', 'anchor', 'broken']);
  assert.equal(order.filter((o) => o === 'broken').length, 1);
  assert.equal(order.filter((o) => o === 'cow').length, 4);
  assert.ok(!order.includes('absent'));
  assert.equal(order[3], 'anchor'); // second iteration starts one further on
  assert.deepEqual(calls, { prepare: 4, cleanup: 4, before: 1, after: 1 });
  const [cow, anchor, broken, absent] = r.contenders;
  assert.equal(cow!.timesMs.length, 3);
  assert.equal(cow!.status, 'ok');
  assert.ok(cow!.medianMs! >= 15 && anchor!.medianMs! >= 35);
  assert.equal(broken!.status, 'failed: boom');
  assert.equal(absent!.status, 'skipped: tool not installed');
  const table = formatTable([r]);
  assert.match(table, /\| selftest \| \*\*cow\*\* \| \d+ ms \| \d+ ms \| 3 \| \d+ \| {2}\| ok \|/);
  assert.match(table, /\| selftest \| anchor \| \d+ ms \| \d+ ms \| 3 \| \d+ \| 0\.\d\d × \| ok \|/);
  assert.match(table, /\| broken \|.*\| failed: boom \|/);
  assert.match(table, /\| absent \|.*\| skipped: tool not installed \|/);
});
