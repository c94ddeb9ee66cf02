// Tampering: every damaged file is named by fsck and refused by mount --verify and run --verify.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tamperCampaign } from './tamper.ts';

test('tampering: fsck names each damaged file; mount --verify and run --verify refuse', { timeout: 300_000 }, async () => {
  const t = await tamperCampaign({ seed: Number(process.env.COWSHED_SEED ?? 6), log: (l) => console.log(`# ${l}`) });
  for (const c of t.cases) assert.deepEqual(c.detectedBy, { fsck: true, mountVerify: true, runVerify: true }, `${c.name}: ${c.notes.join('; ')}`);
  assert.equal(t.detected, t.total);
});
