// Flattening OCI layers into one tree, in layer order: each entry adds or
// replaces a path; `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq`
// hides everything lower layers put in its directory. Hostile paths (`..`,
// absolute, through symlinks) and broken ones (hardlinks to nothing) are
// refused. A name repeated within a layer: the later entry wins, as GNU tar
// extracts it (a directory again keeps its contents; a non-directory
// replaces an empty directory, never a non-empty one): the tree is built in memory, so nothing is ever
// written outside the store, but an image that tries it is not imported.
import { CowshedError } from '../util/errors.ts';
import { escapeName } from '../util/names.ts';
import type { TarEntry, TarEntryType } from '../tar/reader.ts';
import {
  type FsNode, newNode, makedev, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFMT, isDir,
} from './node.ts';

export type EntryType = TarEntryType;

/** What the tree needs of one tar entry. */
export type EntryMeta = Pick<TarEntry,
  'path' | 'type' | 'linkname' | 'mode' | 'uid' | 'gid' | 'size' | 'mtimeSec' | 'mtimeNsec' | 'devmajor' | 'devminor' | 'xattrs'>;

/** Content of a regular file, decided by the importer. */
export interface FileContent {
  digest?: Uint8Array;
  inline?: Uint8Array;
  /** Where overlayfs finds an external file's content, relative to the data layer. */
  payload?: string;
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

const TYPE_BITS: Record<Exclude<EntryType, 'hardlink'>, number> = {
  file: S_IFREG, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, dir: S_IFDIR, fifo: S_IFIFO,
};

const hostile = (msg: string): never => { throw new CowshedError('EHOSTILE', msg); };
const broken = (msg: string): never => { throw new CowshedError('EFORMAT', msg); };

/**
 * Split an archive path into components, refusing anything that could
 * escape the root. A leading "/" means the image's root, as GNU tar, podman
 * and umoci read it (`umoci insert` writes such paths): the tree is built in
 * memory, so nothing can be written outside the image either way.
 */
export function splitArchivePath(raw: string, what = 'entry'): string[] {
  if (raw.includes('\0')) hostile(`${what} "${escapeName(raw)}": NUL byte in path`);
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) hostile(`${what} "${escapeName(raw)}": path with '..'`);
  return parts;
}

export class LayerTreeBuilder {
  readonly root: FsNode;
  /** Nodes put in place by the layer being applied (duplicates and opaque dirs need this). */
  private current = new WeakSet<FsNode>();
  private layerName = '';
  entries = 0;

  /** Start from an empty root, or on top of an existing image's tree (commit). */
  constructor(base?: FsNode) {
    this.root = base ?? newNode(S_IFDIR | 0o755);
  }

  beginLayer(name: string): void {
    this.current = new WeakSet();
    this.layerName = name;
  }

