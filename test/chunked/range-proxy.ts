// A proxy in front of docker-registry that answers range requests the ways
// registries and CDNs do: as asked (multipart/byteranges from the registry),
// only the first range (a single-range 206), the whole blob (200), a 416 or
// 400 above some number of ranges, a connection dropped in the middle of the
// body, or a flipped byte. It records every request.
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export type RangeMode = 'pass' | 'first-only' | 'whole' | 'drop-mid' | 'corrupt' | { maxRanges: number; status: 400 | 416 } | 'refuse-all';

export interface RangeRequest { method: string; url: string; range?: string; ranges: number; status?: number; mode: string }

export interface RangeProxy {
  host: string;
  port: number;
  requests: RangeRequest[];
  /** Mode for range requests (plain GETs always pass). */
  mode: RangeMode;
  /** drop-mid and corrupt apply to this many range requests, then requests pass (default 1). */
  faults: number;
  stop(): Promise<void>;
}

export async function startRangeProxy(targetPort: number): Promise<RangeProxy> {
  const proxy: RangeProxy = { host: '', port: 0, requests: [], mode: 'pass', faults: 1, stop: async () => {} };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const range = req.headers.range;
    const ranges = range ? range.replace(/^bytes=/, '').split(',').length : 0;
    const m = proxy.mode;
    const modeName = typeof m === 'string' ? m : `max${m.maxRanges}:${m.status}`;
    const rec: RangeRequest = { method: req.method ?? '', url: req.url ?? '', range, ranges, mode: range ? modeName : 'plain' };
    proxy.requests.push(rec);
    const headers = { ...req.headers };
    let damage: 'drop' | 'corrupt' | undefined;
    if (range && req.method === 'GET') {
      if (m === 'refuse-all' || (typeof m === 'object' && ranges > m.maxRanges)) {
        const status = typeof m === 'object' ? m.status : 400;
        rec.status = status;
        req.resume();
        res.writeHead(status, { 'content-type': 'text/plain' }).end('too many ranges');
        return;
      }
      if (m === 'first-only') headers.range = range.split(',')[0];
      if (m === 'whole') delete headers.range;
      if ((m === 'drop-mid' || m === 'corrupt') && proxy.faults > 0) {
        proxy.faults--;
        damage = m === 'drop-mid' ? 'drop' : 'corrupt';
      }
    }
    const up = httpRequest({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers }, (ur) => {
      rec.status = ur.statusCode;
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (!damage) { ur.pipe(res); return; }
      const length = Number(ur.headers['content-length'] ?? 0);
      const half = Math.floor(length / 2);
      let sent = 0;
      ur.on('data', (chunk: Buffer) => {
        let out = chunk;
        if (damage === 'corrupt' && sent <= half && sent + chunk.length > half) {
          out = Buffer.from(chunk);
          out[half - sent] ^= 0x55;
        }
        if (damage === 'drop' && sent + chunk.length > half) {
          res.write(chunk.subarray(0, half - sent));
          ur.destroy();
          setImmediate(() => res.socket?.destroy());
          sent = length;
          return;
        }
        sent += chunk.length;
        res.write(out);
      });
      ur.on('end', () => res.end());
    });
    up.on('error', () => { res.socket?.destroy(); });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = (server.address() as { port: number }).port;
  proxy.host = `127.0.0.1:${proxy.port}`;
  proxy.stop = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return proxy;
}
