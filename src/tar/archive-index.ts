// Index of an uncompressed tar file on disk (oci-archive:, docker-archive:):
// where each member's bytes are, so blobs are read in place with
// fs.createReadStream(file, { start: offset, end: offset + size - 1 })
// instead of extracting the archive. Hard links and symlinks inside the
// archive (docker save and skopeo's docker-archive use them for layers) are
// followed to their target's bytes.
import { posix } from 'node:path';
import { FileInput } from './input.ts';
import { readTarFrom } from './reader.ts';

export interface ArchiveMember {
  /** Offset in the archive file of the member's first byte. */
  offset: number;
  size: number;
}

/** "./a//b/" -> "a/b"; null for names that leave the archive root. */
export function normalizeArchivePath(p: string): string | null {
  const n = posix.normalize(p.replace(/^\/+/, '')).replace(/\/+$/, '');
  if (n === '' || n === '.' || n === '..' || n.startsWith('../')) return null;
  return n;
}

const MAX_LINK_HOPS = 40;

/** Regular files of the archive (and links to them) by normalised path. */
export async function indexTarArchive(file: string): Promise<Map<string, ArchiveMember>> {
  const files = new Map<string, ArchiveMember>();
  const hardlinks: [string, string][] = [];
  const symlinks = new Map<string, string>();
  const input = await FileInput.open(file);
  try {
    for await (const e of readTarFrom(input)) {
      const name = normalizeArchivePath(e.path);
      if (name === null) continue;
      // A later member of the same name replaces an earlier one, as on extraction.
      files.delete(name);
      symlinks.delete(name);
      if (e.type === 'file') {
        files.set(name, { offset: e.dataOffset, size: e.size });
      } else if (e.type === 'hardlink') {
        const target = normalizeArchivePath(e.linkname);
        // A hard link names a member earlier in the archive: resolve it now, before that name can be replaced.
        const hit = target === null ? undefined : files.get(target);
        if (hit) files.set(name, hit);
        else if (target !== null) hardlinks.push([name, target]);
      } else if (e.type === 'symlink') {
        // Relative targets are relative to the link's directory; absolute ones to the archive root.
        const base = e.linkname.startsWith('/') ? '' : posix.dirname(name);
        const target = normalizeArchivePath(posix.join(base, e.linkname));
        if (target !== null) symlinks.set(name, target);
      }
    }
  } finally {
    await input.close();
  }

  const resolve = (start: string): ArchiveMember | undefined => {
    let name = start;
    for (let hop = 0; hop < MAX_LINK_HOPS; hop++) {
      const hit = files.get(name);
      if (hit) return hit;
      const next = symlinks.get(name);
      if (next === undefined) return undefined;
      name = next;
    }
    return undefined; // a symlink loop
  };
  // Hard links whose target was a symlink, or came later (not valid tar, but harmless to allow).
  for (const [name, target] of hardlinks) {
    const hit = resolve(target);
    if (hit && !files.has(name)) files.set(name, hit);
  }
  for (const name of symlinks.keys()) {
    if (files.has(name)) continue;
    const hit = resolve(name);
    if (hit) files.set(name, hit);
  }
  return files;
}
