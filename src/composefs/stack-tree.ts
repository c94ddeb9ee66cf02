// Stacked images (see stack.ts): the trees of stacks, flattening, and the
// plan of a commit's layer image. Loaded only by what builds or reads trees.
import { existsSync, readFileSync } from 'node:fs';
import type { Store } from '../store/store.ts';
import { type FsNode, S_IFMT, S_IFDIR, S_IFCHR, S_IFREG, S_IFLNK, S_IFBLK, S_IFIFO, isDir, isReg, newNode } from '../tree/node.ts';
import { LayerTreeBuilder, finalizeLinks, splitArchivePath, type EntryMeta, type FileContent } from '../tree/layers.ts';
import { readComposefsImage, imageFileAccess, type ImageAccess, type RawInode } from './erofs-reader.ts';
import { writeComposefsImage, XATTR_OPAQUE, XATTR_ESCAPED_WHITEOUT, type LayerImage } from './erofs-writer.ts';
import { fsverityDigest, toHex } from './fsverity.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { CowshedError } from '../util/errors.ts';
import { decodeEntries } from '../store/import.ts';
import { stackOf } from './stack.ts';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** The tree a composefs image shows: a flat image read back, or a stack's layers applied to its parent's tree. */
export function stackTree(store: Store, composefs: string): FsNode {
  const chain = stackOf(store, composefs);
  const layers: string[] = [];
  let tree: FsNode | undefined;
  for (const c of chain) {
    const r = store.db.get<{ entries_digest: string; flat: string | null }>('SELECT entries_digest, flat FROM composefs_stack WHERE composefs = ?', c);
    const file = r ? (r.flat && existsSync(store.imagePath(r.flat)) ? r.flat : undefined) : c;
    if (file) {
      tree = readComposefsImage(readFileSync(store.imagePath(file)));
      break;
    }
    layers.push(r!.entries_digest);
  }
  if (!tree) throw new CowshedError('ECORRUPT', `composefs image ${composefs}: its stack has no base image`);
  let out: FsNode = tree;
  for (let i = layers.length - 1; i >= 0; i--) {
    const b: LayerTreeBuilder = new LayerTreeBuilder(out);
    b.beginLayer(`stacked layer ${i + 1}`);
    for (const [e, c] of decodeEntries(store.blobs.get(layers[i]!))) b.apply(e, c);
    out = b.finish();
  }
  return out;
}

/**
 * Make an image single (flat) if it is a stack: write its flattened
 * composefs image and point the image (and every image sharing its stack
 * top) at it. Returns the image's composefs digest. Containers keep
 * mounting the stack they were made from. Call with a write lease held.
 */
export function flattenImage(store: Store, imageId: string): string {
  const { db } = store;
  const row = db.get<{ composefs: string }>('SELECT composefs FROM images WHERE id = ?', imageId);
  if (!row) throw new CowshedError('ENOENT', `no such image: ${imageId}`);
  const top = row.composefs;
  const st = db.get<{ flat: string | null }>('SELECT flat FROM composefs_stack WHERE composefs = ?', top);
  if (!st) return top;
  let flat = st.flat && existsSync(store.imagePath(st.flat)) ? st.flat : undefined;
  if (!flat) {
    const image = writeComposefsImage(stackTree(store, top));
    flat = toHex(fsverityDigest(image));
    if (!existsSync(store.imagePath(flat))) writeFileAtomic(store.imagePath(flat), image, store.paths.tmp);
  }
  db.tx(() => {
    db.run('UPDATE composefs_stack SET flat = ? WHERE composefs = ?', flat, top);
    db.run('UPDATE images SET composefs = ? WHERE composefs = ?', flat, top);
  });
  return flat;
}

/** Read access to the parent image's tree: the entries planLayerImage looks up. */
export interface ParentView {
  /** The entry at `path` ('' is the root), undefined where the tree has none. */
  stat(path: string): ParentStat | undefined;
  /** The names in the directory at `path` (none where there is no directory). */
  list(path: string): string[];
  /** The directory at `path` with its metadata (no children), undefined if it is not one: for a layer's implicit parent directories. */
  dirNode?(path: string): FsNode | undefined;
}

export interface ParentStat { dir: boolean; reg: boolean; nlink: number; size: number }

const RAW_OPAQUE = Buffer.from('y');

/**
 * The tree of a composefs image (flat or a stack) as overlayfs shows it,
 * read from the image files without mounting anything (import: the base
 * image is usually not mounted). Only the directories on the looked-up paths
 * are read, so the cost follows the change, not the image. Layer images'
 * raw whiteouts (0:0 devices) hide lower entries, raw `trusted.overlay.opaque=y`
 * directories hide lower directories, as in the mounted stack.
 */
