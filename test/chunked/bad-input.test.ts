// Bad zstd:chunked input for the partial-pull planner: each refused with a
// typed one-line error naming the layer and the problem, before a byte of
// the layer is handed on (so the puller can fall back to a whole-layer
// pull). The blobs are a real one cowshed writes, taken apart and put back
// together here with node's zstd, with one thing wrong each time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { compressZstdChunked } from '../../src/chunked/writer.ts';
import { planPartial, type PartialSource } from '../../src/chunked/partial.ts';
import { isCowshedError } from '../../src/util/errors.ts';

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const WHAT = 'layer 1 (sha256:feedface)';

interface Parts { data: Buffer; toc: { entries: Array<Record<string, unknown>>; tarSplitDigest?: string; version: number }; split: string }

function skippable(b: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50, 0);
  h.writeUInt32LE(b.length, 4);
  return Buffer.concat([h, b]);
}

/** Puts a blob together from its parts; `tweak` may change the finished annotations or footer. */
function assemble(p: Parts, tweak: { resignSplit?: boolean; footer?: (f: Buffer) => void } = {}): { blob: Buffer; annotations: Record<string, string> } {
  const splitJson = Buffer.from(p.split);
  const splitZ = zstdCompressSync(splitJson);
  const toc = { ...p.toc, tarSplitDigest: tweak.resignSplit === false ? p.toc.tarSplitDigest : sha(splitZ) };
  const tocJson = Buffer.from(JSON.stringify(toc));
  const tocZ = zstdCompressSync(tocJson);
  const tocOff = p.data.length + 8;
  const splitOff = tocOff + tocZ.length + 8;
  const f = Buffer.alloc(64);
  [tocOff, tocZ.length, tocJson.length, 1, splitOff, splitZ.length, splitJson.length].forEach((v, i) => f.writeBigUInt64LE(BigInt(v), i * 8));
  f.write('GNUlInUx', 56, 'latin1');
  tweak.footer?.(f);
  return {
    blob: Buffer.concat([p.data, skippable(tocZ), skippable(splitZ), skippable(f)]),
    annotations: {
      'io.github.containers.zstd-chunked.manifest-checksum': sha(tocZ),
      'io.github.containers.zstd-chunked.manifest-position': `${tocOff}:${tocZ.length}:${tocJson.length}:1`,
      'io.github.containers.zstd-chunked.tarsplit-position': `${splitOff}:${splitZ.length}:${splitJson.length}`,
    },
  };
}

