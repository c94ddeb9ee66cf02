// A hostile registry for the fuzz campaign: a raw TCP server that answers
// each route of a pull (ping, token, manifest, config, layer) as a script
// says: any status, lying lengths and digests, odd challenges, redirects to
// other schemes, partial content, bodies mutated or cut off mid-way. Raw
// sockets, not node:http, so that nothing tidies the lies up.
import { createServer, type Server, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { tarArchive } from './tar-bytes.ts';

export type Route = 'ping' | 'token' | 'manifest' | 'config' | 'layer';
export const ROUTES: Route[] = ['ping', 'token', 'manifest', 'config', 'layer'];

export interface ResponseSpec {
  status: number;
  /** Index into CHALLENGES (401s), or -1. */
  challenge: number;
  contentType: number;
  digestHeader: 'right' | 'wrong' | 'junk' | 'none';
  length: 'right' | 'short' | 'long' | 'none' | 'huge';
  body: 'valid' | 'empty' | 'mutated' | 'junk' | 'cut';
  /** Byte flips applied to a 'mutated' body: [position, value]. */
  flips: Array<[number, number]>;
  location: number;
  contentRange: number;
  /** A WWW-Authenticate header of the caller's own, instead of one of CHALLENGES. */
  wwwAuthenticate?: string;
}
export type Script = Partial<Record<Route, ResponseSpec>>;

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The one image the registry holds when nothing lies: a gzip layer, its config and manifest. */
function makeImage(): Record<Exclude<Route, 'ping'>, { body: Buffer; type: string }> {
  const tar = tarArchive([
    { name: 'etc/', type: 'dir' }, { name: 'etc/hostname', type: 'file', body: Buffer.from('fuzz\n') },
    { name: 'bin/', type: 'dir' }, { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
  ]);
  const layer = gzipSync(tar);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha(tar)] } }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layer), size: layer.length }],
  }));
  return {
    token: { body: Buffer.from(JSON.stringify({ token: 'fuzz-token', expires_in: 300 })), type: 'application/json' },
    manifest: { body: manifest, type: 'application/vnd.oci.image.manifest.v1+json' },
    config: { body: config, type: 'application/octet-stream' },
    layer: { body: layer, type: 'application/octet-stream' },
  };
}

const STATUSES = [200, 200, 200, 200, 401, 404, 500, 503, 429, 206, 301, 307, 308, 416, 204, 418, 999];
const CONTENT_TYPES = ['', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json', 'text/html', 'application/json; charset=utf-8', '\u00ff\u00fe'];
const JUNK_BODIES = ['{', '[]', 'null', '{"errors":[{"code":"DENIED","message":"' + 'x'.repeat(5000) + '"}]}', '{"errors":"nope"}', '{"token":5}', '{"access_token":""}',
  '{"schemaVersion":2,"manifests":[{"digest":"sha256:' + '0'.repeat(64) + '","platform":{"os":"linux","architecture":"amd64"}}]}', '<html>oops</html>', '\u0000'.repeat(100)];

/** Challenges; REALM is this server's token URL. */
const CHALLENGES = ['Bearer realm="REALM",service="fuzz",scope="repository:fuzz/img:pull"', 'Basic realm="fuzz"', 'Bearer realm="file:///etc/passwd"',
  'Bearer realm="REALM"', 'Bearer realm=REALM', 'Bearer', 'Bearer realm="http://127.0.0.1:1/token"', 'Negotiate', 'Bearer realm="REALM",error="invalid_token"',
  'Bearer realm="' + 'x'.repeat(10_000) + '"', 'Bearer realm="REALM?a=b&c"', 'Bearer realm="javascript:alert(1)"'];
const LOCATIONS = ['', '/v2/', 'REALM', 'file:///etc/passwd', 'http://127.0.0.1:1/x', 'ftp://127.0.0.1/x', 'SELF', '//evil.invalid/x', 'data:text/plain,hello', '\r\nX-Injected: 1'];
const RANGES = ['', 'bytes 0-0/1', 'bytes 5-2/10', 'bytes */*', 'bytes 0-99999999999999999999/1', 'garbage', 'bytes 1-2/3'];

const specArb: fc.Arbitrary<ResponseSpec> = fc.record({
  status: fc.constantFrom(...STATUSES),
  challenge: fc.integer({ min: -1, max: CHALLENGES.length - 1 }),
  contentType: fc.nat(CONTENT_TYPES.length - 1),
  digestHeader: fc.constantFrom('right', 'right', 'wrong', 'junk', 'none'),
  length: fc.constantFrom('right', 'right', 'right', 'short', 'long', 'none', 'huge'),
  body: fc.constantFrom('valid', 'valid', 'valid', 'empty', 'mutated', 'mutated', 'junk', 'cut'),
  flips: fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }),
  location: fc.nat(LOCATIONS.length - 1),
  contentRange: fc.nat(RANGES.length - 1),
});

