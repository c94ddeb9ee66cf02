// Stacked images: an image may be a stack of composefs images, its parent's
// image(s) with a small "layer image" of one change on top, mounted as
// several overlayfs lower layers (top first) above the object store's
// data-only layer. A commit, or an import/pull of an update (a stored image's
// layers plus new ones), then writes only its change, not the whole tree.
//
// A layer image holds the layer's entries as overlayfs reads a lower layer:
// deletions are real whiteouts (0:0 character devices), `.wh..wh..opq` is
// `trusted.overlay.opaque=y`, the root carries the parent's root metadata and
// neither the root opacity nor the 00..ff whiteouts of a flat image (they would
// hide the parent). Content xattrs are escaped as in any composefs image.
//
// Only changes whose stacked view is exactly the flattened tree are stacked;
// anything else (hardlinks to or from the parent's files, implicit parent
// directories the parent lacks, the root's own metadata, a name both deleted
// and added in the layer) is built flat. The one difference overlayfs itself makes: a directory
// present in more than one layer reports st_nlink 1 (as in any overlay mount).
//
// The flattened image (the tree rebuilt from the parent's and the layer's
// entries, byte-identical to what mkcomposefs makes of that tree) is made off
// the commit path, by whatever needs the single image digest: signing and
// verifying, `mount --verify`, image trees (diff, deltas), and a commit once
// the stack is STACK_MAX deep.
import type { Store } from '../store/store.ts';
import { CowshedError } from '../util/errors.ts';

/** On a stack this deep the next commit or update import is built flat (overlayfs allows 500 lowers; lookups cost per layer). */
export const STACK_MAX = 16;

/** The composefs images an image is mounted from, top first; one element for a flat image. */
export function stackOf(store: Store, composefs: string): string[] {
  const out = [composefs];
  for (let c = composefs; ;) {
    const r = store.db.get<{ parent: string }>('SELECT parent FROM composefs_stack WHERE composefs = ?', c);
    if (!r) return out;
    if (out.length > 1000) throw new CowshedError('ECORRUPT', `composefs image ${composefs}: its stack loops`);
    out.push(r.parent);
    c = r.parent;
  }
}

export const isStacked = (store: Store, composefs: string): boolean =>
  store.db.get('SELECT 1 FROM composefs_stack WHERE composefs = ?', composefs) !== undefined;

/** Every composefs image the given ones need, their stacks included (gc). */
export function withStacks(store: Store, roots: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const r of roots) for (const c of stackOf(store, r)) out.add(c);
  return out;
}

/** flattenImage under a write lease (gc must not take the new file before it is recorded); a flat image costs one query. */
export async function ensureFlat(store: Store, imageId: string): Promise<string> {
  const row = store.db.get<{ composefs: string }>('SELECT composefs FROM images WHERE id = ?', imageId);
  if (!row) throw new CowshedError('ENOENT', `no such image: ${imageId}`);
  if (!isStacked(store, row.composefs)) return row.composefs;
  const { acquireLease } = await import('../store/leases.ts');
  const lease = await acquireLease(store.db, 'write');
  const { flattenImage } = await import('./stack-tree.ts');
  try { return flattenImage(store, imageId); } finally { lease.release(); }
}
