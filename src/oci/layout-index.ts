// index.json of an OCI image layout: add a manifest under a tag, keeping the
// layout's other images (a tag moves to the new manifest).
import { readFile, mkdir, stat } from 'node:fs/promises';
import { writeFileAtomic } from '../util/fs.ts';
import { join } from 'node:path';
import { CowshedError, errno } from '../util/errors.ts';
import { OCI_INDEX, OCI_LAYOUT_VERSION, REF_NAME_ANNOTATION } from './media-types.ts';
import { parseIndex, type Descriptor } from './types.ts';

/** Create the layout's skeleton (oci-layout, blobs/sha256) if missing. */
export async function initLayout(dir: string): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const layoutFile = join(dir, 'oci-layout');
  if (!(await stat(layoutFile).then(() => true, () => false))) {
    writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION }));
  }
}

export async function addToIndex(dir: string, manifest: Descriptor, tag?: string): Promise<void> {
  const indexFile = join(dir, 'index.json');
  let existing: Descriptor[] = [];
  try {
    existing = parseIndex(await readFile(indexFile), undefined, indexFile).manifests;
  } catch (e) {
    if (errno(e) !== 'ENOENT') {
      if (e instanceof CowshedError) throw new CowshedError(e.code, `cannot add to ${dir}: ${e.message}`, { cause: e });
      throw e;
    }
  }
  const entry: Descriptor = { ...manifest };
  if (tag !== undefined) entry.annotations = { ...(entry.annotations ?? {}), [REF_NAME_ANNOTATION]: tag };
  const kept = existing.filter((d) => tag === undefined
    ? d.digest !== manifest.digest || d.annotations?.[REF_NAME_ANNOTATION] !== undefined
    : d.annotations?.[REF_NAME_ANNOTATION] !== tag);
  writeFileAtomic(indexFile, JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...kept, entry] }));
}
