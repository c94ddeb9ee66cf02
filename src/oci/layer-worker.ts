// Worker thread: read a layer blob from a file, verify its digest, decompress
// it and verify its diff ID, and hand the plain tar to the main thread in
// transferred chunks. Hashing and stream plumbing then run on the second core
// while the main thread parses the tar and hashes file contents.
import { parentPort, workerData } from 'node:worker_threads';
import { createReadStream } from 'node:fs';
import { decompress } from './compression.ts';
import { verifyDigest } from './digest.ts';
import { isCowshedError } from '../util/errors.ts';
import type { LayerJob, WorkerMessage } from './layer-pipe.ts';

const job = workerData as LayerJob;
const port = parentPort!;
/** Chunks sent but not yet taken by the main thread: bounds memory. */
const WINDOW = 16;
let inFlight = 0;
let wake: (() => void) | undefined;
port.on('message', (m: string) => {
  if (m === 'ack') {
    inFlight--;
    wake?.();
    wake = undefined;
  }
});

const post = (m: WorkerMessage, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer);

async function* blob(): AsyncGenerator<Uint8Array> {
  if (job.size === 0) return;
  yield* createReadStream(job.file, { start: job.start, end: job.start + job.size - 1, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
}

async function main(): Promise<void> {
  try {
    const verified = verifyDigest(blob(), job.digest, job.what, job.size);
    const tar = decompress(verified, job.what);
    const out = job.digest === job.diffId ? tar : verifyDigest(tar, job.diffId, `${job.what} diff ID`);
    for await (const chunk of out) {
      while (inFlight >= WINDOW) await new Promise<void>((r) => { wake = r; });
      inFlight++;
      // Transfer the memory when the chunk owns all of it, else copy once.
      const own = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
      const data = own ? chunk : Uint8Array.from(chunk);
      post({ chunk: data }, [data.buffer as ArrayBuffer]);
    }
    post({ done: true });
  } catch (e) {
    post({ error: isCowshedError(e) ? { code: e.code, message: e.message } : { message: e instanceof Error ? e.message : String(e) } });
  }
}

void main();
