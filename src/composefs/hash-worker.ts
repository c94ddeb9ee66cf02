// A hashing thread for hash-pool.ts: takes batches of files, answers with
// their fs-verity digests (32 bytes each, in order), or the first failure.
import { parentPort, workerData } from 'node:worker_threads';
import { FileHasher, asFailure } from './hash-files.ts';

/** Paths are binary strings (one char per byte). */
export interface Batch { paths: string[]; sizes: number[] }
export type Reply = { digests: Uint8Array } | { failure: { code: 'ENOENT' | 'EINVAL' | 'ENOSPC'; message: string } };

const hasher = new FileHasher((workerData as { digestStore?: string }).digestStore);
parentPort!.on('message', (b: Batch) => {
  const digests = new Uint8Array(b.paths.length * 32);
  for (let i = 0; i < b.paths.length; i++) {
    const path = Buffer.from(b.paths[i]!, 'latin1');
    try {
      digests.set(hasher.hash(path, b.sizes[i]!), i * 32);
    } catch (e) {
      parentPort!.postMessage({ failure: asFailure(e, path) } satisfies Reply);
      return;
    }
  }
  parentPort!.postMessage({ digests } satisfies Reply, [digests.buffer]);
});
