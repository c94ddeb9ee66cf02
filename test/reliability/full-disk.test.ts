// Full disk: imports, a pull and a commit that do not fit a 120 MB store fail clearly and leave it as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fullDiskCampaign } from './full-disk.ts';

test('full disk: out-of-space import, pull and commit fail with one clear line; store intact; space given back', { timeout: 300_000 }, async () => {
  const fig = await fullDiskCampaign({ log: (l) => console.log(`# ${l}`) });
  for (const c of fig.cases) assert.deepEqual({ refusedClearly: c.refusedClearly, intact: c.intact, spaceBack: c.spaceBack }, { refusedClearly: true, intact: true, spaceBack: true }, `${c.name}: ${c.notes.join('; ')}`);
});
