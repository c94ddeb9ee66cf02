// Small content-addressed blobs (manifests, configs, tar-split records),
// named by SHA-256 as in an OCI layout: blobs/sha256/<hex>.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Digest } from '../oci/digest.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { fail } from '../util/errors.ts';

export class BlobStore {
  readonly dir: string;
  private readonly tmp: string;
  constructor(dir: string, tmp: string) {
    this.dir = dir;
    this.tmp = tmp;
  }

  path(digest: string): string {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    if (!m) fail('EINVAL', `bad blob digest: ${digest}`);
    return join(this.dir, m![1]!);
  }

  has(digest: string): boolean {
    return existsSync(this.path(digest));
  }

  /** Store bytes under their digest (verified when expected is given). */
  put(data: Uint8Array, expected?: string): string {
    const d = sha256Digest(data);
    if (expected && expected !== d) fail('EDIGEST', `blob digest mismatch: expected ${expected}, got ${d}`);
    if (!this.has(d)) writeFileAtomic(this.path(d), data, this.tmp);
    return d;
  }

  get(digest: string): Buffer {
    try {
      return readFileSync(this.path(digest));
    } catch {
      return fail('ECORRUPT', `blob ${digest} is missing from the store (run cowshed fsck)`);
    }
  }

  *list(): Generator<string> {
    for (const f of readdirSync(this.dir)) if (/^[0-9a-f]{64}$/.test(f)) yield `sha256:${f}`;
  }
}