  /** Apply one tar entry; `content` is required for regular files. */
  apply(e: EntryMeta, content?: FileContent): void {
    const parts = splitArchivePath(e.path);
    const where = `${this.layerName}: "${escapeName(e.path)}"`;
    if (parts.length === 0) {
      if (e.type !== 'dir') broken(`${where}: the root must be a directory`);
      this.setMeta(this.root, e);
      this.current.add(this.root);
      return;
    }
    const name = parts[parts.length - 1]!;
    const parent = this.parentDir(parts, where);

    if (name === OPAQUE) {
      for (const [childName, child] of parent.children!) if (!this.current.has(child)) parent.children!.delete(childName);
      return;
    }
    if (name.startsWith(WHITEOUT)) {
      const victim = name.slice(WHITEOUT.length);
      if (victim === '' || victim === '.' || victim === '..') hostile(`${where}: bad whiteout name`);
      // Whiteouts hide lower layers only; an entry of this same layer stays.
      const existing = parent.children!.get(victim);
      if (existing && !this.current.has(existing)) parent.children!.delete(victim);
      return;
    }

    const existing = parent.children!.get(name);
    if (existing && this.current.has(existing) && isDir(existing) && e.type !== 'dir' && existing.children!.size > 0) {
      // GNU tar removes what is in the way with unlink or rmdir, so a non-empty directory stays and the member fails.
      broken(`${where}: a later entry of the layer replaces the non-empty directory it added`);
    }

    let node: FsNode;
    if (e.type === 'hardlink') {
      const target = this.lookup(splitArchivePath(e.linkname, 'hardlink target'), `${where} -> "${escapeName(e.linkname)}"`);
      if (!target) broken(`${where}: hardlink to missing "${escapeName(e.linkname)}"`);
      if (isDir(target!)) broken(`${where}: hardlink to a directory`);
      if (target === existing) return; // a link to itself: nothing changes
      node = target!;
    } else if (e.type === 'dir' && existing && isDir(existing)) {
      this.setMeta(existing, e); // a directory again: new metadata, same contents
      this.current.add(existing);
      return;
    } else {
      node = newNode(TYPE_BITS[e.type]);
      this.setMeta(node, e);
      if (e.type === 'symlink') {
        if (e.linkname === '') broken(`${where}: symlink with an empty target`);
        node.target = e.linkname;
      } else if (e.type === 'char' || e.type === 'block') {
        node.rdev = makedev(e.devmajor, e.devminor);
      } else if (e.type === 'file') {
        node.size = e.size;
        if (content?.inline) node.inline = content.inline;
        if (content?.digest) node.digest = content.digest;
        if (content?.payload) node.payload = content.payload;
      }
    }
    parent.children!.set(name, node);
    this.current.add(node);
    this.entries++;
  }

  private setMeta(n: FsNode, e: EntryMeta): void {
    n.mode = (n.mode & S_IFMT) | (e.mode & 0o7777);
    n.uid = e.uid;
    n.gid = e.gid;
    n.mtimeSec = e.mtimeSec;
    n.mtimeNsec = e.mtimeNsec;
    n.xattrs = new Map(e.xattrs);
  }

  /** The directory that will hold parts' last component; missing parents are created. */
  private parentDir(parts: string[], where: string): FsNode {
    let dir = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i]!;
      let next = dir.children!.get(name);
      if (!next) {
        next = newNode(S_IFDIR | 0o755);
        dir.children!.set(name, next);
        this.current.add(next);
      } else if ((next.mode & S_IFMT) === S_IFLNK) {
        hostile(`${where}: path goes through the symlink /${parts.slice(0, i + 1).join('/')}`);
      } else if (!isDir(next)) {
        broken(`${where}: /${parts.slice(0, i + 1).join('/')} is not a directory`);
      }
      dir = next;
    }
    return dir;
  }

  private lookup(parts: string[], where: string): FsNode | undefined {
    let n: FsNode | undefined = this.root;
    for (let i = 0; i < parts.length; i++) {
      if (!n || !isDir(n)) return undefined;
      n = n.children!.get(parts[i]!);
      if (n && i < parts.length - 1 && (n.mode & S_IFMT) === S_IFLNK) {
        hostile(`${where}: hardlink target goes through a symlink`);
      }
    }
    return n;
  }

  /** The finished tree, with link counts set. */
  finish(): FsNode {
    finalizeLinks(this.root);
    return this.root;
  }
}

/** Set nlink: directories 2 + subdirectories, other nodes the number of names they have. */
export function finalizeLinks(root: FsNode): void {
  const counts = new Map<FsNode, number>();
  const visit = (dir: FsNode): void => {
    let subdirs = 0;
    for (const child of dir.children!.values()) {
      if (isDir(child)) { subdirs++; visit(child); } else counts.set(child, (counts.get(child) ?? 0) + 1);
    }
    dir.nlink = 2 + subdirs;
  };
  visit(root);
  for (const [n, c] of counts) n.nlink = c;
}