test('bad zstd:chunked input: one typed line naming the layer and the problem, nothing handed on', async () => {
  const work = tempDir('cowshed-chunked-bad-');
  try {
    const root = join(work, 'root');
    mkdirSync(root);
    for (let i = 0; i < 12; i++) writeFileSync(join(root, `f${i}`), pseudoRandomBytes(1000 + i * 5000, i + 1));
    const tar = execFileSync('tar', ['--format=pax', '--sort=name', '-C', root, '-cf', '-', '.'], { maxBuffer: 1 << 26 });
    const parts: Uint8Array[] = [];
    for await (const c of compressZstdChunked((async function* () { yield tar; })(), {})) parts.push(c);
    const good = Buffer.concat(parts);
    const f = good.subarray(good.length - 64);
    const at = (i: number): number => Number(f.readBigUInt64LE(i * 8));
    const base: Parts = {
      data: good.subarray(0, at(0) - 8),
      toc: JSON.parse(zstdDecompressSync(good.subarray(at(0), at(0) + at(1))).toString()) as Parts['toc'],
      split: zstdDecompressSync(good.subarray(at(4), at(4) + at(5))).toString(),
    };
    const contents = new Map<string, Buffer>();
    for (const name of readdirSync(root)) { const b = readFileSync(join(root, name)); contents.set(sha(b), b); }
    // The store holds every file but f3 (fetched from the blob).
    const withheld = sha(readFileSync(join(root, 'f3')));
    const clone = (): Parts => JSON.parse(JSON.stringify({ ...base, data: undefined })) as Parts;
    const source = (blob: Buffer, annotations: Record<string, string>): PartialSource => ({
      what: WHAT, digest: sha(blob), size: blob.length, annotations, tmpDir: work,
      async fetch(ranges, put) { for (const r of ranges) put(r.start, blob.subarray(r.start, r.end)); return false; },
      lookup: (files) => new Map(files.filter((x) => x.digest !== withheld && contents.has(x.digest)).map((x) => [x.digest, x.digest])),
      async *openObject(hex) { yield contents.get(hex)!; },
    });
    const run = async (blob: Buffer, annotations: Record<string, string>): Promise<Buffer> => {
      const plan = await planPartial(source(blob, annotations));
      try {
        assert.equal(plan.method, 'partial');
        const out: Uint8Array[] = [];
        for await (const c of plan.tar!()) out.push(c);
        return Buffer.concat(out);
      } finally { plan.close(); }
    };
    const refused = async (name: string, blob: Buffer, annotations: Record<string, string>, re: RegExp): Promise<void> => {
      await assert.rejects(run(blob, annotations), (e: unknown) => {
        assert.ok(isCowshedError(e), `${name}: a typed error, got ${String(e)}`);
        assert.ok(e.message.startsWith(`${WHAT}: `), `${name}: names the layer: ${e.message}`);
        assert.match(e.message, re, name);
        assert.ok(!e.message.includes('\n'), `${name}: one line`);
        return true;
      }, name);
    };

    // The good blob, put back together, rebuilds the tar exactly, fetching only f3.
    const ok = assemble({ ...clone(), data: base.data });
    assert.deepEqual(await run(ok.blob, ok.annotations), tar);
    const plan = await planPartial(source(ok.blob, ok.annotations));
    assert.equal(plan.filesFetched, 1);
    assert.equal(plan.filesFound, 11);
    plan.close();

    const reg = (p: Parts, name: string): Record<string, unknown> => p.toc.entries.find((e) => e.type === 'reg' && e.name === name)!;
    let p = clone();
    const wrongToc = { ...ok.annotations, 'io.github.containers.zstd-chunked.manifest-checksum': sha(Buffer.from('x')) };
    await refused('TOC digest', ok.blob, wrongToc, /the TOC does not match its digest/);

    p = clone();
    p.toc.tarSplitDigest = sha(Buffer.from('other'));
    let b = assemble({ ...p, data: base.data }, { resignSplit: false });
    await refused('tar-split digest', b.blob, b.annotations, /the tar-split does not match its digest/);

    p = clone();
    reg(p, './f5').name = './renamed';
    b = assemble({ ...p, data: base.data });
    await refused('entries disagree', b.blob, b.annotations, /the tar-split names "\.\/f5", which the TOC does not have/);

    p = clone();
    reg(p, './f7').endOffset = base.data.length + 100;
    b = assemble({ ...p, data: base.data });
    await refused('offset outside the blob', b.blob, b.annotations, /outside the data of the blob/);

    p = clone();
    reg(p, './f8').offset = reg(p, './f7').offset;
    b = assemble({ ...p, data: base.data });
    await refused('overlapping offsets', b.blob, b.annotations, /overlaps the data before it/);

    const [tocOff, tocLen] = ok.annotations['io.github.containers.zstd-chunked.manifest-position'].split(':').map(Number);
    await refused('TOC over 150 MiB', ok.blob, { ...ok.annotations, 'io.github.containers.zstd-chunked.manifest-position': `${tocOff}:${tocLen}:${151 << 20}:1` }, /the TOC is bigger than 150 MiB/);
    await refused('annotation outside the blob', ok.blob, { ...ok.annotations, 'io.github.containers.zstd-chunked.manifest-position': `${ok.blob.length}:${tocLen}:10:1` }, /outside the blob/);

    b = assemble({ ...clone(), data: base.data }, { footer: (ft) => ft.writeBigUInt64LE(ft.readBigUInt64LE(0) + 1n, 0) });
    await refused('lying footer', b.blob, b.annotations, /footer disagrees with the layer annotations/);
    b = assemble({ ...clone(), data: base.data }, { footer: (ft) => ft.write('GnUlInUx', 56, 'latin1') });
    await refused('footer without magic', b.blob, b.annotations, /no zstd:chunked footer magic/);

    // Wrong bytes where f3's frames are: they no longer decode to its digest.
    const f3 = reg(clone(), './f3');
    const damaged = Buffer.from(ok.blob);
    damaged[Math.floor(((f3.offset as number) + (f3.endOffset as number)) / 2)] ^= 0x40;
    await refused('wrong range bytes', damaged, ok.annotations, /"\.\/f3" (does not match its digest|do not decode|hold)/);

    p = clone();
    reg(p, './f3').digest = sha(Buffer.from('not f3'));
    b = assemble({ ...p, data: base.data });
    await refused('file not matching its digest', b.blob, b.annotations, /"\.\/f3" does not match its digest/);
  } finally {
    removeTree(work);
  }
});
