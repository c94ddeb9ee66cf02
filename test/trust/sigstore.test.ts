// Sigstore signing and the policy against Debian's docker-registry on
// loopback: signatures at sha256-<hex>.sig checked by openssl, the key
// decrypted by an independent implementation (python3 hashlib.scrypt +
// PyNaCl), pulls accepted and refused as containers/image documents, and a
// hostile registry (moved tag, replayed or foreign signature, truncated
// signature blob, a cosign v3 bundle) that gets nothing into the store.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { cli, cliOk, oneLineFailure, smallImage, writePolicy, writeRegistriesD } from './helpers.ts';

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('sigstore signatures and the policy', () => {
  let T: string;
  let reg: RunningRegistry;
  let src: string; // the store images are pushed from
  let key: string;
  let pub: string;
  let pw: string;
  let regd: string;
  let noAttach: string;
  let policy: string;
  let signedDigest: string;

  const H = (): string => reg.host;
  const pushArgs = (image: string, ref: string, ...more: string[]): string[] => ['push', '--tls-verify=false', ...more, image, `${H()}/${ref}`];
  const pullIn = (store: string, ref: string, ...more: string[]) => cli(store, ['pull', '--tls-verify=false', ...more, `${H()}/${ref}`]);
  const images = (store: string): unknown[] => JSON.parse(cliOk(store, ['images', '--json'])) as unknown[];
  async function manifest(repo: string, ref: string): Promise<{ status: number; bytes: Buffer }> {
    const r = await fetch(`http://${H()}/v2/${repo}/manifests/${ref}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' } });
    return { status: r.status, bytes: Buffer.from(await r.arrayBuffer()) };
  }
  async function blob(repo: string, digest: string): Promise<Buffer> {
    return Buffer.from(await (await fetch(`http://${H()}/v2/${repo}/blobs/${digest}`)).arrayBuffer());
  }
  async function putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<void> {
    const r = await fetch(`http://${H()}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
    assert.ok(r.status === 201, `PUT manifest ${ref}: ${r.status} ${await r.text()}`);
  }
  async function putBlob(repo: string, bytes: Buffer): Promise<string> {
    const d = sha256(bytes);
    const s = await fetch(`http://${H()}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const loc = new URL(s.headers.get('location')!, `http://${H()}`);
    loc.searchParams.set('digest', d);
    const r = await fetch(loc, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes });
    assert.equal(r.status, 201);
    return d;
  }

  before(async () => {
    T = tempDir('cowshed-trust-');
    reg = await startRegistry(join(T, 'registry'));
    src = join(T, 'src-store');
    smallImage(src, T, 'small:v1', 'a');
    smallImage(src, T, 'small:v2', 'b');
    pw = join(T, 'pw');
    writeFileSync(pw, 'correct horse\n');
    cliOk(src, ['generate-sigstore-key', '--output-prefix', join(T, 'key'), '--passphrase-file', pw]);
    key = join(T, 'key.private');
    pub = join(T, 'key.pub');
    regd = writeRegistriesD(join(T, 'registries.d'), '  use-sigstore-attachments: true\n');
    noAttach = writeRegistriesD(join(T, 'registries-off.d'), '  use-sigstore-attachments: false\n');
    policy = writePolicy(join(T, 'policy.json'), {
      default: [{ type: 'insecureAcceptAnything' }],
      transports: { docker: { [`${reg.host}/signed`]: [{ type: 'sigstoreSigned', keyPath: pub }] } },
    });
  });
  after(async () => {
    await reg?.stop();
    if (T) removeTree(T);
  });

  it('generate-sigstore-key: the private key decrypts with python3 hashlib.scrypt + PyNaCl to the key of the .pub', () => {
    const pem = readFileSync(key, 'utf8');
    assert.match(pem, /^-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n/);
    const out = execFileSync('/usr/bin/python3', ['-c', `
import sys, json, base64, hashlib
import nacl.secret
pem = open(sys.argv[1]).read()
d = json.loads(base64.b64decode(''.join(l for l in pem.splitlines() if not l.startswith('-----'))))
assert d['kdf']['name'] == 'scrypt' and d['cipher']['name'] == 'nacl/secretbox'
p = d['kdf']['params']
assert (p['N'], p['r'], p['p']) == (32768, 8, 1), p
k = hashlib.scrypt(open(sys.argv[2], 'rb').read().split(b'\\n')[0], salt=base64.b64decode(d['kdf']['salt']), n=p['N'], r=p['r'], p=p['p'], maxmem=1 << 28, dklen=32)
sys.stdout.buffer.write(nacl.secret.SecretBox(k).decrypt(base64.b64decode(d['ciphertext']), base64.b64decode(d['cipher']['nonce'])))
`, key, pw]);
    const der = join(T, 'key.der');
    writeFileSync(der, out);
    const derived = execFileSync('openssl', ['pkey', '-inform', 'DER', '-in', der, '-pubout'], { encoding: 'utf8' });
    assert.equal(derived, readFileSync(pub, 'utf8'));
  });

  it('push --sign-by-sigstore-private-key: the signature is at sha256-<hex>.sig and openssl verifies it', async () => {
    const r = cliOk(src, pushArgs('small:v1', 'signed:v1', '--sign-by-sigstore-private-key', key, '--sign-passphrase-file', pw));
    signedDigest = r.trim();
    const m = await manifest('signed', `${signedDigest.replace(':', '-')}.sig`);
    assert.equal(m.status, 200);
    const sigManifest = JSON.parse(m.bytes.toString()) as { mediaType: string; layers: Array<{ mediaType: string; digest: string; annotations: Record<string, string> }> };
    assert.equal(sigManifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(sigManifest.layers.length, 1);
    const layer = sigManifest.layers[0]!;
    assert.equal(layer.mediaType, 'application/vnd.dev.cosign.simplesigning.v1+json');
    const payload = await blob('signed', layer.digest);
    const p = JSON.parse(payload.toString()) as { critical: { identity: { 'docker-reference': string }; image: { 'docker-manifest-digest': string }; type: string }; optional: Record<string, unknown> };
    assert.equal(p.critical.type, 'cosign container image signature');
    assert.equal(p.critical.identity['docker-reference'], `${H()}/signed:v1`);
    assert.equal(p.critical.image['docker-manifest-digest'], signedDigest);
    const composefs = (JSON.parse(cliOk(src, ['inspect', 'small:v1'])) as { composefs: string }).composefs;
    assert.equal(p.optional['dev.cowshed.composefs-digest'], composefs);
    writeFileSync(join(T, 'payload'), payload);
    writeFileSync(join(T, 'sig.der'), Buffer.from(layer.annotations['dev.cosignproject.cosign/signature']!, 'base64'));
    const v = spawnSync('openssl', ['dgst', '-sha256', '-verify', pub, '-signature', join(T, 'sig.der'), join(T, 'payload')], { encoding: 'utf8' });
    assert.equal(v.stdout.trim(), 'Verified OK', v.stderr);
    // A second signature is appended to the same manifest.
    cliOk(src, ['sign', '--tls-verify=false', '--sign-by-sigstore-private-key', key, '--sign-passphrase-file', pw, '--sign-identity', `${H()}/signed:also`, 'small:v1', `${H()}/signed:v1`]);
    const again = JSON.parse((await manifest('signed', `${signedDigest.replace(':', '-')}.sig`)).bytes.toString()) as { layers: unknown[] };
    assert.equal(again.layers.length, 2);
  });

  it('a wrong passphrase fails in one line before anything is pushed', async () => {
    writeFileSync(join(T, 'badpw'), 'wrong\n');
    const line = oneLineFailure(cli(src, pushArgs('small:v2', 'wrongpw:v1', '--sign-by-sigstore-private-key', key, '--sign-passphrase-file', join(T, 'badpw'))));
    assert.match(line, /wrong passphrase/);
    assert.equal((await manifest('wrongpw', 'v1')).status, 404);
  });

  it('pull under sigstoreSigned accepts the signed image, keeps the signature and inspect shows it', () => {
    const store = join(T, 'pull-ok');
    const r = pullIn(store, 'signed:v1', '--signature-policy', policy, '--registries.d', regd);
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(cliOk(store, ['inspect', `${H()}/signed:v1`])) as { signatures?: Array<{ kind: string; identity: string; composefs?: string }>; composefs: string };
    assert.ok(info.signatures && info.signatures.length >= 1, 'inspect lists the signatures');
    assert.equal(info.signatures[0]!.kind, 'sigstore');
    assert.equal(info.signatures[0]!.composefs, info.composefs);
  });

  it('an update whose signature names its composefs digest is pulled as one flat image (not stacked on the stored one), and accepted', () => {
    // small:v1 plus one committed layer, pushed signed (signing flattens it: the signature names the flat digest).
    cliOk(src, ['create', '--name', 'upd', 'small:v1']);
    const root = cliOk(src, ['mount', 'upd']).trim().split('\n').pop()!;
    writeFileSync(join(root, 'etc', 'update'), 'an update\n');
    cliOk(src, ['commit', 'upd', 'small:update']);
    cliOk(src, ['rm', 'upd']);
    cliOk(src, pushArgs('small:update', 'signed:update', '--sign-by-sigstore-private-key', key, '--sign-passphrase-file', pw));
    const store = join(T, 'pull-update');
    assert.equal(pullIn(store, 'signed:v1', '--signature-policy', policy, '--registries.d', regd).status, 0);
    const r = pullIn(store, 'signed:update', '--signature-policy', policy, '--registries.d', regd);
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(cliOk(store, ['inspect', `${H()}/signed:update`])) as { signatures?: Array<{ composefs?: string }>; composefs: string; layers: unknown[] };
    assert.equal(info.layers.length, 2, 'the stored image\'s layer and the new one');
    assert.equal(info.signatures?.[0]?.composefs, info.composefs, 'the image is the signed composefs image');
  });

  it('the global options work too, and mount --verify checks the chain and says there is no fs-verity', () => {
    const store = join(T, 'pull-global');
    cliOk(store, ['--signature-policy', policy, '--registries.d', regd, 'pull', '--tls-verify=false', `${H()}/signed:v1`]);
    const m = cli(store, ['--signature-policy', policy, 'mount', '--verify', `${H()}/signed:v1`]);
    assert.equal(m.status, 0, m.stderr);
    assert.match(m.stderr, /1 signature accepted .*no fs-verity/);
    cliOk(store, ['umount', `${H()}/signed:v1`]);
  });

  it('refuses an unsigned image and a tag moved to other bytes; nothing is stored', () => {
    cliOk(src, pushArgs('small:v2', 'signed:unsigned'));
    const store = join(T, 'pull-refused');
    const line = oneLineFailure(pullIn(store, 'signed:unsigned', '--signature-policy', policy, '--registries.d', regd));
    assert.match(line, /signatures required by .*policy\.json:\d+ .* but none found \(no signature at the sha256-<hex>\.sig tag\)/);
    // The tag moves: signed:moved held the signed bytes, now holds small:v2.
    cliOk(src, pushArgs('small:v1', 'signed:moved'));
    cliOk(src, pushArgs('small:v2', 'signed:moved'));
    assert.match(oneLineFailure(pullIn(store, 'signed:moved', '--signature-policy', policy, '--registries.d', regd)), /none found/);
    assert.deepEqual(images(store), []);
  });

  it('says when sigstore attachments are disabled in registries.d', () => {
    const line = oneLineFailure(pullIn(join(T, 'pull-off'), 'signed:v1', '--signature-policy', policy, '--registries.d', noAttach));
    assert.match(line, /sigstore attachments are disabled for this registry in registries\.d .*use-sigstore-attachments: true/);
  });

  it('refuses an identity that does not match, naming both', () => {
    cliOk(src, pushArgs('small:v2', 'signed:other', '--sign-by-sigstore-private-key', key, '--sign-passphrase-file', pw, '--sign-identity', `${H()}/elsewhere:v9`));
    const line = oneLineFailure(pullIn(join(T, 'pull-id'), 'signed:other', '--signature-policy', policy, '--registries.d', regd));
    assert.match(line, new RegExp(`identity does not match: the signature names ${H()}/elsewhere:v9, the image is ${H()}/signed:other`));
  });

  it('refuses a signature by another key', () => {
    const otherPub = join(T, 'other.pub');
    cliOk(src, ['generate-sigstore-key', '--output-prefix', join(T, 'other'), '--passphrase-file', pw]);
    const p = writePolicy(join(T, 'policy-other.json'), { default: [{ type: 'sigstoreSigned', keyPath: otherPub }] });
    const line = oneLineFailure(pullIn(join(T, 'pull-key'), 'signed:v1', '--signature-policy', p, '--registries.d', regd));
    assert.match(line, /does not verify: .* is not signed by the policy's key/);
  });

  it('hostile registry: a replayed signature for another digest is refused, nothing stored', async () => {
    // signed:moved now holds small:v2 (unsigned); copy small:v1's signature manifest onto its digest.
    const moved = (await manifest('signed', 'moved')).bytes;
    const sig = (await manifest('signed', `${signedDigest.replace(':', '-')}.sig`)).bytes;
    await putManifest('signed', `${sha256(moved).replace(':', '-')}.sig`, sig, 'application/vnd.oci.image.manifest.v1+json');
    const store = join(T, 'pull-replay');
    const line = oneLineFailure(pullIn(store, 'signed:moved', '--signature-policy', policy, '--registries.d', regd));
    assert.match(line, new RegExp(`is for another image: it signs manifest ${signedDigest}, not this image's ${sha256(moved)}`));
    assert.deepEqual(images(store), []);
  });

  it('hostile registry: a signature replayed from another repository (same digest) is refused by its identity, nothing stored', async () => {
    // evil/app holds the very manifest signed for signed:v1, with that signature copied beside it.
    cliOk(src, pushArgs('small:v1', 'evil/app:v1'));
    const tag = `${signedDigest.replace(':', '-')}.sig`;
    const sig = (await manifest('signed', tag)).bytes;
    const parsed = JSON.parse(sig.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
    for (const d of [parsed.config.digest, ...parsed.layers.map((l) => l.digest)]) await putBlob('evil/app', await blob('signed', d));
    await putManifest('evil/app', tag, sig, 'application/vnd.oci.image.manifest.v1+json');
    const p = writePolicy(join(T, 'policy-evil.json'), { default: [{ type: 'sigstoreSigned', keyPath: pub }] });
    const store = join(T, 'pull-evil');
    const line = oneLineFailure(pullIn(store, 'evil/app:v1', '--signature-policy', p, '--registries.d', regd));
    assert.match(line, new RegExp(`identity does not match: the signature names ${H()}/signed:(v1|also), the image is ${H()}/evil/app:v1`));
    assert.deepEqual(images(store), []);
  });

  it('hostile registry: a truncated signature blob is refused, nothing stored', async () => {
    // A fresh image whose signature manifest names the signature blob with its full size, but the blob holds half of it.
    cliOk(src, pushArgs('small:v2', 'trunc:v1', '--sign-by-sigstore-private-key', key, '--sign-passphrase-file', pw));
    const target = sha256((await manifest('trunc', 'v1')).bytes);
    const tag = `${target.replace(':', '-')}.sig`;
    const sigManifest = JSON.parse((await manifest('trunc', tag)).bytes.toString()) as { layers: Array<{ digest: string; size: number }> };
    const payload = await blob('trunc', sigManifest.layers[0]!.digest);
    const half = payload.subarray(0, payload.length >> 1);
    sigManifest.layers[0]!.digest = await putBlob('trunc', half);
    sigManifest.layers[0]!.size = payload.length;
    await putManifest('trunc', tag, Buffer.from(JSON.stringify(sigManifest)), 'application/vnd.oci.image.manifest.v1+json');
    const p = writePolicy(join(T, 'policy-trunc.json'), { default: [{ type: 'sigstoreSigned', keyPath: pub }] });
    const store = join(T, 'pull-trunc');
    const line = oneLineFailure(pullIn(store, 'trunc:v1', '--signature-policy', p, '--registries.d', regd));
    assert.match(line, /trunc:sha256-[0-9a-f]{64}\.sig signature 1/);
    assert.deepEqual(images(store), []);
  });

  it('hostile registry: a signature (made with openssl) naming another composefs digest: refused at import, nothing stored', async () => {
    cliOk(src, pushArgs('small:v2', 'cfs:v1'));
    const target = sha256((await manifest('cfs', 'v1')).bytes);
    const payload = Buffer.from(JSON.stringify({
      critical: { identity: { 'docker-reference': `${H()}/cfs:v1` }, image: { 'docker-manifest-digest': target }, type: 'cosign container image signature' },
      optional: { 'dev.cowshed.composefs-digest': 'ab'.repeat(32) },
    }));
    writeFileSync(join(T, 'cfs-payload'), payload);
    // key.der: the private key python decrypted in the first test.
    execFileSync('openssl', ['pkey', '-inform', 'DER', '-in', join(T, 'key.der'), '-out', join(T, 'key.pem')]);
    const sig = execFileSync('openssl', ['dgst', '-sha256', '-sign', join(T, 'key.pem'), join(T, 'cfs-payload')]);
    const layer = await putBlob('cfs', payload);
    const config = Buffer.from('{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}');
    const cd = await putBlob('cfs', config);
    await putManifest('cfs', `${target.replace(':', '-')}.sig`, Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: config.length },
      layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest: layer, size: payload.length, annotations: { 'dev.cosignproject.cosign/signature': sig.toString('base64') } }],
    })), 'application/vnd.oci.image.manifest.v1+json');
    const p = writePolicy(join(T, 'policy-cfs.json'), { default: [{ type: 'sigstoreSigned', keyPath: pub }] });
    const store = join(T, 'pull-cfs');
    const line = oneLineFailure(pullIn(store, 'cfs:v1', '-q', '--signature-policy', p, '--registries.d', regd));
    assert.match(line, new RegExp(`names composefs image ${'ab'.repeat(32)}, but the layers build [0-9a-f]{64}: refused, nothing stored`));
    assert.deepEqual(images(store), []);
  });

  it('a cosign v3 bundle (OCI referrer) is named as a format cowshed does not read', async () => {
    cliOk(src, pushArgs('small:v2', 'bundled:v1'));
    const target = (await manifest('bundled', 'v1')).bytes;
    const empty = await putBlob('bundled', Buffer.from('{}'));
    const bundle = await putBlob('bundled', Buffer.from('{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'));
    const referrer = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: empty, size: 2 },
      layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json', digest: bundle, size: 61 }],
      subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(target), size: target.length },
    }));
    await putManifest('bundled', sha256(referrer), referrer, 'application/vnd.oci.image.manifest.v1+json');
    const index = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(referrer), size: referrer.length, artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }],
    }));
    await putManifest('bundled', sha256(target).replace(':', '-'), index, 'application/vnd.oci.image.index.v1+json');
    const p = writePolicy(join(T, 'policy-bundled.json'), { default: [{ type: 'sigstoreSigned', keyPath: pub }] });
    const line = oneLineFailure(pullIn(join(T, 'pull-bundle'), 'bundled:v1', '--signature-policy', p, '--registries.d', regd));
    assert.match(line, /signed only in a format cowshed does not read: application\/vnd\.dev\.sigstore\.bundle\.v0\.3\+json/);
  });

  it('default reject with an insecureAcceptAnything scope, as containers/image documents', () => {
    cliOk(src, pushArgs('small:v2', 'open/app:v1'));
    const p = writePolicy(join(T, 'policy-reject.json'), {
      default: [{ type: 'reject' }],
      transports: { docker: { [`${H()}/open`]: [{ type: 'insecureAcceptAnything' }] } },
    });
    const store = join(T, 'pull-reject');
    assert.match(oneLineFailure(pullIn(store, 'signed:v1', '--signature-policy', p)), /rejected by the signature policy .*policy-reject\.json:\d+ \(default: reject\)/);
    assert.equal(pullIn(store, 'open/app:v1', '--signature-policy', p).status, 0, 'the namespace scope accepts anything');
    // The most specific scope wins: a repository scope inside the open namespace rejects.
    const p2 = writePolicy(join(T, 'policy-specific.json'), {
      default: [{ type: 'insecureAcceptAnything' }],
      transports: { docker: { [`${H()}/open`]: [{ type: 'insecureAcceptAnything' }], [`${H()}/open/app:v1`]: [{ type: 'reject' }] } },
    });
    assert.match(oneLineFailure(pullIn(join(T, 'pull-specific'), 'open/app:v1', '--signature-policy', p2)), /rejected by the signature policy .*policy-specific\.json:\d+ \(docker:.*open\/app:v1: reject\)/);
  });

  it('a policy that is missing or invalid is named with its file and line', () => {
    assert.match(oneLineFailure(pullIn(join(T, 'pull-nopolicy'), 'signed:v1', '--signature-policy', join(T, 'absent.json'))), /signature policy .*absent\.json not found/);
    writeFileSync(join(T, 'bad.json'), '{\n  "default": [\n    {"type": "sigstoreSigned", "keyPth": "/x"}\n  ]\n}\n');
    assert.match(oneLineFailure(pullIn(join(T, 'pull-badpolicy'), 'signed:v1', '--signature-policy', join(T, 'bad.json'))), /bad\.json:3: invalid policy: unknown field "keyPth"/);
    writeFileSync(join(T, 'bad2.json'), '{\n  "default": [\n    {"type": "reject"},\n  ]\n}\n');
    assert.match(oneLineFailure(pullIn(join(T, 'pull-badjson'), 'signed:v1', '--signature-policy', join(T, 'bad2.json'))), /bad2\.json:4: invalid JSON/);
  });

  it('image trust set and show edit and read the policy', () => {
    const p = join(T, 'trust-policy.json');
    writePolicy(p, { default: [{ type: 'insecureAcceptAnything' }] });
    cliOk(src, ['image', 'trust', 'set', '--signature-policy', p, '-t', 'sigstoreSigned', '-f', pub, `${H()}/signed`]);
    cliOk(src, ['image', 'trust', 'set', '--signature-policy', p, '-t', 'reject', 'default']);
    const rows = JSON.parse(cliOk(src, ['image', 'trust', 'show', '--signature-policy', p, '--json'])) as Array<{ scope: string; type: string; keys: string }>;
    assert.deepEqual(rows.map((r) => [r.scope, r.type]), [['default', 'reject'], [`docker:${H()}/signed`, 'sigstoreSigned']]);
    assert.equal(rows[1]!.keys, pub);
    // The policy written works for a pull.
    assert.equal(pullIn(join(T, 'pull-trustset'), 'signed:v1', '--signature-policy', p, '--registries.d', regd).status, 0);
  });
});
