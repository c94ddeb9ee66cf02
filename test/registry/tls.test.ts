// TLS like podman against real docker-registry instances on loopback: a
// CA made here with openssl, found through certs.d by host:port (in
// /etc/containers/certs.d, $HOME/.config/containers/certs.d or
// --cert-dir); --tls-verify=false skipping verification on HTTPS and
// falling back to plain HTTP; a second instance requiring client
// certificates; expired and mismatched certificates; plain HTTP on the
// HTTPS side; broken certs.d. Every refusal is one line naming the host or
// file and what to do, and leaves the store without images.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, removeTree } from '../helpers/cli.ts';
import { cowshedAsync, makeCa, makeCert, startRegistry, tinyLayout, type RunningRegistry, type TestCa } from './servers.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const missing = ['docker-registry', 'skopeo', 'openssl', 'htpasswd'].filter((t) => !have(t));

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.doesNotMatch(lines[0], /\bat .*\.ts:\d+/, 'a stack trace');
  return lines[0];
}

describe('registry TLS: CAs, certs.d, client certificates', { skip: missing.length ? `missing ${missing.join(', ')}` : false }, () => {
  let work: string;
  let home: string;
  let ca: TestCa;
  let otherCa: TestCa;
  let layout: string;
  const regs: RunningRegistry[] = [];
  let tlsReg: RunningRegistry; // HTTPS, certificate of ca
  let mtlsReg: RunningRegistry; // HTTPS, client certificate of ca required
  let expiredReg: RunningRegistry;
  let wrongNameReg: RunningRegistry;
  let plainReg: RunningRegistry; // plain HTTP
  let env: Record<string, string>;
  let client: { cert: string; key: string };
  let stores = 0;
  const etcDirs: string[] = [];

  const newStore = (): string => join(work, `store-${stores++}`);
  const run = (store: string, args: string[], extra: Record<string, string> = {}) => cowshedAsync(store, args, { ...env, ...extra });
  const images = async (store: string): Promise<unknown[]> => {
    const r = await run(store, ['images', '--json']);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as unknown[];
  };
  const homeCertsD = (reg: RunningRegistry): string => join(home, '.config', 'containers', 'certs.d', reg.host);
  /** A certs.d directory for reg under $HOME holding the given files (name → source path or text). */
  function certsD(reg: RunningRegistry, files: Record<string, string>): string {
    const d = homeCertsD(reg);
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
    for (const [name, src] of Object.entries(files)) {
      if (existsSync(src)) copyFileSync(src, join(d, name)); else writeFileSync(join(d, name), src);
    }
    return d;
  }
  async function refused(reg: RunningRegistry, args: string[], pattern: RegExp): Promise<string> {
    const store = newStore();
    const r = await run(store, args);
    assert.notEqual(r.status, 0, `expected a refusal: ${r.stdout}`);
    const line = oneLine(r.stderr);
    assert.match(line, pattern);
    assert.ok(line.includes(reg.host) || line.includes('certs.d') || line.includes(work), `names the host or file: ${line}`);
    assert.deepEqual(await images(store), [], 'nothing in the store');
    return line;
  }
  async function pulled(args: string[]): Promise<string> {
    const store = newStore();
    const r = await run(store, args);
    assert.equal(r.status, 0, r.stderr);
    const imgs = await images(store) as Array<{ names: string[] }>;
    assert.equal(imgs.length, 1);
    return imgs[0].names[0];
  }

  before(async () => {
    work = tempDir('cowshed-tls-');
    home = join(work, 'home');
    mkdirSync(home);
    const emptyConf = join(work, 'registries.conf');
    writeFileSync(emptyConf, '');
    env = { HOME: home, REGISTRY_AUTH_FILE: join(work, 'auth.json'), XDG_RUNTIME_DIR: join(work, 'run'), CONTAINERS_REGISTRIES_CONF: emptyConf };
    ca = makeCa(join(work, 'ca'));
    otherCa = makeCa(join(work, 'other-ca'), 'other');
    const server = makeCert(ca, join(work, 'certs'), 'server');
    const expired = makeCert(ca, join(work, 'certs'), 'expired', { days: -1 });
    const wrongName = makeCert(ca, join(work, 'certs'), 'wrong-name', { san: 'DNS:registry.invalid' });
    client = makeCert(ca, join(work, 'certs'), 'client', { client: true });
    layout = await tinyLayout(join(work, 'image'), 'tls');

    tlsReg = await startRegistry(join(work, 'r-tls'), {}, { tls: { certificate: server.cert, key: server.key } });
    regs.push(tlsReg);
    mtlsReg = await startRegistry(join(work, 'r-mtls'), {}, { tls: { certificate: server.cert, key: server.key, clientCas: [ca.cert] } });
    regs.push(mtlsReg);
    expiredReg = await startRegistry(join(work, 'r-expired'), {}, { tls: { certificate: expired.cert, key: expired.key } });
    regs.push(expiredReg);
    wrongNameReg = await startRegistry(join(work, 'r-wrongname'), {}, { tls: { certificate: wrongName.cert, key: wrongName.key } });
    regs.push(wrongNameReg);
    plainReg = await startRegistry(join(work, 'r-plain'));
    regs.push(plainReg);

    // Seeded by skopeo (the judge), with its own TLS settings.
    const skopeoCerts = join(work, 'skopeo-certs');
    mkdirSync(skopeoCerts);
    copyFileSync(ca.cert, join(skopeoCerts, 'ca.crt'));
    copyFileSync(client.cert, join(skopeoCerts, 'client.cert'));
    copyFileSync(client.key, join(skopeoCerts, 'client.key'));
    for (const reg of regs) {
      const tlsArgs = reg === plainReg ? ['--dest-tls-verify=false'] : reg === tlsReg || reg === mtlsReg ? ['--dest-cert-dir', skopeoCerts] : ['--dest-tls-verify=false'];
      execFileSync('skopeo', ['copy', '-q', ...tlsArgs, `oci:${layout}:v1`, `docker://${reg.host}/tiny:v1`], { stdio: ['ignore', 'ignore', 'pipe'] });
    }
  });

  after(async () => {
    for (const r of regs) await r.stop();
    // The host:port directory made here; certs.d itself only if made here and still empty.
    for (const d of etcDirs.reverse()) { try { if (d.endsWith('certs.d')) rmdirSync(d); else rmSync(d, { recursive: true, force: true }); } catch { /* not empty: someone else's */ } }
    if (work) removeTree(work);
  });

  test('a private CA is refused in one line naming the host and the fix; nothing is stored', async () => {
    const line = await refused(tlsReg, ['pull', `${tlsReg.host}/tiny:v1`], /not signed by a trusted CA/);
    assert.ok(line.includes(`/etc/containers/certs.d/${tlsReg.host}/ca.crt`), line);
    assert.match(line, /--tls-verify=false/);
  });

  test('the CA in /etc/containers/certs.d/HOST:PORT/ca.crt is trusted', async () => {
    const d = join('/etc/containers/certs.d', tlsReg.host);
    if (!existsSync('/etc/containers/certs.d')) etcDirs.push('/etc/containers/certs.d');
    etcDirs.push(d);
    mkdirSync(d, { recursive: true });
    copyFileSync(ca.cert, join(d, 'ca.crt'));
    try {
      assert.equal(await pulled(['pull', `${tlsReg.host}/tiny:v1`]), `${tlsReg.host}/tiny:v1`);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('$HOME/.config/containers/certs.d and --cert-dir are read; another CA is not enough', async () => {
    certsD(tlsReg, { 'ca.crt': ca.cert });
    await pulled(['pull', `${tlsReg.host}/tiny:v1`]);
    certsD(tlsReg, { 'ca.crt': otherCa.cert });
    await refused(tlsReg, ['pull', `${tlsReg.host}/tiny:v1`], /not signed by a trusted CA/);
    rmSync(homeCertsD(tlsReg), { recursive: true });
    const dir = join(work, 'cert-dir');
    mkdirSync(dir, { recursive: true });
    copyFileSync(ca.cert, join(dir, 'my-ca.crt'));
    await pulled(['pull', '--cert-dir', dir, `${tlsReg.host}/tiny:v1`]);
    await pulled(['--cert-dir', dir, 'pull', `${tlsReg.host}/tiny:v1`]);
  });

  test('--tls-verify=false skips verification on HTTPS', async () => {
    assert.equal(await pulled(['pull', '--tls-verify=false', `${tlsReg.host}/tiny:v1`]), `${tlsReg.host}/tiny:v1`);
    await pulled(['pull', '--tls-verify=false', `${expiredReg.host}/tiny:v1`]);
  });

  test('push over TLS with the CA in certs.d; skopeo reads what was pushed', async () => {
    certsD(tlsReg, { 'ca.crt': ca.cert });
    try {
      const store = newStore();
      const r = await run(store, ['pull', `${tlsReg.host}/tiny:v1`]);
      assert.equal(r.status, 0, r.stderr);
      const p = await run(store, ['push', `${tlsReg.host}/tiny:v1`, `${tlsReg.host}/copy:v2`]);
      assert.equal(p.status, 0, p.stderr);
      const digest = p.stdout.trim().split('\n').pop()!;
      const inspected = JSON.parse(execFileSync('skopeo', ['inspect', '--cert-dir', homeCertsD(tlsReg), `docker://${tlsReg.host}/copy:v2`], { encoding: 'utf8' })) as { Digest: string };
      assert.equal(inspected.Digest, digest);
    } finally {
      rmSync(homeCertsD(tlsReg), { recursive: true, force: true });
    }
  });

  test('a registry requiring client certificates: works with client.cert/key in certs.d, refused in one line without', async () => {
    certsD(mtlsReg, { 'ca.crt': ca.cert });
    const line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /requires a client certificate/);
    assert.ok(line.includes(`certs.d/${mtlsReg.host}/`), line);
    certsD(mtlsReg, { 'ca.crt': ca.cert, 'client.cert': client.cert, 'client.key': client.key });
    assert.equal(await pulled(['pull', `${mtlsReg.host}/tiny:v1`]), `${mtlsReg.host}/tiny:v1`);
  });

  test('a client certificate the registry does not accept is refused naming it', async () => {
    const stranger = makeCert(otherCa, join(work, 'certs'), 'stranger', { client: true });
    const d = certsD(mtlsReg, { 'ca.crt': ca.cert, 'client.cert': stranger.cert, 'client.key': stranger.key });
    const line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /refused the client certificate/);
    assert.ok(line.includes(join(d, 'client.cert')), line);
  });

  test('certs.d with a wrong, unreadable or missing key: one line naming the file, nothing stored', async () => {
    const other = makeCert(ca, join(work, 'certs'), 'other-client', { client: true });
    let d = certsD(mtlsReg, { 'ca.crt': ca.cert, 'client.cert': client.cert, 'client.key': other.key });
    let line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /does not belong to the certificate/);
    assert.ok(line.includes(join(d, 'client.key')), line);
    d = certsD(mtlsReg, { 'ca.crt': ca.cert, 'client.cert': client.cert, 'client.key': 'not a key\n' });
    line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /not a usable key/);
    assert.ok(line.includes(join(d, 'client.key')), line);
    // Unreadable even for root: a directory where the key should be.
    d = certsD(mtlsReg, { 'ca.crt': ca.cert, 'client.cert': client.cert });
    mkdirSync(join(d, 'client.key'));
    line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /cannot read/);
    assert.ok(line.includes(join(d, 'client.key')), line);
    d = certsD(mtlsReg, { 'ca.crt': ca.cert, 'client.cert': client.cert });
    line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /without its key client\.key/);
    assert.ok(line.includes(join(d, 'client.cert')), line);
    d = certsD(mtlsReg, { 'ca.crt': 'garbage\n' });
    line = await refused(mtlsReg, ['pull', `${mtlsReg.host}/tiny:v1`], /not a PEM CA certificate/);
    assert.ok(line.includes(join(d, 'ca.crt')), line);
    // The broken certs.d also stops --tls-verify=false (it is not a reason to try plain HTTP).
    await refused(mtlsReg, ['pull', '--tls-verify=false', `${mtlsReg.host}/tiny:v1`], /not a PEM CA certificate/);
    rmSync(homeCertsD(mtlsReg), { recursive: true });
  });

  test('an expired or mismatched certificate is refused in one line naming the host', async () => {
    certsD(expiredReg, { 'ca.crt': ca.cert });
    await refused(expiredReg, ['pull', `${expiredReg.host}/tiny:v1`], /certificate (has expired|is not valid yet).*--tls-verify=false/);
    certsD(wrongNameReg, { 'ca.crt': ca.cert });
    const line = await refused(wrongNameReg, ['pull', `${wrongNameReg.host}/tiny:v1`], /certificate is for DNS:registry\.invalid, not 127\.0\.0\.1/);
    assert.match(line, /registry\.invalid/);
  });

  test('plain HTTP where HTTPS is expected: one line; --tls-verify=false falls back to HTTP', async () => {
    await refused(plainReg, ['pull', `${plainReg.host}/tiny:v1`], /answers plain HTTP, not HTTPS.*--tls-verify=false/);
    assert.equal(await pulled(['pull', '--tls-verify=false', `${plainReg.host}/tiny:v1`]), `${plainReg.host}/tiny:v1`);
  });

  test('login writes the auth file 0600 and never loosens an existing mode', async () => {
    const dir = join(work, 'auth');
    const regDir = join(work, 'r-auth');
    const reg = await startRegistry(regDir, { htpasswd: { user: 'u', password: 'p' } }, { tls: { certificate: join(work, 'certs', 'server.crt'), key: join(work, 'certs', 'server.key') } });
    regs.push(reg);
    certsD(reg, { 'ca.crt': ca.cert });
    mkdirSync(dir);
    const file = join(dir, 'auth.json');
    const login = async (): Promise<void> => {
      const r = await run(newStore(), ['login', '-u', 'u', '-p', 'p', reg.host], { REGISTRY_AUTH_FILE: file });
      assert.equal(r.status, 0, r.stderr);
    };
    await login();
    assert.equal(statSync(file).mode & 0o777, 0o600);
    execFileSync('chmod', ['0400', file]);
    await login();
    assert.equal(statSync(file).mode & 0o777, 0o400, 'a stricter mode is kept');
    execFileSync('chmod', ['0644', file]);
    await login();
    assert.equal(statSync(file).mode & 0o777, 0o600, 'a looser mode is tightened');
    const out = await run(newStore(), ['logout', reg.host], { REGISTRY_AUTH_FILE: file });
    assert.equal(out.status, 0, out.stderr);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });
});
