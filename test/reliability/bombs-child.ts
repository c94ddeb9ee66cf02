// Decompression and tar bombs, each consumed with a byte cap: the consumer
// must get its bytes promptly and stop, with bounded memory, and the hostile
// shapes (huge PAX record, huge size fields) must be refused with a typed
// error. Same command line and output as fuzz-child.ts (RUNS is ignored).
import { writeFileSync } from 'node:fs';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { isCowshedError } from '../../src/util/errors.ts';
import { decompress } from '../../src/oci/compression.ts';
import { readTar } from '../../src/tar/reader.ts';
import { ustarHeader, type RawType } from './tar-bytes.ts';

const CAP = 64 << 20;
const RSS_BUDGET_KB = 256 * 1024;
const TIME_BUDGET_MS = 20_000;

async function* once(...parts: Buffer[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

async function* repeat(part: Buffer, times: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < times; i++) yield part;
}

async function drain(source: AsyncIterable<Uint8Array>, cap = CAP): Promise<number> {
  let n = 0;
  for await (const c of source) { n += c.length; if (n >= cap) break; }
  return n;
}

const tarHeader = (name: string, size: number | bigint, type: RawType = 'file'): Buffer => ustarHeader({ name, size, type });

interface Case { name: string; run: () => Promise<string>; expect: 'bytes' | 'refused' | 'either' }

async function main(): Promise<void> {
  const progressFile = process.argv[6];
  const zeros64 = Buffer.alloc(64 << 20);
  const gzMember = gzipSync(zeros64, { level: 9 }); // ~64 KB for 64 MB
  const zstFrame = zstdCompressSync(zeros64);      // a few KB for 64 MB
  // A tar of one 1 TiB "file" of zeros: the header then the zero body, gzip-compressed lazily by repetition.
  const bigFileHeader = tarHeader('big', 1n << 40n);
  const cases: Case[] = [
    { name: 'gzip bomb: 16 GiB of zeros from 16 MB (256 members)', expect: 'bytes', run: async () => `${await drain(decompress(repeat(gzMember, 256)))} bytes` },
    { name: 'zstd bomb: 16 GiB of zeros from a few hundred KB', expect: 'bytes', run: async () => `${await drain(decompress(repeat(zstFrame, 256)))} bytes` },
    { name: 'gzip bomb, read in full: 1 GiB of zeros is a valid empty tar', expect: 'either', run: async () => {
      let n = 0;
      for await (const e of readTar(decompress(repeat(gzMember, 16)))) n += e.size;
      return `${n} entry bytes`;
    } },
    { name: 'tar bomb: a 1 TiB file of zeros behind a gzip stream, body capped', expect: 'either', run: async () => {
      const body = gzipSync(Buffer.concat([bigFileHeader, Buffer.alloc(1 << 20)]));
      for await (const e of readTar(decompress(once(body, ...Array<Buffer>(64).fill(gzMember))))) {
        return `${await drain(e.body())} body bytes of ${e.size}`;
      }
      return 'no entry';
    } },
    { name: 'huge PAX record (size field 2^40)', expect: 'refused', run: async () => {
      for await (const e of readTar(once(tarHeader('pax', 1n << 40n, 'pax'), Buffer.alloc(4096)))) void e;
      return 'read';
    } },
    { name: 'PAX record with a length of 10^20', expect: 'refused', run: async () => {
      const rec = Buffer.from('100000000000000000000 path=x\n');
      const pad = Buffer.alloc(512 - rec.length);
      for await (const e of readTar(once(tarHeader('pax', rec.length, 'pax'), rec, pad, tarHeader('f', 0), Buffer.alloc(1024)))) void e;
      return 'read';
    } },
    { name: 'GNU long name of 2^33 bytes', expect: 'refused', run: async () => {
      for await (const e of readTar(once(tarHeader('././@LongLink', 2 ** 33, 'gnu-longname'), Buffer.alloc(4096)))) void e;
      return 'read';
    } },
    { name: 'endless zero blocks after a member (trailing data)', expect: 'either', run: async () => {
      for await (const e of readTar(once(tarHeader('f', 0), Buffer.alloc(1024), ...Array<Buffer>(256).fill(Buffer.alloc(1 << 20))))) void e;
      return 'read';
    } },
    { name: 'endless non-zero trailing data after the end blocks', expect: 'either', run: async () => {
      for await (const e of readTar(once(tarHeader('f', 0), Buffer.alloc(1024), ...Array<Buffer>(256).fill(Buffer.alloc(1 << 20, 1))))) void e;
      return 'read';
    } },
  ];

  const findings: { kind: string; message: string; input: string }[] = [];
  for (const c of cases) {
    writeFileSync(progressFile, c.name);
    const rss0 = process.resourceUsage().maxRSS;
    const t0 = performance.now();
    let outcome: string;
    let refused = false;
    try {
      outcome = await c.run();
    } catch (e) {
      if (!isCowshedError(e)) { findings.push({ kind: 'crash', message: `${c.name}: ${(e as Error).name}: ${(e as Error).message}`, input: c.name }); continue; }
      refused = true;
      outcome = `refused: ${e.message}`;
    }
    const ms = performance.now() - t0;
    const grew = process.resourceUsage().maxRSS - rss0;
    process.stderr.write(`${c.name}: ${outcome} in ${Math.round(ms)} ms, peak RSS +${Math.round(grew / 1024)} MB\n`);
    if (c.expect === 'refused' && !refused) findings.push({ kind: 'accepted', message: `${c.name}: not refused (${outcome})`, input: c.name });
    if (c.expect === 'bytes' && refused) findings.push({ kind: 'refused', message: `${c.name}: ${outcome}`, input: c.name });
    if (grew > RSS_BUDGET_KB) findings.push({ kind: 'memory', message: `${c.name}: peak RSS grew by ${Math.round(grew / 1024)} MB`, input: c.name });
    if (ms > TIME_BUDGET_MS) findings.push({ kind: 'slow', message: `${c.name}: ${Math.round(ms)} ms`, input: c.name });
  }
  process.stdout.write(JSON.stringify({ target: 'bombs', executions: cases.length, seeds: 0, findings }) + '\n');
}

await main();
