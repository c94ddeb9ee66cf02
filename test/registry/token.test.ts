// Bearer-token auth: docker-registry configured with `auth: token` trusting
// a certificate made here, and a token server started by the test that
// signs JWTs with its key. Plus a fake registry whose token expires in the
// middle of a blob download.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { tempDir, removeTree, debianFixture, lastLine } from '../helpers/cli.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { cowshedAsync, startRegistry, startTokenServer, type RunningRegistry, type TokenServer } from './servers.ts';

// The token server runs in this process: tools that need it must not block it.
const execFileP = promisify(execFile);

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const missing = ['docker-registry', 'skopeo', 'openssl'].filter((t) => !have(t));

describe('bearer token auth against docker-registry', { skip: missing.length ? `missing ${missing.join(', ')}` : false }, () => {
  let work: string;
  let store: string;
  let tokens: TokenServer;
  let registry: RunningRegistry;
  let env: Record<string, string>;

  before(async () => {
    const fx = debianFixture();
    work = tempDir('cowshed-token-');
    store = join(work, 'store');
    env = { REGISTRY_AUTH_FILE: join(work, 'auth.json'), HOME: work };
    tokens = await startTokenServer(work, 'bob', 'builder');
    registry = await startRegistry(join(work, 'registry'), { token: tokens });
    await execFileP('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'bob:builder', `oci:${fx.layout}:v2`, `docker://${registry.host}/tok/debian:v2`]);
  });

  after(async () => {
    await registry?.stop();
    await tokens?.stop();
    if (work) removeTree(work);
  });

  test('pull and push get tokens scoped to the repository', async () => {
    const from = tokens.issued.length;
    const pulled = await cowshedAsync(store, ['pull', '-q', '--tls-verify=false', '--creds', 'bob:builder', `${registry.host}/tok/debian:v2`], env);
    assert.equal(pulled.status, 0, pulled.stderr);
    assert.match(lastLine(pulled.stdout), /^sha256:[0-9a-f]{64}$/);
    assert.ok(tokens.issued.slice(from).some((s) => s.includes('repository:tok/debian:pull')), JSON.stringify(tokens.issued));

    const pushed = await cowshedAsync(store, ['push', '--tls-verify=false', '--creds', 'bob:builder', `${registry.host}/tok/debian:v2`, `${registry.host}/tok/copy:v2`], env);
    assert.equal(pushed.status, 0, pushed.stderr);
    assert.match(pushed.stderr, /mounted from another repository/);
    const scopes = tokens.issued.slice(from).flat();
    assert.ok(scopes.includes('repository:tok/copy:pull,push'), JSON.stringify(scopes));
    assert.ok(scopes.includes('repository:tok/debian:pull'), 'the mount source is asked for with pull');
    // skopeo reads what cowshed pushed with a token of its own.
    await execFileP('skopeo', ['inspect', '--tls-verify=false', '--creds', 'bob:builder', `docker://${registry.host}/tok/copy:v2`]);
  });

  test('a wrong password at the token server fails with one line', async () => {
    const r = await cowshedAsync(join(work, 'store2'), ['pull', '--tls-verify=false', '--creds', 'bob:wrong', `${registry.host}/tok/debian:v2`], env);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^cowshed: .*token request: authentication failed/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  });
});

describe('token refresh during a long download (fake registry)', () => {
  let server: Server;
  let port: number;
  const blob = Buffer.alloc(1 << 20, 7);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const log: string[] = [];
  let tokenNo = 0;
  let blobGets = 0;

  before(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/token') {
        tokenNo++;
        log.push(`token ${url.searchParams.getAll('scope').join(' ')}`);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: `t${tokenNo}` }));
        return;
      }
      const challenge = `Bearer realm="http://127.0.0.1:${port}/token",service="fake",scope="repository:app:pull"`;
      const auth = req.headers.authorization ?? '';
      log.push(`${req.method} ${url.pathname} ${auth} ${req.headers.range ?? ''}`.trim());
      // Token 1 expires after the first blob request.
      const valid = auth === `Bearer t${tokenNo}` && !(auth === 'Bearer t1' && blobGets >= 1);
      if (!valid) {
        res.writeHead(401, { 'www-authenticate': challenge }).end();
        return;
      }
      if (url.pathname === `/v2/app/blobs/${digest}`) {
        blobGets++;
        const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
        if (range) {
          const start = Number(range[1]);
          res.writeHead(206, { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}`, 'content-length': String(blob.length - start) }).end(blob.subarray(start));
          return;
        }
        // The first download breaks halfway.
        res.writeHead(200, { 'content-length': String(blob.length) });
        res.write(blob.subarray(0, blob.length / 2), () => res.socket?.destroy());
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  test('a 401 on resume gets a fresh token and the download continues where it stopped', async () => {
    const client = new RegistryClient(`127.0.0.1:${port}`, `127.0.0.1:${port}`, { tlsVerify: false, retryDelayMs: 10, credentials: { username: 'u', password: 'p' } });
    const stats = { bytes: 0, requests: 0, resumed: 0 };
    const chunks: Uint8Array[] = [];
    for await (const c of client.blob('app', digest, blob.length, stats)) chunks.push(c);
    assert.ok(Buffer.concat(chunks).equals(blob));
    assert.equal(stats.resumed, 1);
    assert.equal(tokenNo, 2, log.join('\n'));
    assert.ok(log.some((l) => l.startsWith(`GET /v2/app/blobs/${digest} Bearer t2 bytes=`)), log.join('\n'));
  });
});