export function imagesView(store: Store, composefs: string): ParentView {
  // Read when first looked up: a build that turns out flat never needs them.
  let loaded: ImageAccess[] | undefined;
  const images = (): ImageAccess[] => (loaded ??= stackOf(store, composefs).map((c) => imageFileAccess(store.imagePath(c))));
  interface Found { layer: number; ino: RawInode }
  const type = (f: Found): number => f.ino.mode & S_IFMT;
  const isWhiteout = (f: Found): boolean => type(f) === S_IFCHR && f.ino.u === 0;
  const isOpaque = (f: Found): boolean => f.ino.xattrs.some(([k, v]) => k === XATTR_OPAQUE && v.equals(RAW_OPAQUE));
  const dirents = new Map<string, Map<string, number>>();
  const children = (f: Found): Map<string, number> => {
    const key = `${f.layer}:${f.ino.nid}`;
    let m = dirents.get(key);
    if (!m) {
      m = new Map(images()[f.layer]!.readDirents(f.ino).filter(([n]) => n !== '.' && n !== '..'));
      dirents.set(key, m);
    }
    return m;
  };
  // What makes up the entry at `path`, top first: a non-directory alone, or the directories merged there.
  const resolve = (path: string): Found[] | undefined => {
    const layers = images();
    let cur: Found[] = [];
    for (const [layer, a] of layers.entries()) {
      const f = { layer, ino: a.readInode(a.rootNid) };
      cur.push(f);
      if (isOpaque(f)) break;
    }
    if (path === '') return cur;
    for (const name of path.split('/')) {
      const next: Found[] = [];
      for (const d of cur) {
        if (type(d) !== S_IFDIR) break;
        const nid = children(d).get(name);
        if (nid === undefined) continue;
        const f = { layer: d.layer, ino: layers[d.layer]!.readInode(nid) };
        if (isWhiteout(f)) break;
        if (type(f) !== S_IFDIR) {
          if (next.length === 0) next.push(f);
          break;
        }
        next.push(f);
        if (isOpaque(f)) break;
      }
      if (next.length === 0) return undefined;
      cur = next;
    }
    return cur;
  };
  return {
    stat(path) {
      const found = resolve(path);
      if (!found) return undefined;
      const f = found[0]!;
      // A regular file carrying the escaped whiteout xattr is the tree's own 0:0 device.
      const reg = type(f) === S_IFREG && !f.ino.xattrs.some(([k]) => k === XATTR_ESCAPED_WHITEOUT);
      return { dir: type(f) === S_IFDIR, reg, nlink: f.ino.nlink, size: reg ? f.ino.size : 0 };
    },
    dirNode(path) {
      const f = resolve(path)?.[0];
      if (!f || type(f) !== S_IFDIR) return undefined;
      return images()[f.layer]!.buildNode(f.ino.nid, false, path.slice(path.lastIndexOf('/') + 1));
    },
    list(path) {
      const found = resolve(path);
      if (!found || type(found[0]!) !== S_IFDIR) return [];
      const seen = new Set<string>();
      const out: string[] = [];
      for (const d of found) {
        for (const [name, nid] of children(d)) {
          if (seen.has(name)) continue;
          seen.add(name);
          if (!isWhiteout({ layer: d.layer, ino: images()[d.layer]!.readInode(nid) })) out.push(name);
        }
      }
      return out;
    },
  };
}

/** What a stacked layer image changes: its tree, and how the image's entry count and size move. */
export interface LayerImagePlan {
  root: FsNode;
  layer: Omit<LayerImage, 'parent'>;
  entriesDelta: number;
  sizeDelta: number;
}

/**
 * The layer image for `entries` on top of a parent, or undefined when the
 * stacked view would not be exactly the flattened tree (then build flat).
 * `parentRoot` is the parent's root directory (metadata only).
 */
