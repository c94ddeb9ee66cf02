// Shared helpers for the OCI tests: running the real tools, temp dirs,
// draining streams, and expecting typed errors.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { isCowshedError, type ErrorCode } from '../../src/util/errors.ts';

const execFileP = promisify(execFile);

export async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { cwd: opts.cwd, maxBuffer: 64 << 20 });
  return stdout;
}

export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `cowshed-${prefix}-`));
}

export async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of source) chunks.push(c);
  return Buffer.concat(chunks);
}

/** sha256:<hex> of a stream, and its length, without keeping it. */
export async function streamDigest(source: AsyncIterable<Uint8Array>): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of source) { h.update(c); size += c.length; }
  return { digest: 'sha256:' + h.digest('hex'), size };
}

export async function* chunksOf(data: Uint8Array, size = 1000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

/** Asserts that `p` rejects with a CowshedError of `code` whose message matches `message`. */
export async function rejectsWith(p: Promise<unknown> | (() => Promise<unknown>), code: ErrorCode, message?: RegExp): Promise<Error> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  assert.ok(err !== undefined, `expected a ${code} error, got success`);
  assert.ok(isCowshedError(err), `expected a CowshedError ${code}, got ${String(err)}${err instanceof Error ? '\n' + err.stack : ''}`);
  assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
}

export function throwsWith(fn: () => unknown, code: ErrorCode, message?: RegExp): Error {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  assert.ok(err !== undefined, `expected a ${code} error, got success`);
  assert.ok(isCowshedError(err), `expected a CowshedError ${code}, got ${String(err)}${err instanceof Error ? '\n' + err.stack : ''}`);
  assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
}
