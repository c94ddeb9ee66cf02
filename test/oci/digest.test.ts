import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { digestHex, isDigest, parseDigest, sha256Digest, sha256Hex, validateDigest, verifyDigest } from '../../src/oci/digest.ts';
import { chunksOf, collect, rejectsWith, throwsWith } from './tools.ts';

const HELLO = 'sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824'; // sha256("hello")

void test('sha256Hex agrees with sha256sum', () => {
  const data = Buffer.from('some bytes\n\0\xff');
  const expected = execFileSync('sha256sum', { input: data }).toString().split(' ')[0];
  assert.equal(sha256Hex(data), expected);
  assert.equal(sha256Digest('hello'), HELLO);
});

void test('parseDigest accepts sha256:<64 lowercase hex> only', () => {
  assert.deepEqual(parseDigest(HELLO), { algorithm: 'sha256', hex: HELLO.slice(7) });
  assert.equal(validateDigest(HELLO), HELLO);
  assert.equal(digestHex(HELLO), HELLO.slice(7));
  assert.ok(isDigest(HELLO));
  throwsWith(() => parseDigest(HELLO.toUpperCase()), 'EFORMAT', /invalid digest/);
  throwsWith(() => parseDigest('sha256:' + 'A'.repeat(64)), 'EFORMAT');
  throwsWith(() => parseDigest(HELLO.slice(0, -1)), 'EFORMAT');
  throwsWith(() => parseDigest(HELLO + '0'), 'EFORMAT');
  throwsWith(() => parseDigest('sha256:../../../etc/passwd'), 'EFORMAT');
  throwsWith(() => parseDigest('sha256:' + 'a'.repeat(62) + '/x'), 'EFORMAT');
  throwsWith(() => parseDigest('sha256:..'), 'EFORMAT');
  throwsWith(() => parseDigest(HELLO + '\n'), 'EFORMAT');
  throwsWith(() => parseDigest(42), 'EFORMAT');
  throwsWith(() => parseDigest(null), 'EFORMAT');
  throwsWith(() => parseDigest(''), 'EFORMAT');
  throwsWith(() => parseDigest('x'.repeat(100000)), 'EFORMAT', /\.\.\./); // message stays short
  throwsWith(() => parseDigest('sha512:' + 'a'.repeat(128), 'layer 3'), 'EUNSUPPORTED', /layer 3: .*"sha512".*only sha256/);
  throwsWith(() => parseDigest('md5:d41d8cd98f00b204e9800998ecf8427e'), 'EUNSUPPORTED', /md5/);
  assert.ok(!isDigest('sha512:' + 'a'.repeat(128)));
});

void test('verifyDigest passes the stream through and checks it at the end', async () => {
  const data = Buffer.from('hello');
  assert.deepEqual(await collect(verifyDigest(chunksOf(data, 2), HELLO, 'blob')), data);
  assert.deepEqual(await collect(verifyDigest(chunksOf(data, 2), HELLO, 'blob', 5)), data);
  const err = await rejectsWith(collect(verifyDigest(chunksOf(Buffer.from('hellO')), HELLO, 'layer 0')), 'EDIGEST',
    /^layer 0: digest mismatch: expected sha256:2cf2\w+, got sha256:[0-9a-f]{64}$/);
  assert.doesNotMatch(err.message, /\n/);
});

void test('verifyDigest with a size: truncated and too long are clear errors', async () => {
  await rejectsWith(collect(verifyDigest(chunksOf(Buffer.from('hell')), HELLO, 'blob', 5)), 'EDIGEST', /blob: truncated: 4 of 5 bytes/);
  // Too long fails as soon as the size is exceeded: the source is not drained.
  let pulled = 0;
  async function* endless(): AsyncGenerator<Uint8Array> {
    for (;;) { pulled++; yield Buffer.alloc(1000); }
  }
  await rejectsWith(collect(verifyDigest(endless(), HELLO, 'blob', 5000)), 'EDIGEST', /longer than its declared size of 5000/);
  assert.equal(pulled, 6);
});

void test('verifyDigest rejects an invalid expected digest up front', async () => {
  await rejectsWith(collect(verifyDigest(chunksOf(Buffer.from('x')), 'sha256:zz', 'blob')), 'EFORMAT');
});
