// The policy and key formats on their own: scopes (most specific wins, *.domain
// wildcards), every signedIdentity rule as containers/image's
// policy_reference_match.go defines it, registries.d merging, and cosign
// keys written by an independent implementation (python3 + PyNaCl) with the
// older PEM label and the larger scrypt parameters.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { identityMatches, parsePolicy, requirementsFor, type SignedIdentity } from '../../src/trust/policy.ts';
import { parseDockerRef } from '../../src/trust/reference.ts';
import { loadRegistriesD, lookasideBase, lookasideUrl, useSigstoreAttachments } from '../../src/trust/registries-d.ts';
import { decryptPrivateKey, publicKeyPem } from '../../src/trust/keys.ts';
import { isCowshedError } from '../../src/util/errors.ts';

const reject = [{ type: 'reject' }];
const accept = [{ type: 'insecureAcceptAnything' }];

describe('containers-policy.json', () => {
  it('picks the most specific scope: image, repository, namespaces, host, *.domain, transport default, default', () => {
    const p = parsePolicy(JSON.stringify({
      default: reject,
      transports: {
        docker: {
          '': accept,
          'reg.example.com': reject,
          'reg.example.com/ns': accept,
          'reg.example.com/ns/app': reject,
          'reg.example.com/ns/app:v1': accept,
          '*.example.com': reject,
          '*.other.org': accept,
        },
      },
    }), 'p.json');
    const scope = (r: string): string => requirementsFor(p, parseDockerRef(r)).scope;
    assert.equal(scope('reg.example.com/ns/app:v1'), 'docker:reg.example.com/ns/app:v1');
    assert.equal(scope('reg.example.com/ns/app:v2'), 'docker:reg.example.com/ns/app');
    assert.equal(scope('reg.example.com/ns/other:v1'), 'docker:reg.example.com/ns');
    assert.equal(scope('reg.example.com/x:v1'), 'docker:reg.example.com');
    assert.equal(scope('mirror.example.com/x:v1'), 'docker:*.example.com');
    assert.equal(scope('a.b.other.org:5000/x:v1'), 'docker:*.other.org');
    assert.equal(scope('quay.io/x:v1'), 'docker: (transport default)');
    assert.equal(requirementsFor(parsePolicy(JSON.stringify({ default: reject }), 'p.json'), parseDockerRef('quay.io/x:v1')).scope, 'default');
  });

  it('signedIdentity rules match as containers/image does', () => {
    const m = (rule: SignedIdentity, image: string, signed: string): boolean => identityMatches(rule, parseDockerRef(image), signed);
    const d = `sha256:${'a'.repeat(64)}`;
    assert.ok(m({ type: 'matchRepoDigestOrExact' }, 'r.io/a/b:v1', 'r.io/a/b:v1'));
    assert.ok(!m({ type: 'matchRepoDigestOrExact' }, 'r.io/a/b:v1', 'r.io/a/b:v2'));
    assert.ok(m({ type: 'matchRepoDigestOrExact' }, `r.io/a/b@${d}`, 'r.io/a/b:any'));
    assert.ok(!m({ type: 'matchRepoDigestOrExact' }, `r.io/a/b@${d}`, 'r.io/a/c:any'));
    assert.ok(!m({ type: 'matchRepoDigestOrExact' }, 'r.io/a/b:v1', 'r.io/a/b'), 'a name alone never matches');
    assert.ok(m({ type: 'matchExact' }, 'r.io/a/b:v1', 'r.io/a/b:v1'));
    assert.ok(!m({ type: 'matchExact' }, `r.io/a/b@${d}`, 'r.io/a/b:v1'));
    assert.ok(m({ type: 'matchRepository' }, 'r.io/a/b:v1', 'r.io/a/b:v7'));
    assert.ok(m({ type: 'matchRepository' }, 'docker.io/library/busybox:1', 'busybox'));
    assert.ok(m({ type: 'exactReference', dockerReference: 'q.io/x:1' }, 'r.io/a/b:v1', 'q.io/x:1'));
    assert.ok(!m({ type: 'exactReference', dockerReference: 'q.io/x:1' }, 'r.io/a/b:v1', 'q.io/x:2'));
    assert.ok(m({ type: 'exactRepository', dockerRepository: 'q.io/x' }, 'r.io/a/b:v1', 'q.io/x:9'));
    const remap: SignedIdentity = { type: 'remapIdentity', prefix: 'mirror.io/ns', signedPrefix: 'origin.io/team' };
    assert.ok(m(remap, 'mirror.io/ns/app:v1', 'origin.io/team/app:v1'));
    assert.ok(!m(remap, 'mirror.io/ns/app:v1', 'mirror.io/ns/app:v1'));
    assert.ok(!m(remap, 'mirror.io/nsx/app:v1', 'origin.io/teamx/app:v1'), 'the prefix matches at a / boundary only');
    assert.ok(m(remap, 'other.io/app:v1', 'other.io/app:v1'), 'outside the prefix: matchRepoDigestOrExact');
  });

  it('refuses what containers/image refuses, naming the line', () => {
    const bad = (text: string, re: RegExp): void => {
      assert.throws(() => parsePolicy(text, 'p.json'), (e) => isCowshedError(e) && e.code === 'EFORMAT' && re.test(e.message));
    };
    bad('{"transports": {}}', /p\.json:1: invalid policy: "default" is missing/);
    bad('{"default": []}', /has no requirements/);
    bad('{"default": [{"type": "reject"}], "default": [{"type": "reject"}]}', /duplicate key "default"/);
    bad('{\n"default": [\n{"type": "reject", "x": 1}]}', /p\.json:3: invalid policy: unknown field "x" in reject/);
    bad('{"default": [{"type": "sigstoreSigned", "keyPath": "/a", "keyData": "AA=="}]}', /exactly one of keyPath, keyPaths, keyData, keyDatas/);
    bad('{"default": [{"type": "signedBy", "keyType": "X509", "keyPath": "/a"}]}', /keyType "X509" is not supported/);
    bad('{"default": [{"type": "sigstoreSigned", "fulcio": {}}]}', /Fulcio, PKI, Rekor.* not supported/);
    bad('{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/a", "signedIdentity": {"type": "exactReference", "dockerReference": "q.io/x"}}]}', /not a reference with a tag or digest/);
    bad('{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"UPPER/Case": [{"type": "reject"}]}}}', /invalid docker scope/);
  });
});

