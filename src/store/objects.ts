// The object store: every regular file's content once, named by its fs-verity
// digest, in the composefs digest-store layout objects/XX/<62 hex>.
//
// Durability without an fsync per file: a batch writes new objects into its
// own directory under tmp/, then one syncfs makes them durable, then they are
// renamed into place, then a second syncfs makes the renames durable. Only
// then may the database reference them. A crash leaves garbage in tmp/ or
// unreferenced objects (gc removes them), never a named object with bad bytes.
import { isZeroChunk } from '../util/zeros.ts';
import { ftruncateSync, closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, writeSync, mkdirSync, statSync, readdirSync, createReadStream } from 'node:fs';
import { basename, join } from 'node:path';
import { spawn } from 'node:child_process';
import { crypto } from '../util/builtins.ts';
import { FsVerityHasher, toHex } from '../composefs/fsverity.ts';
import { asSpaceError, fsyncPath, syncFilesystem, writeFileAtomic } from '../util/fs.ts';
import { pidAlive } from './leases.ts';
import { fail } from '../util/errors.ts';

/** Up to this many new objects are fsynced one by one rather than by syncfs. */
const FSYNC_EACH_MAX = 32;
/** Start background writeback after this many new bytes. */
const WRITEBACK_EVERY = 32 << 20;

export const objectRelPath = (hex: string): string => `${hex.slice(0, 2)}/${hex.slice(2)}`;

export class ObjectStore {
  readonly dir: string;
  private readonly tmpRoot: string;

  constructor(dir: string, tmpRoot: string) {
    this.dir = dir;
    this.tmpRoot = tmpRoot;
  }

  /**
   * init() unless done: every open calls this. The fan-out directories are
   * made in order, so when the last one exists they all do (one stat instead
   * of 257 mkdirs on every command); fsck --repair calls init() itself.
   */
  ensure(): void {
    if (!existsSync(join(this.dir, 'ff'))) this.init();
  }

  /** Create objects/00..ff once, so that writers never race on mkdir. */
  init(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    for (let i = 0; i < 256; i++) mkdirSync(join(this.dir, i.toString(16).padStart(2, '0')), { recursive: true, mode: 0o755 });
  }

  path(hex: string): string {
    return join(this.dir, objectRelPath(hex));
  }

  has(hex: string): boolean {
    return existsSync(this.path(hex));
  }

  size(hex: string): number | undefined {
    try { return statSync(this.path(hex)).size; } catch { return undefined; }
  }

  open(hex: string, start?: number, end?: number): AsyncIterable<Uint8Array> {
    if (!/^[0-9a-f]{64}$/.test(hex)) fail('EINVAL', `bad object digest: ${hex}`);
    return createReadStream(this.path(hex), { start, end });
  }

  /** Re-hash an object; returns its real digest (or undefined if missing). */
  async verify(hex: string): Promise<string | undefined> {
    if (!this.has(hex)) return undefined;
    const h = new FsVerityHasher();
    for await (const chunk of this.open(hex)) h.update(chunk as Uint8Array);
    return toHex(h.digest());
  }

  /** All object digests on disk (for fsck and gc). */
  *list(): Generator<string> {
    for (const d of readdirSync(this.dir)) {
      if (!/^[0-9a-f]{2}$/.test(d)) continue;
      for (const f of readdirSync(join(this.dir, d))) yield d + f;
    }
  }

  /** A batch; `name` gives its directory a name another run can find (resumable layers). */
  batch(name?: string): ObjectBatch {
    return new ObjectBatch(this, join(this.tmpRoot, `objects-${process.pid}-${name ?? crypto().randomBytes(6).toString('hex')}`));
  }

  /**
   * Take over the staged objects of a batch named `name` that a killed
   * process left behind, if one holds `marker` (written when it was complete):
   * renamed to this process (only one process wins a rename), every object
   * re-hashed, and handed back with the marker's contents.
   */
  async adopt(name: string, marker: string): Promise<{ batch: ObjectBatch; marker: Buffer } | undefined> {
    const re = new RegExp(`^objects-(\\d+)-${name}$`);
    for (const entry of readdirSync(this.tmpRoot)) {
      const m = re.exec(entry);
      if (!m || pidAlive(Number(m[1]))) continue;
      const mine = join(this.tmpRoot, `objects-${process.pid}-${name}`);
      try { renameSync(join(this.tmpRoot, entry), mine); } catch { continue; }
      const batch = new ObjectBatch(this, mine);
      try {
        const content = readFileSync(join(mine, marker));
        const staged = (JSON.parse(content.toString()) as { staged: Array<[string, string]> }).staged;
        for (const [hex, file] of staged) {
          const h = new FsVerityHasher();
          for await (const chunk of createReadStream(join(mine, file))) h.update(chunk as Uint8Array);
          if (toHex(h.digest()) !== hex) throw new Error(`staged object ${file} is damaged`);
        }
        batch.restore(staged.map(([hex, file]) => [hex, join(mine, file)]));
        return { batch, marker: content };
      } catch {
        batch.discard(); // damaged or half-written: start over
        return undefined;
      }
    }
    return undefined;
  }
}

