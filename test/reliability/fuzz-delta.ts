// Fuzz target for the delta index and pack reader (issue 13), run in a child
// process by fuzz-delta.test.ts (a synchronous hang cannot be interrupted
// in-process):
//   node test/reliability/fuzz-delta.ts SEED RUNS
// Seeds: a real delta (index + pack) built here from random objects with
// patches, plain zstd and raw entries and a tar-split record. Inputs: the
// index blob mutated (bytes, and structurally: JSON fields changed before
// compression) and the pack mutated. Each input goes through decodeIndex,
// the planner and decodeEntry + the digest check, as a client would; any
// outcome but a result or a CowshedError is a finding. Prints one JSON line.
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { fsverityDigest, toHex } from '../../src/composefs/fsverity.ts';
import { decodeEntry, decodeIndex, encodeIndex, type DeltaEntry, type DeltaIndex } from '../../src/delta/format.ts';
import { encodeObject } from '../../src/delta/create.ts';
import { DeltaPlanner, layerKey } from '../../src/delta/plan.ts';
import { splitRefs } from '../../src/delta/split-refs.ts';
import { sha256Hex } from '../../src/oci/digest.ts';
import { isCowshedError } from '../../src/util/errors.ts';

const [seedArg, runsArg] = process.argv.slice(2);
const SEED = Number(seedArg ?? 1);
const RUNS = Number(runsArg ?? 500);

/** A small real delta: 12 objects (some patched against bases), one tar-split record. */
function seedDelta(): { index: DeltaIndex; pack: Buffer; bases: Map<string, Buffer> } {
  const bases = new Map<string, Buffer>();
  const chunks: Buffer[] = [];
  const entries: DeltaEntry[] = [];
  let off = 0;
  const add = (e: Omit<DeltaEntry, 'p' | 'off' | 'len'>, b: Buffer): number => {
    entries.push({ ...e, p: 0, off, len: b.length });
    chunks.push(b);
    off += b.length;
    return entries.length - 1;
  };
  // A tar-split record referring to two objects.
  const objs: Buffer[] = [];
  for (let i = 0; i < 12; i++) {
    const base = Buffer.concat([randomBytes(200 + i * 50), Buffer.alloc(3000, i)]);
    bases.set(toHex(fsverityDigest(base)), base);
    const obj = Buffer.from(base);
    obj[i * 7] ^= 0xff;
    objs.push(obj);
    const enc = encodeObject(obj, i % 3 === 0 ? [] : [base]);
    const e = enc.kind === 'patch' ? { o: toHex(fsverityDigest(obj)), s: obj.length, b: toHex(fsverityDigest(base)), k: enc.kind } : { o: toHex(fsverityDigest(obj)), s: obj.length, k: enc.kind };
    add(e, enc.bytes);
  }
  const split = Buffer.concat([Buffer.from('CWTS\x01', 'latin1'), Buffer.from([0x52, 3]), Buffer.from('abc'),
    Buffer.from([0x43, objs[1]!.length & 0x7f | 0x80, objs[1]!.length >> 7]), fsverityDigest(objs[1]!), Buffer.from([0x45, 0])]);
  const splitIx = add({ o: sha256Hex(split), s: split.length, k: 'split-zstd' }, zstdCompressSync(split));
  const pack = Buffer.concat(chunks);
  const manifest = Buffer.from('{"schemaVersion":2}');
  const index: DeltaIndex = {
    version: 1,
    from: { manifest: `sha256:${'1'.repeat(64)}`, layers: [`sha256:${'2'.repeat(64)}`] },
    to: { manifest: `sha256:${sha256Hex(manifest)}`, mediaType: 'application/vnd.oci.image.manifest.v1+json', manifestBytes: manifest, configBytes: Buffer.from('{}') },
    packs: [{ digest: `sha256:${sha256Hex(pack)}`, size: pack.length }],
    layers: [{ diffId: `sha256:${'3'.repeat(64)}`, split: splitIx }],
    entries,
  };
  return { index, pack, bases };
}

const { index: seedIndex, pack: seedPack, bases } = seedDelta();
const seedBlob = encodeIndex(seedIndex);
const seedJson = JSON.parse(zstdDecompressSync(seedBlob).toString('utf8')) as Record<string, unknown>;

