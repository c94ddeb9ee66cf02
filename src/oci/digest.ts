// Content digests. Digests become file names (blobs/sha256/<hex>), so only the
// exact form `sha256:<64 lowercase hex>` is accepted: nothing that could
// carry a slash or "..".

import { crypto } from '../util/builtins.ts';
import { CowshedError } from '../util/errors.ts';

export const SHA256_PREFIX = 'sha256:';
const SHA256_RE = /^sha256:[0-9a-f]{64}$/;
// OCI's grammar for any algorithm: used only to tell "other algorithm" from "garbage".
const ANY_DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface ParsedDigest { algorithm: 'sha256'; hex: string }

function shortForError(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? String(v);
  return JSON.stringify(s.length > 80 ? s.slice(0, 77) + '...' : s);
}

/** Parses `sha256:<hex>`; other algorithms are EUNSUPPORTED, anything else EFORMAT. */
export function parseDigest(value: unknown, what = 'digest'): ParsedDigest {
  if (typeof value === 'string' && SHA256_RE.test(value)) {
    return { algorithm: 'sha256', hex: value.slice(SHA256_PREFIX.length) };
  }
  if (typeof value === 'string' && ANY_DIGEST_RE.test(value) && !value.startsWith(SHA256_PREFIX)) {
    const algorithm = value.slice(0, value.indexOf(':'));
    throw new CowshedError('EUNSUPPORTED', `${what}: digest algorithm ${JSON.stringify(algorithm)} is not supported (only sha256)`);
  }
  throw new CowshedError('EFORMAT', `${what}: invalid digest ${shortForError(value)} (expected sha256:<64 lowercase hex digits>)`);
}

/** Returns the digest unchanged if it is a valid sha256 digest; throws otherwise. */
export function validateDigest(value: unknown, what = 'digest'): string {
  parseDigest(value, what);
  return value as string;
}

export function isDigest(value: unknown): value is string {
  return typeof value === 'string' && SHA256_RE.test(value);
}

export function sha256Hex(data: Uint8Array | string): string {
  return crypto().createHash('sha256').update(data).digest('hex');
}

export function sha256Digest(data: Uint8Array | string): string {
  return SHA256_PREFIX + sha256Hex(data);
}

/** The hex part, for use as a file name (validated). */
export function digestHex(digest: string, what = 'digest'): string {
  return parseDigest(digest, what).hex;
}

/**
 * Passes `source` through unchanged while hashing it; throws EDIGEST at the
 * end if the sha256 differs from `expected`. With `expectedSize`, a stream
 * that grows past it fails as soon as it does (no waiting for a hostile
 * endless blob), and one that ends short fails as truncated.
 */
export async function* verifyDigest(
  source: AsyncIterable<Uint8Array>,
  expected: string,
  what: string,
  expectedSize?: number,
): AsyncGenerator<Uint8Array> {
  parseDigest(expected, what);
  const hash = crypto().createHash('sha256');
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (expectedSize !== undefined && total > expectedSize) {
      throw new CowshedError('EDIGEST', `${what}: longer than its declared size of ${expectedSize} bytes`);
    }
    hash.update(chunk);
    yield chunk;
  }
  if (expectedSize !== undefined && total < expectedSize) {
    throw new CowshedError('EDIGEST', `${what}: truncated: ${total} of ${expectedSize} bytes`);
  }
  const got = SHA256_PREFIX + hash.digest('hex');
  if (got !== expected) {
    throw new CowshedError('EDIGEST', `${what}: digest mismatch: expected ${expected}, got ${got}`);
  }
}

/** Hashes a whole stream (for blobs whose digest is not known in advance). */
export async function digestOfStream(source: AsyncIterable<Uint8Array>): Promise<{ digest: string; size: number }> {
  const hash = crypto().createHash('sha256');
  let size = 0;
  for await (const chunk of source) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: SHA256_PREFIX + hash.digest('hex'), size };
}