describe('registries.d', () => {
  it('merges files, the most specific scope wins, and lookaside paths are <base>/<repo path>@sha256=<hex>/signature-N', () => {
    const T = tempDir('cowshed-regd-');
    try {
      mkdirSync(join(T, 'd'));
      writeFileSync(join(T, 'd', 'a.yaml'), 'default-docker:\n  lookaside: file:///var/sigs\n  use-sigstore-attachments: false\n');
      writeFileSync(join(T, 'd', 'b.yaml'), 'docker:\n  reg.example.com/ns:\n    sigstore: https://sigs.example.com/x\n    sigstore-staging: file:///stage\n    use-sigstore-attachments: true\n');
      writeFileSync(join(T, 'd', 'ignored.conf'), 'not: [yaml');
      const c = loadRegistriesD(join(T, 'd'));
      const app = parseDockerRef('reg.example.com/ns/app:v1');
      const other = parseDockerRef('quay.io/x/y:v1');
      assert.equal(useSigstoreAttachments(c, app), true);
      assert.equal(useSigstoreAttachments(c, other), false);
      assert.equal(lookasideBase(c, app, false).toString(), 'https://sigs.example.com/x/ns/app');
      assert.equal(lookasideBase(c, app, true).toString(), 'file:///stage/ns/app');
      assert.equal(lookasideUrl(lookasideBase(c, other, false), `sha256:${'b'.repeat(64)}`, 2).toString(), `file:///var/sigs/x/y@sha256=${'b'.repeat(64)}/signature-2`);
      writeFileSync(join(T, 'd', 'c.yaml'), 'default-docker:\n  lookaside: file:///again\n');
      assert.throws(() => loadRegistriesD(join(T, 'd')), /"default-docker" defined both in .*a\.yaml and .*c\.yaml/);
      writeFileSync(join(T, 'd', 'c.yaml'), 'docker:\n  x: [1\n');
      assert.throws(() => loadRegistriesD(join(T, 'd')), /c\.yaml:\d+: invalid YAML/);
    } finally {
      removeTree(T);
    }
  });
});

describe('cosign keys written by another implementation', () => {
  for (const [label, n] of [['ENCRYPTED COSIGN PRIVATE KEY', 131072], ['ENCRYPTED SIGSTORE PRIVATE KEY', 65536], ['ENCRYPTED SIGSTORE PRIVATE KEY', 16384]] as const) {
    it(`${label}, scrypt N=${n}: ${n === 16384 ? 'refused (not a parameter set cosign writes)' : 'decrypts to the same key'}`, () => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const der = privateKey.export({ format: 'der', type: 'pkcs8' });
      const pem = execFileSync('/usr/bin/python3', ['-c', `
import sys, json, base64, hashlib, os
import nacl.secret, nacl.utils
der = sys.stdin.buffer.read()
salt = os.urandom(32); nonce = nacl.utils.random(24)
n = int(sys.argv[2])
key = hashlib.scrypt(b'pass', salt=salt, n=n, r=8, p=1, maxmem=1 << 28, dklen=32)
ct = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
body = json.dumps({'kdf': {'name': 'scrypt', 'params': {'N': n, 'r': 8, 'p': 1}, 'salt': base64.b64encode(salt).decode()},
  'cipher': {'name': 'nacl/secretbox', 'nonce': base64.b64encode(nonce).decode()}, 'ciphertext': base64.b64encode(ct).decode()}).encode()
b64 = base64.b64encode(body).decode()
print('-----BEGIN %s-----' % sys.argv[1]); print('\\n'.join(b64[i:i+64] for i in range(0, len(b64), 64))); print('-----END %s-----' % sys.argv[1])
`, label, String(n)], { input: der, encoding: 'utf8' });
      if (n === 16384) {
        assert.throws(() => decryptPrivateKey(pem, Buffer.from('pass'), 'k'), /unsupported scrypt parameters/);
        return;
      }
      assert.equal(publicKeyPem(decryptPrivateKey(pem, Buffer.from('pass'), 'k')), publicKeyPem(privateKey));
      assert.throws(() => decryptPrivateKey(pem, Buffer.from('wrong'), 'k'), (e) => isCowshedError(e) && /k: wrong passphrase/.test(e.message));
    });
  }
});
