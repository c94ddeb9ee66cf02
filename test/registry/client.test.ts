// References, credentials from auth files, and the URL scheme rule.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, removeTree } from '../helpers/cli.ts';
import { imageNameFor, lookupCredentials, parseRegistryRef, RegistryClient } from '../../src/registry/client.ts';
import { normalizeName } from '../../src/store/names.ts';

describe('registry references', () => {
  test('host, port, repository, tag and digest', () => {
    const d = `sha256:${'ab'.repeat(32)}`;
    assert.deepEqual(parseRegistryRef('127.0.0.1:5000/repo/name:tag'),
      { registry: '127.0.0.1:5000', apiHost: '127.0.0.1:5000', repository: 'repo/name', tag: 'tag', digest: undefined });
    assert.deepEqual(parseRegistryRef(`quay.io/org/app@${d}`),
      { registry: 'quay.io', apiHost: 'quay.io', repository: 'org/app', tag: undefined, digest: d });
    assert.deepEqual(parseRegistryRef('docker.io/library/debian'),
      { registry: 'docker.io', apiHost: 'registry-1.docker.io', repository: 'library/debian', tag: 'latest', digest: undefined });
    assert.equal(parseRegistryRef('debian:12').repository, 'library/debian');
    assert.equal(parseRegistryRef('user/app').registry, 'docker.io');
    assert.equal(parseRegistryRef('localhost/app').registry, 'localhost');
    assert.equal(parseRegistryRef('docker://localhost:5000/app:v1').tag, 'v1');
  });

  test('names given to pulled images are valid store names', () => {
    for (const ref of ['127.0.0.1:5000/app:v1', 'debian', `ghcr.io/o/a@sha256:${'0'.repeat(64)}`]) {
      const name = imageNameFor(parseRegistryRef(ref));
      assert.equal(normalizeName(name), name);
    }
    assert.equal(imageNameFor(parseRegistryRef('127.0.0.1:5000/app:v1')), '127.0.0.1:5000/app:v1');
    assert.equal(imageNameFor(parseRegistryRef('debian')), 'docker.io/library/debian:latest');
  });

  test('malformed references are EINVAL', () => {
    for (const bad of ['', 'UPPER/case', 'host:5000/app@sha256:short', 'a/b:bad tag', 'app:', 'a//b']) {
      assert.throws(() => parseRegistryRef(bad), (e: { code?: string }) => e.code === 'EINVAL', bad);
    }
  });
});

describe('credentials', () => {
  let work: string;
  const saved = { ...process.env };
  before(() => {
    work = tempDir('cowshed-creds-');
    mkdirSync(join(work, 'run', 'containers'), { recursive: true });
    mkdirSync(join(work, 'home', '.docker'), { recursive: true });
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    writeFileSync(join(work, 'run', 'containers', 'auth.json'), JSON.stringify({ auths: { 'reg.example:5000': { auth: b64('pod:man') }, 'reg.example:5000/team': { auth: b64('team:pw') } } }));
    writeFileSync(join(work, 'home', '.docker', 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64('dock:er:colon') }, 'other.example': { auth: b64('o:p') } } }));
    delete process.env.REGISTRY_AUTH_FILE;
    delete process.env.DOCKER_CONFIG;
    process.env.XDG_RUNTIME_DIR = join(work, 'run');
    process.env.HOME = join(work, 'home');
  });
  after(() => {
    for (const k of ['XDG_RUNTIME_DIR', 'HOME', 'REGISTRY_AUTH_FILE']) {
      if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
    }
    removeTree(work);
  });

  test('from the containers auth file, then docker config; namespaced entries win', () => {
    assert.deepEqual(lookupCredentials('reg.example:5000', 'app'), { username: 'pod', password: 'man' });
    assert.deepEqual(lookupCredentials('reg.example:5000', 'team/app'), { username: 'team', password: 'pw' });
    assert.deepEqual(lookupCredentials('docker.io', 'library/debian'), { username: 'dock', password: 'er:colon' });
    assert.deepEqual(lookupCredentials('other.example'), { username: 'o', password: 'p' });
    assert.equal(lookupCredentials('nowhere.example'), undefined);
  });

  test('$REGISTRY_AUTH_FILE replaces the containers auth file', () => {
    const f = join(work, 'custom.json');
    writeFileSync(f, JSON.stringify({ auths: { 'reg.example:5000': { auth: Buffer.from('x:y').toString('base64') } } }));
    process.env.REGISTRY_AUTH_FILE = f;
    try {
      assert.deepEqual(lookupCredentials('reg.example:5000'), { username: 'x', password: 'y' });
    } finally {
      delete process.env.REGISTRY_AUTH_FILE;
    }
  });

  test('HTTPS first; verification skipped (and plain HTTP allowed) only when TLS verification is off', () => {
    assert.equal(new RegistryClient('r.example', 'r.example').base, 'https://r.example');
    assert.equal(new RegistryClient('r.example', 'r.example').insecure, false);
    assert.equal(new RegistryClient('r.example', 'r.example', { tlsVerify: true }).insecure, false);
    const off = new RegistryClient('127.0.0.1:5000', '127.0.0.1:5000', { tlsVerify: false });
    assert.equal(off.base, 'https://127.0.0.1:5000');
    assert.equal(off.insecure, true);
  });
});

describe('hostile registry answers', () => {
  // Found by the fuzz campaign: a bearer realm that is not a URL crashed the pull with a TypeError.
  test('a token realm that is not an http(s) URL is a one-line EFORMAT, not a crash', async () => {
    const { startHostileRegistry } = await import('../reliability/hostile-registry.ts');
    const { pullImage } = await import('../../src/registry/pull.ts');
    const { Store } = await import('../../src/store/store.ts');
    const reg = await startHostileRegistry();
    const dir = tempDir();
    const store = await Store.open(join(dir, 'store'));
    try {
      const challenge = (realm: string) => ({ status: 401, challenge: -1, contentType: 0, digestHeader: 'none' as const, length: 'right' as const, body: 'empty' as const, flips: [], location: 0, contentRange: 0, wwwAuthenticate: realm });
      for (const realm of ['Bearer realm="file:///etc/passwd"', 'Bearer realm="http://[::1"', 'Bearer realm="javascript:alert(1)"']) {
        reg.script = { ping: challenge(realm), manifest: challenge(realm) };
        await assert.rejects(pullImage(store, `127.0.0.1:${reg.port}/fuzz/img:v1`, { tlsVerify: false, client: { maxAttempts: 1 } }),
          (e: { code?: string; message?: string }) => e.code === 'EFORMAT' && /token realm .* is not (an http\(s\) URL|a URL)/.test(e.message ?? '') && !e.message!.includes('\n'), realm);
      }
    } finally {
      store.close();
      await reg.close();
      removeTree(dir);
    }
  });
});
