// Shared by the delta tests: the ten-version series fixture and a way to
// rewrite a delta held in an OCI layout (for the bad-input cases).
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../helpers/cli.ts';
import { decodeIndex, encodeIndex, type DeltaIndex } from '../../src/delta/format.ts';
import { sha256Digest } from '../../src/oci/digest.ts';

/** The series layout (tags v1..v10), built once and cached like the Debian fixture. */
export function seriesFixture(): string {
  const out = execFileSync('bash', [join(REPO, 'scripts', 'build-debian-series.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop()!;
}

const blob = (dir: string, digest: string): string => join(dir, 'blobs', 'sha256', digest.slice(7));

interface LayoutDelta { manifestDigest: string; manifest: { layers: Array<{ digest: string; size: number; mediaType: string }>; [k: string]: unknown }; index: DeltaIndex }

/** The only delta in an OCI layout directory. */
export function readLayoutDelta(dir: string): LayoutDelta {
  const top = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  const manifestDigest = top.manifests[0]!.digest;
  const manifest = JSON.parse(readFileSync(blob(dir, manifestDigest), 'utf8')) as LayoutDelta['manifest'];
  return { manifestDigest, manifest, index: decodeIndex(readFileSync(blob(dir, manifest.layers[0]!.digest))) };
}

/** Rewrites the delta of a layout: `edit` changes its index and packs; blobs, manifest and index.json follow. */
export function editLayoutDelta(dir: string, edit: (ix: DeltaIndex, packs: Buffer[]) => void): void {
  const d = readLayoutDelta(dir);
  const packs = d.index.packs.map((p) => readFileSync(blob(dir, p.digest)));
  edit(d.index, packs);
  d.index.packs = packs.map((p, i) => ({ digest: sha256Digest(p), size: d.index.packs[i]?.size === p.length ? p.length : p.length }));
  packs.forEach((p) => writeFileSync(blob(dir, sha256Digest(p)), p));
  const ixBlob = encodeIndex(d.index);
  writeFileSync(blob(dir, sha256Digest(ixBlob)), ixBlob);
  d.manifest.layers = [
    { ...d.manifest.layers[0]!, digest: sha256Digest(ixBlob), size: ixBlob.length },
    ...d.index.packs.map((p, i) => ({ ...d.manifest.layers[i + 1]!, digest: p.digest, size: p.size })),
  ];
  const mbytes = Buffer.from(JSON.stringify(d.manifest));
  writeFileSync(blob(dir, sha256Digest(mbytes)), mbytes);
  const top = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; size: number }> };
  top.manifests[0]!.digest = sha256Digest(mbytes);
  top.manifests[0]!.size = mbytes.length;
  writeFileSync(join(dir, 'index.json'), JSON.stringify(top));
}
