// Byte ranges of a blob from a registry, for partial pulls. Registries as
// they are: a 206 with multipart/byteranges, a 206 with a single range
// (some serve only the first of several, or one covering them all), a 200
// with the whole blob (used: nothing is fetched twice), 400 or 416 when
// asked for too many ranges (the batch is halved, then given up on), and a
// connection dropped in the middle of a part (what is missing is asked for
// again). Ranges are merged when the gap between them is under 1 KiB and
// sent at most 1024 to a request, as containers/storage does.
//
// Added beside RegistryClient (request() does auth and retries); the blob
// stream of a whole-layer pull stays in client.ts.
import { CowshedError, isCowshedError } from '../util/errors.ts';
import { StreamInput } from '../tar/input.ts';
import { pullScope, type BlobStreamStats, type RegistryClient } from './client.ts';

export const MERGE_GAP = 1024;
export const MAX_RANGES_PER_REQUEST = 1024;

/** [start, end) byte range. */
export interface Range { start: number; end: number }

/** Sorts and merges ranges closer than `gap` bytes. */
export function mergeRanges(ranges: Range[], gap = MERGE_GAP): Range[] {
  const sorted = ranges.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start - last.end < gap) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

/** Thrown when the registry will not serve ranges at all (the caller pulls the whole layer). */
export class RangesRefused extends CowshedError {
  constructor(message: string) { super('EUNSUPPORTED', message); }
}

export interface RangeFetchStats extends BlobStreamStats {
  /** Range requests made and how they were answered. */
  rangeRequests: number;
  multipart: number;
  single: number;
  whole: number;
  refused: number;
}

export function newRangeStats(): RangeFetchStats {
  return { bytes: 0, requests: 0, resumed: 0, rangeRequests: 0, multipart: 0, single: 0, whole: 0, refused: 0 };
}

/**
 * Fetches `ranges` of a blob, handing each piece received to `put(offset,
 * bytes)` (pieces may be delivered more than once, never outside what was
 * asked for unless the registry sent the whole blob). Returns true when the
 * registry answered with the whole blob, which was then passed on entire.
 */
export async function fetchBlobRanges(
  client: RegistryClient, repo: string, digest: string, blobSize: number, wanted: Range[],
  put: (offset: number, bytes: Buffer) => void, stats: RangeFetchStats, opts: { maxRanges?: number; maxAttempts?: number } = {},
): Promise<boolean> {
  const what = `blob ${digest}`;
  let pending = mergeRanges(wanted);
  let perRequest = Math.min(opts.maxRanges ?? MAX_RANGES_PER_REQUEST, MAX_RANGES_PER_REQUEST);
  let stalls = 0;
  const maxStalls = opts.maxAttempts ?? 5;
  for (const r of pending) if (r.start < 0 || r.end > blobSize) throw new CowshedError('EFORMAT', `${what}: range ${r.start}-${r.end} is outside the blob (${blobSize} bytes)`);
  while (pending.length > 0) {
    const batch = pending.slice(0, perRequest);
    const header = `bytes=${batch.map((r) => `${r.start}-${r.end - 1}`).join(',')}`;
    stats.requests++;
    stats.rangeRequests++;
    const res = await client.request('GET', `/v2/${repo}/blobs/${digest}`, {
      headers: { range: header }, scopes: [pullScope(repo)], what, ok: (s) => s === 200 || s === 206 || s === 400 || s === 416,
    });
    if (res.status === 400 || res.status === 416) {
      await res.body?.cancel().catch(() => {});
      stats.refused++;
      if (perRequest === 1) throw new RangesRefused(`${client.registry}: ${what}: the registry refuses range requests (HTTP ${res.status})`);
      perRequest = Math.max(1, Math.floor(batch.length / 2));
      continue;
    }
    // Whatever arrives is recorded; what is still missing after it is asked for again.
    const got: Range[] = [];
    const record = (offset: number, bytes: Buffer): void => {
      if (bytes.length === 0) return;
      put(offset, bytes);
      got.push({ start: offset, end: offset + bytes.length });
    };
    let whole = false;
    try {
      if (res.status === 200) {
        stats.whole++;
        whole = true;
        let at = 0;
        for await (const c of client.bodyChunks(res, what)) {
          stats.bytes += c.length;
          record(at, Buffer.from(c));
          at += c.length;
          if (at > blobSize) throw new CowshedError('EDIGEST', `${what}: the registry sent more than the blob's ${blobSize} bytes`);
        }
        if (at === blobSize) return true;
        whole = false; // cut short: the ranges still missing are asked for below
      } else {
        const type = res.headers.get('content-type') ?? '';
        const m = /^multipart\/byteranges\s*;.*boundary=("?)([^";]+)\1/i.exec(type);
        if (m) {
          stats.multipart++;
          await readMultipart(client.bodyChunks(res, what), m[2]!, blobSize, what, (o, b) => { stats.bytes += b.length; record(o, b); });
        } else {
          stats.single++;
          const cr = parseContentRange(res.headers.get('content-range'), blobSize, what);
          let at = cr.start;
          for await (const c of client.bodyChunks(res, what)) {
            const b = Buffer.from(c);
            stats.bytes += b.length;
            if (at + b.length > cr.end) throw new CowshedError('EFORMAT', `${what}: the registry sent more bytes than its Content-Range says`);
            record(at, b);
            at += b.length;
          }
        }
      }
    } catch (e) {
      if (isCowshedError(e) && e.code !== 'ETOOL') throw e;
      if (!isNetworkLike(e)) throw e;
      // A dropped connection: keep what came, ask again for the rest.
    }
    if (whole) return true;
    const before = pending.reduce((a, r) => a + r.end - r.start, 0);
    pending = subtract(pending, got);
    const after = pending.reduce((a, r) => a + r.end - r.start, 0);
    if (after === before) {
      if (++stalls >= maxStalls) throw new CowshedError('ETOOL', `${client.registry}: ${what}: no progress fetching ranges after ${stalls} requests`);
    } else if (after > 0) {
      stats.resumed++;
    }
  }
  return false;
}

