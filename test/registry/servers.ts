// Servers the registry tests start on 127.0.0.1: Debian's docker-registry
// (a child process, config written here), a recording / fault-injecting
// proxy, and a token server for bearer auth. Everything is stopped by the
// test's after().
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { createSign, createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { REPO } from '../helpers/cli.ts';
import { writeOciLayout } from '../../src/oci/layout-writer.ts';

const execFileP = promisify(execFile);
const MAIN = join(REPO, 'bin', 'cowshed.js');

/** The CLI without blocking this process (its servers must keep answering). */
export async function cowshedAsync(store: string, args: string[], env: Record<string, string> = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP(process.execPath, [MAIN, '--store', store, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, env: { ...process.env, ...env } });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

export async function cowshedAsyncOk(store: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const r = await cowshedAsync(store, args, env);
  if (r.status !== 0) throw new Error(`cowshed ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

export async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export interface RunningRegistry { port: number; host: string; dir: string; stop(): Promise<void> }

export interface RegistryAuth {
  htpasswd?: { user: string; password: string };
  token?: { realm: string; service: string; issuer: string; certFile: string };
}

export interface RegistryServe {
  /** Serve HTTPS with this certificate and key (PEM files). */
  tls?: { certificate: string; key: string; /** Require client certificates signed by these CAs. */ clientCas?: string[] };
  /** Pull-through cache (proxy mode) of this registry URL. */
  proxyRemote?: string;
  /** Listen on this port (restarting a registry where it was). */
  port?: number;
}

/** docker-registry on a free loopback port, storage in dir. */
export async function startRegistry(dir: string, auth: RegistryAuth = {}, serve: RegistryServe = {}): Promise<RunningRegistry> {
  mkdirSync(join(dir, 'data'), { recursive: true });
  const port = serve.port ?? await freePort();
  let tlsYaml = '';
  if (serve.tls) {
    tlsYaml = `  tls:\n    certificate: ${serve.tls.certificate}\n    key: ${serve.tls.key}\n`;
    if (serve.tls.clientCas) tlsYaml += `    clientcas:\n${serve.tls.clientCas.map((c) => `      - ${c}\n`).join('')}`;
  }
  const proxyYaml = serve.proxyRemote ? `proxy:\n  remoteurl: ${serve.proxyRemote}\n` : '';
  let authYaml = '';
  if (auth.htpasswd) {
    const file = join(dir, 'htpasswd');
    // The registry accepts bcrypt entries only.
    writeFileSync(file, execFileSync('htpasswd', ['-Bbn', auth.htpasswd.user, auth.htpasswd.password], { encoding: 'utf8' }));
    authYaml = `auth:\n  htpasswd:\n    realm: test-realm\n    path: ${file}\n`;
  } else if (auth.token) {
    const t = auth.token;
    authYaml = `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.certFile}\n`;
  }
  const config = join(dir, 'config.yml');
  writeFileSync(config, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, 'data')}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${tlsYaml}${authYaml}${proxyYaml}`);
  const child: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(3000).then(() => { child.kill('SIGKILL'); return exited; })]);
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
    try {
      // A TLS docker-registry answers plain HTTP with 400: it is up.
      await fetch(`http://127.0.0.1:${port}/v2/`);
      return { port, host: `127.0.0.1:${port}`, dir, stop };
    } catch { await sleep(50); }
  }
  await stop();
  throw new Error(`docker-registry did not start: ${stderr}`);
}

/** docker-registry holding the Debian fixture's `tags` (of the OCI layout `layout`) as debian:TAG. */
export async function startRegistryWithDebian(dir: string, layout: string, tags: string[]): Promise<RunningRegistry> {
  const registry = await startRegistry(dir);
  try {
    for (const tag of tags) {
      execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:${tag}`, `docker://${registry.host}/debian:${tag}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    }
  } catch (e) {
    await registry.stop();
    throw e;
  }
  return registry;
}

// ---------------------------------------------------------------- proxy

export type Fault = 'none' | 'drop' | 'truncate' | 'corrupt' | 'error500';

export interface ProxyRequest { method: string; url: string; range?: string; status?: number; fault: Fault }

export interface RunningProxy {
  port: number;
  host: string;
  requests: ProxyRequest[];
  /** Decides the fault for a request (default: none). */
  fault: (req: IncomingMessage, nth: number) => Fault;
  stop(): Promise<void>;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/**
 * A proxy to the registry that records every request and can damage the
 * answer: drop the connection halfway through the body, end it early
 * (cleanly, chunked), flip one byte, or answer 500 without asking.
 */
export async function startProxy(targetPort: number): Promise<RunningProxy> {
  const requests: ProxyRequest[] = [];
  const proxy: RunningProxy = { port: 0, host: '', requests, fault: () => 'none', stop: async () => {} };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const fault = proxy.fault(req, requests.length);
    const rec: ProxyRequest = { method: req.method ?? '', url: req.url ?? '', range: req.headers.range, fault };
    requests.push(rec);
    if (fault === 'error500') {
      rec.status = 500;
      req.resume();
      res.writeHead(500, { 'content-type': 'text/plain' }).end('injected failure');
      return;
    }
    const up = httpRequest({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      rec.status = ur.statusCode;
      const length = Number(ur.headers['content-length'] ?? 0);
      const damaging = fault !== 'none' && req.method === 'GET' && length > 1024;
      if (!damaging) {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
        return;
      }
      const half = Math.floor(length / 2);
      const headers = { ...ur.headers };
      if (fault === 'truncate') delete headers['content-length'];
      res.writeHead(ur.statusCode ?? 502, headers);
      let sent = 0;
      ur.on('data', (chunk: Buffer) => {
        if (sent >= half && fault !== 'corrupt') return;
        let out = chunk;
        if (fault === 'corrupt' && sent <= half && sent + chunk.length > half) {
          out = Buffer.from(chunk);
          out[half - sent] ^= 0x55;
        } else if (fault !== 'corrupt' && sent + chunk.length > half) {
          out = chunk.subarray(0, half - sent);
        }
        sent += chunk.length;
        res.write(out);
        if (sent >= half && fault === 'drop') { ur.destroy(); setImmediate(() => res.socket?.destroy()); }
        if (sent >= half && fault === 'truncate') { ur.destroy(); res.end(); }
      });
      ur.on('end', () => { if (fault === 'corrupt') res.end(); });
    });
    up.on('error', () => { res.socket?.destroy(); });
    req.pipe(up);
  });
  proxy.port = await listen(server);
  proxy.host = `127.0.0.1:${proxy.port}`;
  proxy.stop = () => close(server);
  return proxy;
}