export function planLayerImage(entries: Array<[EntryMeta, FileContent | undefined]>, parentRoot: FsNode, view: ParentView): LayerImagePlan | undefined {
  const root = newNode(S_IFDIR | (parentRoot.mode & 0o7777), {
    uid: parentRoot.uid, gid: parentRoot.gid, mtimeSec: parentRoot.mtimeSec, mtimeNsec: parentRoot.mtimeNsec, xattrs: new Map(parentRoot.xattrs),
  });
  const whiteouts = new Set<FsNode>();
  const opaque = new Set<FsNode>();
  const byPath = new Map<string, FsNode>([['', root]]);
  // Directories below which the parent has nothing that shows: opaque ones, and new ones (also
  // where the parent has a file or symlink: its path is never looked up through).
  const fresh = new Set<string>();
  let entriesDelta = 0;
  let sizeDelta = 0;
  const counted = new Set<FsNode>();

  // The parent's subtree below `path` goes: count it, and refuse hardlinks (their other names would keep a wrong link count).
  const removeSubtree = (path: string): boolean => {
    for (const name of view.list(path)) {
      const p = path === '' ? name : `${path}/${name}`;
      const st = view.stat(p);
      if (!st) continue;
      if (!removeOne(p, st)) return false;
    }
    return true;
  };
  const removeOne = (path: string, st: ParentStat): boolean => {
    if (!st.dir && st.nlink > 1) return false;
    entriesDelta--;
    if (st.reg) sizeDelta -= st.size;
    return st.dir ? removeSubtree(path) : true;
  };
  const hidden = (path: string): boolean => {
    for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) if (fresh.has(path.slice(0, i))) return true;
    return false;
  };

  // Parent directories the layer does not name keep the parent's metadata (as
  // LayerTreeBuilder keeps them): copied into the layer image. One the parent
  // lacks would be made with default metadata: flat.
  const implicitDir = (parts: string[]): FsNode | undefined => {
    let dir = root;
    for (let i = 1; i < parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      let next = byPath.get(p);
      if (!next) {
        if (!view.dirNode || hidden(p) || fresh.has(parts.slice(0, i - 1).join('/'))) return undefined;
        next = view.dirNode(p);
        if (!next) return undefined;
        dir.children!.set(parts[i - 1]!, next);
        byPath.set(p, next);
      }
      if (!isDir(next) || whiteouts.has(next)) return undefined;
      dir = next;
    }
    return dir;
  };

  for (const [e, content] of entries) {
    const parts = splitArchivePath(e.path);
    if (parts.length === 0) return undefined; // the root's own metadata: flat
    const name = parts[parts.length - 1]!;
    const dirPath = parts.slice(0, -1).join('/');
    const dir = byPath.get(dirPath) ?? implicitDir(parts);
    if (!dir || !isDir(dir)) return undefined;
    if (name === OPAQUE) {
      // After entries of its own directory, the counts above would be wrong: flat.
      if (dirPath === '' || opaque.has(dir) || dir.children!.size > 0) return undefined;
      if (!fresh.has(dirPath) && !hidden(dirPath)) {
        const st = view.stat(dirPath);
        if (st?.dir && !removeSubtree(dirPath)) return undefined;
      }
      opaque.add(dir);
      fresh.add(dirPath);
      continue;
    }
    const victim = name.startsWith(WHITEOUT) ? name.slice(WHITEOUT.length) : undefined;
    const target = victim ?? name;
    if (target === '' || target === '.' || target === '..') return undefined;
    const path = dirPath === '' ? target : `${dirPath}/${target}`;
    if (dir.children!.has(target)) return undefined; // named twice in one layer: flat
    const inParent = hidden(path) ? undefined : view.stat(path);
    if (victim !== undefined) {
      if (inParent && !removeOne(path, inParent)) return undefined;
      const w = newNode(S_IFCHR | 0o644, { uid: root.uid, gid: root.gid, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec });
      whiteouts.add(w);
      dir.children!.set(target, w);
      byPath.set(path, w);
      continue;
    }
    let node: FsNode;
    if (e.type === 'hardlink') {
      const t = byPath.get(splitArchivePath(e.linkname, 'hardlink target').join('/'));
      if (!t || isDir(t) || whiteouts.has(t)) return undefined; // a link to the parent's file: flat
      node = t;
    } else {
      node = newNode(({ file: S_IFREG, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, dir: S_IFDIR, fifo: S_IFIFO } as const)[e.type] | (e.mode & 0o7777), {
        uid: e.uid, gid: e.gid, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, xattrs: new Map(e.xattrs),
      });
      if (e.type === 'symlink') {
        if (e.linkname === '') return undefined;
        node.target = e.linkname;
      } else if (e.type === 'char' || e.type === 'block') {
        node.rdev = ((e.devminor & 0xff) | ((e.devmajor & 0xfff) << 8) | ((e.devminor & ~0xff) << 12)) >>> 0;
      } else if (e.type === 'file') {
        node.size = e.size;
        if (content?.inline) node.inline = content.inline;
        if (content?.digest) node.digest = content.digest;
        if (content?.payload) node.payload = content.payload;
      }
    }
    // What it replaces in the parent.
    if (inParent) {
      if (!inParent.dir && inParent.nlink > 1) return undefined;
      if (inParent.reg) sizeDelta -= inParent.size;
      if (inParent.dir && !isDir(node)) {
        if (!removeSubtree(path)) return undefined;
      }
    } else {
      entriesDelta++;
    }
    if (isDir(node) && !inParent?.dir) fresh.add(path);
    if (isReg(node) && !counted.has(node)) { counted.add(node); sizeDelta += node.size; }
    dir.children!.set(target, node);
    byPath.set(path, node);
  }
  finalizeLinks(root);
  return { root, layer: { whiteouts, opaque }, entriesDelta, sizeDelta };
}

