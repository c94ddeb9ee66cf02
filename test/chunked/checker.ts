// An independent reader of zstd:chunked blobs, written from the format as
// containers/storage documents it (pkg/chunked/internal/minimal), sharing no
// code with cowshed: it judges what cowshed writes. Decompression is node's
// zstd (one frame at a time) and `zstd -d` for the whole blob.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { zstdDecompressSync } from 'node:zlib';

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface Checked {
  /** Regular files (last of a name wins): name → sha256 of content. */
  files: Map<string, string>;
  entries: number;
  chunkEntries: number;
  zerosChunks: number;
  tar: Buffer;
}

interface Entry {
  type: string; name: string; size?: number; digest?: string; offset?: number; endOffset?: number;
  chunkSize?: number; chunkOffset?: number; chunkDigest?: string; chunkType?: string;
}

/**
 * Checks a zstd:chunked blob against its annotations and its diff ID:
 * footer, annotations, TOC digest, every file's frames decoding to its
 * digest (and every chunk to its chunk digest), the tar-split rebuilding
 * the tar, and `zstd -d` of the whole blob giving the diff ID.
 */
export function checkZstdChunked(blob: Buffer, annotations: Record<string, string>, diffId: string): Checked {
  // Footer: the last skippable frame, 64 bytes.
  const fh = blob.subarray(blob.length - 72, blob.length - 64);
  assert.deepEqual([...fh.subarray(0, 4)], [0x50, 0x2a, 0x4d, 0x18], 'footer skippable frame magic');
  assert.equal(fh.readUInt32LE(4), 64, 'footer frame length');
  const f = blob.subarray(blob.length - 64);
  assert.equal(f.subarray(56).toString('latin1'), 'GNUlInUx');
  const n = (i: number): number => Number(f.readBigUInt64LE(i * 8));
  const [tocOff, tocLen, tocRaw, type, tsOff, tsLen, tsRaw] = [0, 1, 2, 3, 4, 5, 6].map(n);
  assert.equal(type, 1);
  assert.equal(annotations['io.github.containers.zstd-chunked.manifest-position'], `${tocOff}:${tocLen}:${tocRaw}:1`);
  assert.equal(annotations['io.github.containers.zstd-chunked.tarsplit-position'], `${tsOff}:${tsLen}:${tsRaw}`);
  // Each sits in a skippable frame of its own length, TOC then tar-split then footer.
  for (const [off, len] of [[tocOff, tocLen], [tsOff, tsLen]]) {
    assert.equal(blob.readUInt32LE(off - 8), 0x184d2a50);
    assert.equal(blob.readUInt32LE(off - 4), len);
  }
  assert.equal(tsOff, tocOff + tocLen + 8);
  assert.equal(blob.length - 72, tsOff + tsLen);
  const tocZ = blob.subarray(tocOff, tocOff + tocLen);
  assert.equal(annotations['io.github.containers.zstd-chunked.manifest-checksum'], sha(tocZ), 'TOC digest');
  const tocJson = zstdDecompressSync(tocZ);
  assert.equal(tocJson.length, tocRaw);
  const toc = JSON.parse(tocJson.toString()) as { version: number; entries: Entry[]; tarSplitDigest: string };
  assert.equal(toc.version, 1);
  const tsZ = blob.subarray(tsOff, tsOff + tsLen);
  assert.equal(toc.tarSplitDigest, sha(tsZ), 'tar-split digest in the TOC');
  const ts = zstdDecompressSync(tsZ);
  assert.equal(ts.length, tsRaw);

  // Every file's frames decode to its content digest.
  const files = new Map<string, string>();
  const contents = new Map<string, Buffer>();
  let chunkEntries = 0;
  let zerosChunks = 0;
  const es = toc.entries;
  const dataEnd = tocOff - 8;
  for (let i = 0; i < es.length; i++) {
    const e = es[i];
    if (e.type === 'chunk') continue;
    if (e.type !== 'reg') continue;
    if (!e.size) { files.set(e.name, sha(Buffer.alloc(0))); contents.set(e.name, Buffer.alloc(0)); continue; }
    const chunks: Entry[] = [e];
    while (es[i + 1]?.type === 'chunk') { assert.equal(es[i + 1].name, e.name); chunks.push(es[++i]); }
    assert.ok(e.endOffset! <= dataEnd && e.offset! < e.endOffset!, `${e.name}: range inside the data`);
    let content: Buffer;
    if (chunks.length === 1) {
      assert.equal(e.chunkSize, undefined);
      content = zstdDecompressSync(blob.subarray(e.offset, e.endOffset));
    } else {
      chunkEntries += chunks.length - 1;
      const parts: Buffer[] = [];
      let at = 0;
      for (let k = 0; k < chunks.length; k++) {
        const c = chunks[k];
        const end = k + 1 < chunks.length ? chunks[k + 1].offset! : e.endOffset!;
        assert.equal(c.chunkOffset ?? 0, at, `${e.name}: chunk ${k} offset`);
        const part = zstdDecompressSync(blob.subarray(c.offset, end));
        assert.equal(part.length, c.chunkSize, `${e.name}: chunk ${k} size`);
        assert.equal(sha(part), c.chunkDigest, `${e.name}: chunk ${k} digest`);
        if (c.chunkType === 'zeros') { zerosChunks++; assert.ok(part.every((b) => b === 0)); }
        parts.push(part);
        at += part.length;
      }
      content = Buffer.concat(parts);
    }
    assert.equal(content.length, e.size, `${e.name}: size`);
    assert.equal(sha(content), e.digest, `${e.name}: content digest`);
    files.set(e.name, e.digest!);
    contents.set(e.name, content);
  }

  // The tar-split (vbatts/tar-split JSON lines) and the file contents rebuild the tar.
  const parts: Buffer[] = [];
  const lines = ts.toString().split('\n');
  assert.equal(lines.pop(), '', 'tar-split ends with a newline');
  for (const [pos, line] of lines.entries()) {
    const o = JSON.parse(line) as { type: number; name?: string; size?: number; payload: string | null; position: number };
    assert.equal(o.position, pos);
    if (o.type === 2) parts.push(Buffer.from(o.payload!, 'base64'));
    else {
      assert.equal(o.type, 1);
      if (o.size) {
        const c = contents.get(o.name!);
        assert.ok(c, `tar-split file ${o.name} is in the TOC`);
        assert.equal(c.length, o.size);
        assert.equal(Buffer.from(o.payload!, 'base64').length, 8, 'crc64');
        parts.push(c);
      }
    }
  }
  const rebuilt = Buffer.concat(parts);
  assert.equal(sha(rebuilt), diffId, 'tar-split + contents = the tar');

  // zstd -d of the whole blob: every frame, skippable ones skipped.
  const tar = execFileSync('zstd', ['-d', '-c', '-q'], { input: blob, maxBuffer: 1 << 30 });
  assert.equal(sha(tar), diffId, 'zstd -d of the blob gives the diff ID');
  return { files, entries: es.length, chunkEntries, zerosChunks, tar };
}
