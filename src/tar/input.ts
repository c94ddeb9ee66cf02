// Byte sources the tar reader pulls from: a stream (layers arriving from a
// decompressor or the network) or a file on disk (archives we index without
// reading the member bodies). Both keep memory bounded: a stream holds at most
// the chunk it is currently handing out, a file is read with pread.
import { open, type FileHandle } from 'node:fs/promises';

export interface ByteInput {
  /** Offset of the next byte to be read, counted from the start of the input. */
  readonly position: number;
  /** Exactly `n` bytes, or fewer only when the input ends first. May be a view: use it before the next call. */
  read(n: number): Promise<Buffer>;
  /** The next 1..`max` bytes, whatever is at hand; an empty buffer only at the end of the input. */
  readChunk(max: number): Promise<Buffer>;
  /** Drops `n` bytes; returns how many were dropped (fewer only at the end of the input). */
  skip(n: number): Promise<number>;
}

const EMPTY = Buffer.alloc(0);

/** A ByteInput over an async iterable of chunks. */
export class StreamInput implements ByteInput {
  private readonly it: AsyncIterator<Uint8Array>;
  private cur: Buffer = EMPTY;
  private off = 0;
  private ended = false;
  position = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Makes sure the current chunk has unread bytes; false at the end of the input. */
  private async fill(): Promise<boolean> {
    while (this.off >= this.cur.length) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        this.cur = EMPTY;
        this.off = 0;
        return false;
      }
      const v = r.value;
      this.cur = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      this.off = 0;
    }
    return true;
  }

  async readChunk(max: number): Promise<Buffer> {
    if (max <= 0 || !(await this.fill())) return EMPTY;
    const n = Math.min(max, this.cur.length - this.off);
    const out = this.cur.subarray(this.off, this.off + n);
    this.off += n;
    this.position += n;
    return out;
  }

  async read(n: number): Promise<Buffer> {
    if (!(await this.fill())) return EMPTY;
    if (this.cur.length - this.off >= n) return this.readChunk(n);
    // Spans chunks: copy into a buffer of its own (only small reads get here:
    // headers and metadata records, whose size the reader caps).
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      const c = await this.readChunk(n - got);
      if (c.length === 0) break;
      c.copy(out, got);
      got += c.length;
    }
    return got === n ? out : out.subarray(0, got);
  }

  async skip(n: number): Promise<number> {
    let done = 0;
    while (done < n) {
      const c = await this.readChunk(n - done);
      if (c.length === 0) break;
      done += c.length;
    }
    return done;
  }

  /** Lets the source release what it holds (a file stream closes its descriptor). */
  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      await this.it.return?.();
    }
  }
}

const FILE_CHUNK = 256 * 1024;

/** A ByteInput over a file, read with pread; skipping is free. Each read returns a fresh buffer. */
export class FileInput implements ByteInput {
  private readonly fh: FileHandle;
  private readonly size: number;
  position = 0;

  private constructor(fh: FileHandle, size: number) {
    this.fh = fh;
    this.size = size;
  }

  static async open(file: string): Promise<FileInput> {
    const fh = await open(file, 'r');
    try {
      const st = await fh.stat();
      return new FileInput(fh, st.size);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(n: number): Promise<Buffer> {
    const want = Math.min(n, this.size - this.position);
    if (want <= 0) return EMPTY;
    const out = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(out, got, want - got, this.position + got);
      if (bytesRead === 0) break; // the file shrank under us
      got += bytesRead;
    }
    this.position += got;
    return out.subarray(0, got);
  }

  readChunk(max: number): Promise<Buffer> {
    return this.read(Math.min(max, FILE_CHUNK));
  }

  async skip(n: number): Promise<number> {
    const done = Math.max(0, Math.min(n, this.size - this.position));
    this.position += done;
    return done;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
