// Hashes the external files of a directory tree (and copies them into a
// digest store) for treeFromDirectory. A big tree is shared between this
// thread and hashing workers (hash-worker.ts), one per further core, in
// batches handed out as threads come free, as mkcomposefs hashes and copies
// on one thread per core; a small one is hashed here (a worker's start-up
// would cost more than it saves).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CowshedError } from '../util/errors.ts';
import type { FsNode } from '../tree/node.ts';
import { FileHasher, asFailure, type HashFailure } from './hash-files.ts';
import type { Batch, Reply } from './hash-worker.ts';

/** One external file: read and hashed once, its digest given to every node (names) of it. */
export interface HashJob { path: Buffer; size: number; nodes: FsNode[] }

export interface HashOptions {
  digestStore?: string;
  /** Threads to hash on, this one included (default: the cores available). */
  threads?: number;
}

/** Below this many bytes in all, everything is hashed on this thread. */
const WORKERS_MIN_BYTES = 32 << 20;
/** A batch: this many bytes or files, whichever comes first. */
const BATCH_BYTES = 4 << 20;
const BATCH_FILES = 64;

const setDigest = (job: HashJob, digest: Uint8Array): void => {
  const hex = Buffer.from(digest).toString('hex');
  const payload = `${hex.slice(0, 2)}/${hex.slice(2)}`;
  for (const n of job.nodes) {
    n.digest = digest;
    n.payload = payload;
  }
};

const toError = (f: HashFailure, cause?: unknown): CowshedError => new CowshedError(f.code, f.message, { cause });

export async function hashFiles(jobs: HashJob[], opts: HashOptions = {}): Promise<void> {
  const batches: HashJob[][] = [];
  let total = 0;
  for (let i = 0; i < jobs.length;) {
    const batch: HashJob[] = [];
    let bytes = 0;
    while (i < jobs.length && batch.length < BATCH_FILES && bytes < BATCH_BYTES) {
      bytes += jobs[i]!.size;
      batch.push(jobs[i++]!);
    }
    total += bytes;
    batches.push(batch);
  }
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  const nWorkers = total < WORKERS_MIN_BYTES ? 0 : Math.min(threads - 1, batches.length - 1);

  const hasher = new FileHasher(opts.digestStore);
  const hashHere = (batch: HashJob[]): void => {
    for (const job of batch) {
      let digest: Buffer;
      try {
        digest = hasher.hash(job.path, job.size);
      } catch (e) {
        throw toError(asFailure(e, job.path), e);
      }
      setDigest(job, new Uint8Array(digest));
    }
  };
  if (nWorkers === 0) {
    for (const b of batches) hashHere(b);
    return;
  }

  let next = 0;
  let failed: CowshedError | undefined;
  // Relative to this module: .ts in a checkout, .js in the package.
  const workerUrl = new URL(import.meta.url.endsWith('.ts') ? './hash-worker.ts' : './hash-worker.js', import.meta.url);
  const workers = Array.from({ length: nWorkers }, () => new Worker(workerUrl, { workerData: { digestStore: opts.digestStore } }));
  const done = workers.map((w) => new Promise<void>((resolveDone) => {
    let current: HashJob[] | undefined;
    const give = (): void => {
      if (failed || next >= batches.length) { current = undefined; resolveDone(); return; }
      current = batches[next++]!;
      // Paths as binary strings: a Buffer would clone its whole (pooled) ArrayBuffer.
      w.postMessage({ paths: current.map((j) => j.path.toString('latin1')), sizes: current.map((j) => j.size) } satisfies Batch);
    };
    w.on('message', (r: Reply) => {
      if ('failure' in r) { failed ??= toError(r.failure); current = undefined; resolveDone(); return; }
      current!.forEach((job, i) => { setDigest(job, r.digests.subarray(i * 32, i * 32 + 32)); });
      give();
    });
    w.on('error', (e) => { failed ??= new CowshedError('EINVAL', `hashing thread: ${e.message}`, { cause: e }); resolveDone(); });
    w.on('exit', () => { if (current) failed ??= new CowshedError('EINVAL', 'hashing thread exited'); resolveDone(); });
    give();
  }));
  try {
    // This thread takes batches too, letting the workers' replies in between.
    while (!failed && next < batches.length) {
      hashHere(batches[next++]!);
      await new Promise<void>((r) => setImmediate(r));
    }
    await Promise.all(done);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  if (failed) throw failed;
}