function mutate(buf: Buffer, muts: Array<{ pos: number; val: number; kind: number }>): Buffer {
  let b = Buffer.from(buf);
  for (const m of muts) {
    if (b.length === 0) break;
    const p = m.pos % b.length;
    if (m.kind === 0) b[p] = m.val & 0xff;
    else if (m.kind === 1) b = b.subarray(0, p);
    else b = Buffer.concat([b.subarray(0, p), Buffer.alloc(m.val % 64, m.val & 0xff), b.subarray(p)]);
  }
  return b;
}

/** Structural changes to the index JSON: a field of an entry set to a hostile value. */
const FIELDS = ['o', 's', 'b', 'p', 'off', 'len', 'k'] as const;
const VALUES: unknown[] = [-1, 0, 1, 2 ** 53, 1e300, 'patch', 'zstd', 'raw', 'split-patch', 'x', null, [], {}, '0'.repeat(64), 'f'.repeat(64), 1 << 30, 3.5];
function mutateJson(muts: Array<{ entry: number; field: number; value: number }>): Buffer {
  const j = structuredClone(seedJson) as { entries: Array<Record<string, unknown>>; layers: Array<Record<string, unknown>> };
  for (const m of muts) {
    if (m.entry === 99) { j.layers[0]!.split = VALUES[m.value % VALUES.length]; continue; }
    const e = j.entries[m.entry % j.entries.length]!;
    e[FIELDS[m.field % FIELDS.length]!] = VALUES[m.value % VALUES.length];
  }
  return zstdCompressSync(Buffer.from(JSON.stringify(j)));
}

/** What a client does with a delta: decode, plan, rebuild every entry it can and check it. */
function consume(indexBlob: Buffer, pack: Buffer): 'accepted' | string {
  const ix = decodeIndex(indexBlob);
  const planner = new DeltaPlanner([ix], { object: (h) => bases.has(h), layer: () => false });
  const keys = [...ix.layers.map((l) => layerKey(l.diffId)), ...ix.entries.filter((e) => !e.k.startsWith('split-')).map((e) => e.o)];
  planner.closure(keys);
  for (const e of ix.entries) {
    const packed = pack.subarray(e.off, e.off + e.len);
    if (packed.length !== e.len) continue; // the reader refuses ranges outside the pack (cut short)
    try {
      const base = e.b !== undefined ? bases.get(e.b) : undefined;
      const out = decodeEntry(e, packed, base);
      if (e.k.startsWith('split-')) { if (sha256Hex(out) === e.o) splitRefs(out); }
      else void (toHex(fsverityDigest(out)) === e.o);
    } catch (err) {
      if (!isCowshedError(err)) throw err;
    }
  }
  return 'accepted';
}

const mutArb = fc.array(fc.record({ pos: fc.nat(), val: fc.nat(), kind: fc.nat(2) }), { minLength: 1, maxLength: 6 });
const jsonArb = fc.array(fc.record({ entry: fc.oneof(fc.nat(20), fc.constant(99)), field: fc.nat(), value: fc.nat() }), { minLength: 1, maxLength: 4 });
const inputArb = fc.oneof(
  fc.record({ ix: mutArb.map((m) => mutate(seedBlob, m)), pack: fc.constant(seedPack) }),
  fc.record({ ix: jsonArb.map(mutateJson), pack: fc.constant(seedPack) }),
  fc.record({ ix: fc.constant(seedBlob), pack: mutArb.map((m) => mutate(seedPack, m)) }),
  fc.record({ ix: jsonArb.map(mutateJson), pack: mutArb.map((m) => mutate(seedPack, m)) }),
);

let executions = 0;
let accepted = 0;
const refused: Record<string, number> = {};
const findings: Array<{ kind: string; message: string }> = [];
// The unmutated seed must go all the way through.
consume(seedBlob, seedPack);
fc.assert(fc.property(inputArb, ({ ix, pack }) => {
  executions++;
  try {
    consume(ix, pack);
    accepted++;
  } catch (e) {
    if (isCowshedError(e)) { refused[e.code] = (refused[e.code] ?? 0) + 1; return; }
    findings.push({ kind: e instanceof Error ? e.constructor.name : typeof e, message: e instanceof Error ? e.message : String(e) });
  }
}), { seed: SEED, numRuns: RUNS });
process.stdout.write(`${JSON.stringify({ executions, accepted, refused, findings: findings.slice(0, 20) })}\n`);
