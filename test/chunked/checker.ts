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
  /** Regular files (last of a name wins): exact name (bytes as a latin1 string, from the tar-split) → sha256 of content. */
  files: Map<string, string>;
  entries: number;
  chunkEntries: number;
  zerosChunks: number;
  tar: Buffer;
  /** Every entry's exact name (latin1 string of its bytes) and its TOC name, in order. */
  names: Array<{ exact: string; toc: string }>;
}

/**
 * What Go's encoding/json writes for a string of these bytes: each valid
 * UTF-8 sequence as its character, each other byte as U+FFFD.
 */
export function goJsonText(b: Buffer): string {
  const fatal = new TextDecoder('utf-8', { fatal: true });
  let out = '';
  for (let i = 0; i < b.length;) {
    let done = false;
    for (let n = 1; n <= 4 && i + n <= b.length && !done; n++) {
      try {
        const c = fatal.decode(b.subarray(i, i + n));
        if ([...c].length === 1) { out += c; i += n; done = true; }
      } catch { /* not a whole sequence (yet) */ }
    }
    if (!done) { out += '\ufffd'; i++; }
  }
  return out;
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
  const contentsInOrder: Buffer[] = [];
  let chunkEntries = 0;
  let zerosChunks = 0;
  const es = toc.entries;
  const dataEnd = tocOff - 8;
  for (let i = 0; i < es.length; i++) {
    const e = es[i];
    if (e.type === 'chunk') continue;
    if (e.type !== 'reg') continue;
    if (!e.size) continue;
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
    contentsInOrder.push(content);
  }

  // The tar-split (vbatts/tar-split JSON lines) and the file contents rebuild
  // the tar. Its file entries are the TOC's, in order: the name exactly
  // (`name`, or `name_raw` in base64 when not UTF-8), the TOC's as Go
  // writes it.
  const parts: Buffer[] = [];
  const lines = ts.toString().split('\n');
  assert.equal(lines.pop(), '', 'tar-split ends with a newline');
  const tocFiles = es.filter((e) => e.type !== 'chunk');
  const names: Checked['names'] = [];
  const byExact = new Map<string, string>();
  for (const [pos, line] of lines.entries()) {
    const o = JSON.parse(line) as { type: number; name?: string; name_raw?: string; size?: number; payload: string | null; position: number };
    assert.equal(o.position, pos);
    if (o.type === 2) parts.push(Buffer.from(o.payload!, 'base64'));
    else {
      assert.equal(o.type, 1);
      const raw = o.name_raw !== undefined ? Buffer.from(o.name_raw, 'base64') : Buffer.from(o.name!, 'utf8');
      if (o.name_raw !== undefined) {
        assert.equal(o.name, undefined, 'name_raw replaces name');
        assert.throws(() => new TextDecoder('utf-8', { fatal: true }).decode(raw), 'name_raw only for names that are not UTF-8');
      }
      const t = tocFiles[names.length];
      assert.ok(t, `tar-split entry ${pos} has a TOC entry`);
      const exact = raw.toString('latin1');
      assert.equal(t.name, goJsonText(raw), `TOC name of tar-split entry ${pos}`);
      names.push({ exact, toc: t.name });
      if (t.type === 'reg') byExact.set(exact, t.digest ?? sha(Buffer.alloc(0)));
      if (o.size) {
        assert.equal(t.type, 'reg', `tar-split file ${pos} is a file in the TOC`);
        const c = contentsInOrder.shift();
        assert.ok(c && c.length === o.size, `tar-split file ${pos} has the size of its TOC file`);
        assert.equal(Buffer.from(o.payload!, 'base64').length, 8, 'crc64');
        parts.push(c);
      } else {
        assert.ok(t.type !== 'reg' || !t.size, `tar-split entry ${pos} is empty, as in the TOC`);
      }
    }
  }
  assert.equal(names.length, tocFiles.length, 'as many entries in the tar-split as in the TOC');
  const rebuilt = Buffer.concat(parts);
  assert.equal(sha(rebuilt), diffId, 'tar-split + contents = the tar');

  // zstd -d of the whole blob: every frame, skippable ones skipped.
  const tar = execFileSync('zstd', ['-d', '-c', '-q'], { input: blob, maxBuffer: 1 << 30 });
  assert.equal(sha(tar), diffId, 'zstd -d of the blob gives the diff ID');
  // The tar headers name the entries as the tar-split does (GNU tar lists the rebuilt tar).
  const listed = execFileSync('tar', ['--quoting-style=literal', '-tf', '-'], { input: rebuilt, maxBuffer: 1 << 30, env: { ...process.env, LC_ALL: 'C' } });
  assert.deepEqual(listed.toString('latin1').split('\n').slice(0, -1), names.map((n) => n.exact), 'tar-split names = tar header names');
  return { files: byExact, entries: es.length, chunkEntries, zerosChunks, tar, names };
}
