// fs-verity SHA-256 digest (4096-byte blocks, no salt), computed in userspace
// exactly as the kernel and `fsverity digest` do. Objects and composefs images
// are named by it. Streaming: feed chunks of any size; memory stays bounded
// (one 4 KiB block per tree level).
import { isZeroChunk } from '../util/zeros.ts';
import { crypto } from '../util/builtins.ts';

const BLOCK = 4096;

let hash: typeof import('node:crypto').hash | undefined;
const sha256 = (b: Uint8Array): Buffer => (hash ??= crypto().hash)('sha256', b, 'buffer');

/**
 * One level of the Merkle tree. The last full block of a level is held back
 * until something follows it: if nothing does and it is the level's only
 * block, its hash is the root rather than an entry of the level above.
 */
interface Level { buf: Buffer; len: number; emitted: number }
const newLevel = (): Level => ({ buf: Buffer.alloc(BLOCK), len: 0, emitted: 0 });

export class FsVerityHasher {
  private data = newLevel();
  /** levels[0] holds digests of data blocks, levels[1] digests of levels[0] blocks, ... */
  private levels: Level[] = [];
  private total = 0;

  update(chunk: Uint8Array): this {
    this.total += chunk.length;
    const d = this.data;
    const zero = isZeroChunk(chunk);
    let off = 0;
    while (off < chunk.length) {
      if (d.len === BLOCK) { // a held-back block, and more data follows it
        this.addDigest(0, sha256(d.buf));
        d.emitted++;
        d.len = 0;
      }
      if (d.len === 0 && chunk.length - off > BLOCK) {
        // Fast path: hash whole blocks in place while more bytes follow them
        // (a hole of a sparse file: one digest for every zero block).
        this.addDigest(0, zero ? (ZERO_BLOCK_DIGEST ??= sha256(Buffer.alloc(BLOCK))) : sha256(chunk.subarray(off, off + BLOCK)));
        d.emitted++;
        off += BLOCK;
        continue;
      }
      const n = Math.min(BLOCK - d.len, chunk.length - off);
      d.buf.set(chunk.subarray(off, off + n), d.len);
      d.len += n;
      off += n;
    }
    return this;
  }

  private addDigest(level: number, digest: Buffer): void {
    const l = (this.levels[level] ??= newLevel());
    if (l.len === BLOCK) {
      this.addDigest(level + 1, sha256(l.buf));
      l.emitted++;
      l.len = 0;
    }
    digest.copy(l.buf, l.len);
    l.len += digest.length;
  }

  /** The root hash of the Merkle tree (all zeros for an empty file). */
  rootHash(): Buffer {
    if (this.total === 0) return Buffer.alloc(32);
    const d = this.data;
    d.buf.fill(0, d.len);
    if (d.emitted === 0) return sha256(d.buf); // one data block: its hash is the root
    this.addDigest(0, sha256(d.buf));
    for (let i = 0; ; i++) {
      const l = this.levels[i]!;
      l.buf.fill(0, l.len);
      if (l.emitted === 0 && this.levels.length === i + 1) return sha256(l.buf);
      this.addDigest(i + 1, sha256(l.buf));
      l.emitted++;
      l.len = 0;
      // A level that has just emitted its last block is done; move up.
    }
  }

  /** The 32-byte fs-verity file digest. Call once; the hasher is spent after. */
  digest(): Buffer {
    const desc = Buffer.alloc(256);
    desc[0] = 1; // version
    desc[1] = 1; // hash algorithm: SHA-256
    desc[2] = 12; // log2(block size)
    desc[3] = 0; // salt size
    desc.writeBigUInt64LE(BigInt(this.total), 8);
    this.rootHash().copy(desc, 16);
    return sha256(desc);
  }

  get size(): number { return this.total; }
}

/**
 * The fs-verity digest of bytes in memory, in one pass per tree level: each
 * level's digests go straight into one reused buffer (no per-block Buffer:
 * digests come back as binary (latin1) strings, which cost V8 far less to make).
 */
export function fsverityDigest(data: Uint8Array): Buffer {
  const size = data.length;
  const desc = Buffer.alloc(256);
  desc[0] = 1; // version
  desc[1] = 1; // hash algorithm: SHA-256
  desc[2] = 12; // log2(block size)
  desc.writeBigUInt64LE(BigInt(size), 8);
  if (size > 0) desc.write(rootOf(data), 16, 32, 'latin1');
  return sha256(desc);
}

let levelBuf = Buffer.alloc(0);
const lastBlock = Buffer.alloc(BLOCK);

/** The Merkle root of non-empty data, as a latin1 string of 32 bytes. */
function rootOf(data: Uint8Array): string {
  const h = (hash ??= crypto().hash);
  const view = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let level: Buffer = view;
  let len = view.length;
  for (;;) {
    const blocks = Math.ceil(len / BLOCK);
    if (blocks === 1) {
      // The level's only block is the root (zero-padded).
      lastBlock.fill(0, level.copy(lastBlock, 0, 0, len));
      return h('sha256', lastBlock, 'binary');
    }
    const outLen = blocks * 32;
    // Each level hashes into the lower half or upper half of a scratch buffer, never the one it reads.
    const need = Math.ceil(outLen / BLOCK) * BLOCK;
    const reuseUpper = level !== view && level.byteOffset === levelBuf.byteOffset;
    if (levelBuf.length < 2 * need) levelBuf = Buffer.alloc(Math.max(2 * need, 2 * levelBuf.length));
    const out = reuseUpper ? levelBuf.subarray(levelBuf.length >> 1) : levelBuf.subarray(0, levelBuf.length >> 1);
    const full = Math.floor(len / BLOCK);
    for (let i = 0; i < full; i++) {
      out.write(h('sha256', level.subarray(i * BLOCK, (i + 1) * BLOCK), 'binary'), i * 32, 32, 'latin1');
    }
    if (full < blocks) {
      lastBlock.fill(0, level.copy(lastBlock, 0, full * BLOCK, len));
      out.write(h('sha256', lastBlock, 'binary'), full * 32, 32, 'latin1');
    }
    level = out;
    len = outLen;
  }
}

let ZERO_BLOCK_DIGEST: Buffer | undefined;

export const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
