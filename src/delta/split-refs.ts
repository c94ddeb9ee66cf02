// What a delta needs from tar-split records (format: src/tar/split.ts): the
// uncompressed record of a stored layer (the bytes deltas patch against) and
// the objects a record refers to, in order, without rebuilding the tar.
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Store } from '../store/store.ts';
import { CowshedError } from '../util/errors.ts';
import { MAX_SPLIT_SIZE } from './format.ts';

const MAGIC = Buffer.from('CWTS\x01', 'latin1');

/** A stored layer's uncompressed tar-split record, by diff ID, or undefined when no image has that layer. */
export function storedSplit(store: Store, diffId: string): Buffer | undefined {
  const row = store.db.get<{ split_digest: string }>('SELECT split_digest FROM layers WHERE diff_id = ? LIMIT 1', diffId);
  if (!row || !store.blobs.has(row.split_digest)) return undefined;
  return gunzipSync(store.blobs.get(row.split_digest), { maxOutputLength: MAX_SPLIT_SIZE });
}

/** The gzip form rebuildTar reads. */
export const gzipSplit = (raw: Uint8Array): Buffer => gzipSync(raw, { level: 1 });

export interface ContentRef { digest: string; size: number }

/** The objects (fs-verity hex and size) an uncompressed record refers to; throws EFORMAT on a malformed record. */
export function splitRefs(raw: Uint8Array): ContentRef[] {
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const bad = (what: string): never => { throw new CowshedError('EFORMAT', `tar-split record: ${what}`); };
  if (b.length < MAGIC.length || !b.subarray(0, MAGIC.length).equals(MAGIC)) bad('unknown format or version');
  let i = MAGIC.length;
  const varint = (): number => {
    let n = 0;
    let scale = 1;
    for (let k = 0; k < 8; k++) {
      if (i >= b.length) bad('truncated number');
      const x = b[i++];
      n += (x & 0x7f) * scale;
      if ((x & 0x80) === 0) return n;
      scale *= 128;
    }
    return bad('bad number');
  };
  const refs: ContentRef[] = [];
  for (;;) {
    if (i >= b.length) bad('no end segment');
    const tag = b[i++];
    if (tag === 0x52) { const n = varint(); i += n; if (i > b.length) bad('truncated raw segment'); }
    else if (tag === 0x5a) varint();
    else if (tag === 0x43) {
      const size = varint();
      if (i + 32 > b.length) bad('truncated digest');
      refs.push({ digest: b.subarray(i, i + 32).toString('hex'), size });
      i += 32;
    } else if (tag === 0x45) { varint(); return refs; }
    else bad(`unknown segment tag 0x${tag.toString(16)}`);
  }
}