function isNetworkLike(e: unknown): boolean {
  if (isCowshedError(e)) return e.code === 'ETOOL';
  return e instanceof TypeError || (typeof e === 'object' && e !== null && 'code' in e);
}

/** Ranges minus ranges received. */
export function subtract(want: Range[], got: Range[]): Range[] {
  const g = mergeRanges(got, 1);
  const out: Range[] = [];
  for (const w of want) {
    let start = w.start;
    for (const r of g) {
      if (r.end <= start || r.start >= w.end) continue;
      if (r.start > start) out.push({ start, end: r.start });
      start = Math.max(start, r.end);
      if (start >= w.end) break;
    }
    if (start < w.end) out.push({ start, end: w.end });
  }
  return out;
}

function parseContentRange(v: string | null, blobSize: number, what: string): Range {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec((v ?? '').trim());
  if (!m) throw new CowshedError('EFORMAT', `${what}: a 206 answer with Content-Range ${JSON.stringify(v)}`);
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  if (end <= start || end > blobSize || (m[3] !== '*' && Number(m[3]) !== blobSize)) {
    throw new CowshedError('EFORMAT', `${what}: Content-Range ${v} does not fit the blob (${blobSize} bytes)`);
  }
  return { start, end };
}

const MAX_PART_HEADERS = 16 << 10;

/** Reads a multipart/byteranges body, part by part, streaming each part's bytes. */
async function readMultipart(
  body: AsyncIterable<Uint8Array>, boundary: string, blobSize: number, what: string, put: (offset: number, b: Buffer) => void,
): Promise<void> {
  const input = new StreamInput(body);
  const readLine = async (): Promise<string | undefined> => {
    const bytes: number[] = [];
    for (;;) {
      const b = await input.read(1);
      if (b.length === 0) return bytes.length ? Buffer.from(bytes).toString('latin1') : undefined;
      if (b[0] === 0x0a) {
        if (bytes[bytes.length - 1] === 0x0d) bytes.pop();
        return Buffer.from(bytes).toString('latin1');
      }
      bytes.push(b[0]!);
      if (bytes.length > MAX_PART_HEADERS) throw new CowshedError('EFORMAT', `${what}: a multipart line is too long`);
    }
  };
  const delim = `--${boundary}`;
  try {
    // Preamble up to the first delimiter.
    for (;;) {
      const line = await readLine();
      if (line === undefined) throw new CowshedError('EFORMAT', `${what}: multipart answer without parts`);
      if (line === delim) break;
      if (line === `${delim}--`) return;
    }
    for (;;) {
      let range: Range | undefined;
      for (;;) {
        const line = await readLine();
        if (line === undefined) throw new TypeError(`${what}: multipart answer ended inside part headers`);
        if (line === '') break;
        const colon = line.indexOf(':');
        if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === 'content-range') range = parseContentRange(line.slice(colon + 1).trim(), blobSize, what);
      }
      if (!range) throw new CowshedError('EFORMAT', `${what}: a multipart part without Content-Range`);
      let at = range.start;
      while (at < range.end) {
        const c = await input.readChunk(range.end - at);
        if (c.length === 0) throw new TypeError(`${what}: connection dropped inside a part`);
        put(at, Buffer.from(c));
        at += c.length;
      }
      // CRLF, then the next delimiter or the closing one.
      let line = await readLine();
      if (line === '') line = await readLine();
      if (line === undefined) return; // the closing delimiter lost: every part came
      if (line === `${delim}--`) return;
      if (line !== delim) throw new CowshedError('EFORMAT', `${what}: malformed multipart answer`);
    }
  } finally {
    await input.close();
  }
}