// ---------------------------------------------------------------- tokens

export interface TokenServer {
  port: number;
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  /** Scopes asked for, in order. */
  issued: string[][];
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

/** Issues RS256 JWTs (x5c header: the self-signed cert the registry trusts) to user:password. */
export async function startTokenServer(dir: string, user: string, password: string, tokenTtlSeconds = 300): Promise<TokenServer> {
  const key = join(dir, 'token.key');
  const certFile = join(dir, 'token.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', certFile, '-days', '2', '-subj', '/CN=cowshed-test-token'], { stdio: 'ignore' });
  const keyPem = readFileSync(key, 'utf8');
  const certDer = new X509Certificate(readFileSync(certFile)).raw;
  const service = 'cowshed-test-registry';
  const issuer = 'cowshed-test-issuer';
  const issued: string[][] = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const auth = req.headers.authorization ?? '';
    const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    if (auth !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const scopes = u.searchParams.getAll('scope');
    issued.push(scopes);
    const access = scopes.map((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop() ?? '';
      return { type, name: rest.join(':'), actions: actions.split(',') };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] };
    const claims = { iss: issuer, sub: user, aud: service, exp: now + tokenTtlSeconds, nbf: now - 10, iat: now, jti: createHash('sha256').update(String(Math.random())).digest('hex').slice(0, 16), access };
    const body = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(body).sign(keyPem);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `${body}.${b64url(sig)}`, expires_in: tokenTtlSeconds }));
  });
  const port = await listen(server);
  return { port, realm: `http://127.0.0.1:${port}/token`, service, issuer, certFile, issued, stop: () => close(server) };
}

// ---------------------------------------------------------------- certificates

export interface TestCa { dir: string; cert: string; key: string }

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A CA made with openssl, in dir/NAME.crt and dir/NAME.key. */
export function makeCa(dir: string, name = 'ca'): TestCa {
  mkdirSync(dir, { recursive: true });
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', ...EC, '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=cowshed test ${name}`], { stdio: 'ignore' });
  return { dir, cert, key };
}

/**
 * A certificate signed by ca, in dir/NAME.{crt,key}: for a server (SAN
 * IP:127.0.0.1 unless `san` says otherwise), or a client (clientAuth).
 * days < 0 gives one that has expired.
 */
export function makeCert(ca: TestCa, dir: string, name: string, o: { san?: string; client?: boolean; days?: number } = {}): { cert: string; key: string } {
  mkdirSync(dir, { recursive: true });
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  execFileSync('openssl', ['req', ...EC, '-keyout', key, '-out', csr, '-subj', `/CN=${o.client ? 'cowshed-client' : '127.0.0.1'}`], { stdio: 'ignore' });
  writeFileSync(ext, o.client ? 'extendedKeyUsage=clientAuth\n' : `subjectAltName=${o.san ?? 'IP:127.0.0.1'}\nextendedKeyUsage=serverAuth\n`);
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', String(o.days ?? 2), '-extfile', ext], { stdio: 'ignore' });
  return { cert, key };
}

// ---------------------------------------------------------------- images

/** A one-layer image (a few files) as an OCI layout tagged v1. */
export async function tinyLayout(dir: string, seed: string): Promise<string> {
  const root = join(dir, 'rootfs');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc', 'hello'), `hello from ${seed}\n`);
  writeFileSync(join(root, 'data'), Buffer.alloc(200_000, seed));
  const tar = join(dir, 'layer.tar.gz');
  execFileSync('tar', ['-czf', tar, '-C', root, '.']);
  const layout = join(dir, 'layout');
  await writeOciLayout(layout, { config: { architecture: 'amd64', os: 'linux', config: {} }, layers: [{ path: tar }], tag: 'v1' });
  return layout;
}