/** Scripts, serialized as the fuzz input: most routes honest, some lying. */
export const scriptArb: fc.Arbitrary<Buffer> = fc.record({
  ping: fc.option(specArb, { freq: 3 }), token: fc.option(specArb, { freq: 3 }), manifest: fc.option(specArb, { freq: 2 }),
  config: fc.option(specArb, { freq: 2 }), layer: fc.option(specArb, { freq: 2 }),
}).map((s) => Buffer.from(JSON.stringify(Object.fromEntries(Object.entries(s).filter(([, v]) => v !== null)))));

export interface HostileRegistry { port: number; script: Script; close(): Promise<void> }

export async function startHostileRegistry(): Promise<HostileRegistry> {
  const image = makeImage();
  const sockets = new Set<Socket>();
  const reg: HostileRegistry = { port: 0, script: {}, close: async () => {} };
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let head = '';
    sock.on('data', (d) => {
      if (head === '' && d[0] === 0x16) { sock.destroy(); return; } // a TLS hello: not spoken here (a client probing for HTTPS)
      if (head.includes('\r\n\r\n')) return; // request bodies (none in a pull) are ignored
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) { if (head.length > 65536) sock.destroy(); return; }
      const [method = 'GET', target = '/'] = head.split('\r\n')[0]!.split(' ');
      answer(sock, method, target);
    });
  });
  const realm = (): string => `http://127.0.0.1:${reg.port}/token`;

  const answer = (sock: Socket, method: string, target: string): void => {
    const path = target.split('?')[0]!;
    const route: Route = path === '/v2/' ? 'ping' : path.startsWith('/token') ? 'token' : path.includes('/manifests/') ? 'manifest'
      : path.endsWith(sha(image.config.body)) ? 'config' : 'layer';
    const honest = route === 'ping' ? { body: Buffer.from('{}'), type: 'application/json' } : image[route];
    const spec = reg.script[route];
    const lines: string[] = [];
    let body = honest.body;
    let status = 200;
    if (spec) {
      status = spec.status;
      if (spec.body === 'empty') body = Buffer.alloc(0);
      else if (spec.body === 'junk') body = Buffer.from(JUNK_BODIES[spec.flips.length % JUNK_BODIES.length]!);
      else if (spec.body === 'mutated' && body.length) { body = Buffer.from(body); for (const [p, v] of spec.flips) body[p % body.length] = v; }
      if (spec.wwwAuthenticate) lines.push(`WWW-Authenticate: ${spec.wwwAuthenticate}`);
      else if (spec.challenge >= 0 && (status === 401 || spec.challenge % 3 === 0)) lines.push(`WWW-Authenticate: ${CHALLENGES[spec.challenge]!.replace('REALM', realm())}`);
      if (CONTENT_TYPES[spec.contentType]) lines.push(`Content-Type: ${CONTENT_TYPES[spec.contentType]}`);
      if (spec.digestHeader !== 'none') lines.push(`Docker-Content-Digest: ${spec.digestHeader === 'right' ? sha(body) : spec.digestHeader === 'wrong' ? sha(Buffer.from('x')) : 'md5:abc'}`);
      const loc = LOCATIONS[spec.location]!;
      if (loc && status >= 300 && status < 400) lines.push(`Location: ${loc.replace('REALM', realm()).replace('SELF', `http://127.0.0.1:${reg.port}${target}`)}`);
      if (RANGES[spec.contentRange]) lines.push(`Content-Range: ${RANGES[spec.contentRange]}`);
      const len = { right: body.length, short: Math.max(0, body.length - 7), long: body.length + 100, none: -1, huge: 2 ** 40 }[spec.length];
      if (len >= 0) lines.push(`Content-Length: ${len}`);
    } else {
      lines.push(`Content-Type: ${honest.type}`);
      if (route === 'manifest') lines.push(`Docker-Content-Digest: ${sha(body)}`);
      lines.push(`Content-Length: ${body.length}`);
    }
    const reason = status >= 100 && status <= 599 ? 'X' : '';
    sock.write(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\n${lines.join('\r\n')}${lines.length ? '\r\n' : ''}\r\n`, 'latin1');
    if (method !== 'HEAD') sock.write(spec?.body === 'cut' ? body.subarray(0, body.length >> 1) : body);
    if (spec?.body === 'cut') sock.destroy(); else sock.end();
  };

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  reg.port = (server.address() as { port: number }).port;
  reg.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return reg;
}
