// Ages in `images` and `ps` read as podman's (go-units HumanDuration).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { age } from '../../src/cli/output.ts';

test('age() words a duration as podman does', () => {
  const ago = (s: number) => age(Date.now() - s * 1000);
  assert.equal(ago(0.2), 'Less than a second ago');
  assert.equal(ago(1.5), '1 second ago');
  assert.equal(ago(36), '36 seconds ago');
  assert.equal(ago(65), 'About a minute ago');
  assert.equal(ago(181), '3 minutes ago');
  assert.equal(ago(3700), 'About an hour ago');
  assert.equal(ago(5 * 3600 + 10), '5 hours ago');
  assert.equal(ago(3 * 86400 + 10), '3 days ago');
  assert.equal(ago(20 * 86400), '2 weeks ago');
  assert.equal(ago(100 * 86400), '3 months ago');
  assert.equal(ago(800 * 86400), '2 years ago');
});