/** New objects written by one operation, made visible together by commit(). */
export class ObjectBatch {
  private readonly store: ObjectStore;
  readonly tmpDir: string;
  private staged = new Map<string, string>(); // hex -> temp path
  private created = false;
  bytesWritten = 0;
  objectsWritten = 0;
  private bytesAtKick = 0;
  private writeback: Promise<void> | undefined;
  /** Temp names: a random prefix per batch, then a counter (a random draw per file showed in the import profile). */
  private readonly prefix = crypto().randomBytes(4).toString('hex');
  private files = 0;

  constructor(store: ObjectStore, tmpDir: string) {
    this.store = store;
    this.tmpDir = tmpDir;
  }

  private tmpPath(): string {
    if (!this.created) { mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 }); this.created = true; }
    return join(this.tmpDir, `${this.prefix}-${this.files++}`);
  }

  /** Objects staged so far, as [digest, file name in tmpDir]. */
  stagedFiles(): Array<[string, string]> {
    return [...this.staged].map(([hex, path]) => [hex, basename(path)]);
  }

  /** Take over files staged by another run (see ObjectStore.adopt). */
  restore(files: Array<[string, string]>): void {
    this.created = true;
    for (const [hex, path] of files) this.staged.set(hex, path);
  }

  /** Write a file into the batch's directory (durably: it marks the batch complete). */
  writeMarker(name: string, data: Uint8Array): void {
    if (!this.created) { mkdirSync(this.tmpDir, { recursive: true, mode: 0o700 }); this.created = true; }
    writeFileAtomic(join(this.tmpDir, name), data);
  }

  /** True when the object is already stored or staged in this batch. */
  has(hex: string): boolean {
    return this.staged.has(hex) || this.store.has(hex);
  }

  /** Stage content already in memory under its digest (skipped when present). */
  putBuffer(hex: string, data: Uint8Array): void {
    if (this.has(hex)) return;
    const tmp = this.tmpPath();
    writeWhole(tmp, [data]);
    this.staged.set(hex, tmp);
    this.bytesWritten += data.length;
    this.objectsWritten++;
    this.kickWriteback();
  }

  /** Start writing content of unknown digest; call finish() with the digest once known. */
  startStream(): StagedStream {
    const tmp = this.tmpPath();
    let fd: number;
    try { fd = openSync(tmp, 'wx', 0o644); } catch (e) { throw asSpaceError(e, 'an object'); }
    let size = 0;
    let written = 0;
    return {
      write: (chunk: Uint8Array) => {
        // Holes of sparse files (util/zeros.ts) stay holes: nothing is written for them.
        if (!isZeroChunk(chunk)) {
          try {
            let off = 0;
            while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off, size + off);
          } catch (e) { throw asSpaceError(e, 'an object'); }
          written = size + chunk.length;
        }
        size += chunk.length;
      },
      finish: (hex: string) => {
        if (written < size) ftruncateSync(fd, size);
        closeSync(fd);
        if (this.has(hex)) { rmSync(tmp, { force: true }); return; }
        this.staged.set(hex, tmp);
        this.bytesWritten += size;
        this.objectsWritten++;
        this.kickWriteback();
      },
      abort: () => { try { closeSync(fd); } catch { /* already closed */ } rmSync(tmp, { force: true }); },
    };
  }

  /**
   * Start writing back what is staged so far, in the background, once a
   * good amount has piled up: the disk then works while we hash and parse,
   * and the syncfs in commit() has little left to wait for.
   */
  private kickWriteback(): void {
    if (this.writeback || this.bytesWritten - this.bytesAtKick < WRITEBACK_EVERY) return;
    this.bytesAtKick = this.bytesWritten;
    const p = spawn('sync', ['-f', this.tmpDir], { stdio: 'ignore' });
    this.writeback = new Promise((resolve) => { p.on('exit', () => resolve()); p.on('error', () => resolve()); });
    void this.writeback.then(() => { this.writeback = undefined; });
  }

  /** Make every staged object durable and visible. */
  async commit(): Promise<void> {
    if (this.staged.size === 0) { this.discard(); return; }
    await this.writeback;
    // A few objects (a commit): fsync each file and directory. Many (an
    // import): one syncfs before and one after the renames is far cheaper.
    const few = this.staged.size <= FSYNC_EACH_MAX;
    if (few) for (const tmp of this.staged.values()) fsyncPath(tmp);
    else syncFilesystem(this.tmpDir);
    const dirs = new Set<string>();
    for (const [hex, tmp] of this.staged) {
      renameSync(tmp, this.store.path(hex));
      dirs.add(hex.slice(0, 2));
    }
    if (few) for (const d of dirs) fsyncPath(join(this.store.dir, d));
    else syncFilesystem(this.store.dir);
    this.staged.clear();
    this.discard();
  }

  /** Drop everything staged (on failure): nothing became visible. */
  discard(): void {
    if (this.created) rmSync(this.tmpDir, { recursive: true, force: true });
    this.staged.clear();
    this.created = false;
  }
}

export interface StagedStream {
  write(chunk: Uint8Array): void;
  finish(hex: string): void;
  abort(): void;
}

function writeWhole(path: string, chunks: Uint8Array[]): void {
  let fd: number;
  try { fd = openSync(path, 'wx', 0o644); } catch (e) { throw asSpaceError(e, 'an object'); }
  try {
    for (const c of chunks) {
      let off = 0;
      while (off < c.length) off += writeSync(fd, c, off, c.length - off);
    }
  } catch (e) {
    throw asSpaceError(e, 'an object');
  } finally {
    closeSync(fd);
  }
}
