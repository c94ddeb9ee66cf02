// The main thread's side of layer-worker.ts: an async iterable of the plain
// tar of a layer blob stored in a file, decompressed and verified on a worker
// thread. Used for big layers only: a worker costs a few tens of ms to start.
import { Worker } from 'node:worker_threads';
import { CowshedError, type ErrorCode } from '../util/errors.ts';

export interface LayerJob {
  file: string;
  start: number;
  size: number;
  digest: string;
  diffId: string;
  what: string;
}

export type WorkerMessage =
  | { chunk: Uint8Array }
  | { done: true }
  | { error: { code?: ErrorCode; message: string } };

/** Layers at least this big are read on a worker thread. */
export const WORKER_MIN_SIZE = 8 << 20;

/** layer-worker.ts from source (a checkout), layer-worker.js from the built package (dist/). */
const WORKER = new URL(import.meta.url.endsWith('.ts') ? './layer-worker.ts' : './layer-worker.js', import.meta.url);

export async function* tarFromWorker(job: LayerJob): AsyncGenerator<Uint8Array> {
  const worker = new Worker(WORKER, { workerData: job });
  const queue: WorkerMessage[] = [];
  let notify: (() => void) | undefined;
  let exitError: Error | undefined;
  const push = (m: WorkerMessage): void => {
    queue.push(m);
    notify?.();
    notify = undefined;
  };
  worker.on('message', push);
  worker.on('error', (e) => { exitError = e; notify?.(); });
  worker.on('exit', (code) => {
    if (code !== 0 && !exitError) exitError = new Error(`layer worker exited with code ${code}`);
    notify?.();
  });
  try {
    for (;;) {
      while (queue.length === 0) {
        if (exitError) throw exitError;
        await new Promise<void>((r) => { notify = r; });
      }
      const m = queue.shift()!;
      if ('chunk' in m) {
        yield m.chunk;
        worker.postMessage('ack');
      } else if ('done' in m) {
        return;
      } else {
        throw m.error.code ? new CowshedError(m.error.code, m.error.message) : new Error(m.error.message);
      }
    }
  } finally {
    await worker.terminate();
  }
}
