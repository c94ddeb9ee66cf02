// diff: what a container changed, read from its overlay upper directory
// alone, so the cost follows the number of changes, not the image's size.
// Whiteouts (char 0:0) are deletions; an opaque directory replaces what the
// image had there; a metacopy-only file is a metadata change (mode, owner,
// xattrs); a renamed directory (redirect) is new at its new path. Whether a
// path existed in the image is asked of the image's EROFS mount. Output
// follows `podman diff`: A added, C changed, D deleted, and the parent
// directories of a change as C.
import { readdirSync as readdirRaw, lstatSync as lstatRaw, type Stats } from 'node:fs';
import { join } from 'node:path';
import { readXattrsRecursive } from '../util/xattrs.ts';
import { type FsNode, S_IFMT, isDir, isReg, walk, compareNames } from '../tree/node.ts';
import { fromHost, fsPath } from '../util/names.ts';

// Paths here are binary strings (util/names.ts): read and looked up as bytes.
const readdirSync = (p: string): string[] => readdirRaw(fsPath(p), { encoding: 'latin1' });
const lstatSync = (p: string): Stats => lstatRaw(fsPath(p));

export type ChangeKind = 'A' | 'C' | 'D';
export interface Change { kind: ChangeKind; path: string }

const OPAQUE = 'trusted.overlay.opaque';
const REDIRECT = 'trusted.overlay.redirect';

const isWhiteout = (st: Stats): boolean => st.isCharacterDevice() && st.rdev === 0;

function exists(path: string): Stats | undefined {
  try { return lstatSync(path); } catch { return undefined; }
}

/**
 * Changes of a container: `upper` is its upper directory, `lower` the path
 * of its image's mounted EROFS tree.
 */
export function diffUpper(upperDir: string, lowerDir: string): Change[] {
  const upper = fromHost(upperDir);
  const lower = fromHost(lowerDir);
  // The overlay's own xattrs on upper entries (opaque, redirect), keyed by path below upper.
  const xattrs = new Map<string, Map<string, string>>();
  for (const [path, xs] of readXattrsRecursive(upper, '^trusted\\.overlay\\.')) {
    xattrs.set(path === upper ? '' : path.slice(upper.length), new Map([...xs].map(([k, v]) => [k, Buffer.from(v).toString('latin1')])));
  }
  const changes: Change[] = [];
  const add = (kind: ChangeKind, path: string) => changes.push({ kind, path });

  const addAllLower = (lowerDir: string, rel: string): void => {
    for (const name of readdirSync(lowerDir)) {
      const p = `${rel}/${name}`;
      add('A', p);
      const st = lstatSync(join(lowerDir, name));
      if (st.isDirectory()) addAllLower(join(lowerDir, name), p);
    }
  };

  // `lowerDir` is where this directory's image contents are (undefined: none).
  const visit = (rel: string, lowerDir: string | undefined): void => {
    const dir = join(upper, rel);
    for (const name of readdirSync(dir).sort(compareNames)) {
      const p = `${rel}/${name}`;
      const st = lstatSync(join(dir, name));
      const lowerPath = lowerDir === undefined ? undefined : join(lowerDir, name);
      const inLower = lowerPath === undefined ? undefined : exists(lowerPath);
      if (isWhiteout(st)) {
        if (inLower && !isWhiteout(inLower)) add('D', p);
        continue;
      }
      const x = xattrs.get(p);
      if (st.isDirectory()) {
        const redirect = x?.get(REDIRECT);
        if (redirect !== undefined) {
          // A directory renamed into place: new here, with what it had before.
          add(inLower ? 'C' : 'A', p);
          const from = redirect.startsWith('/') ? join(lower, redirect) : join(lowerDir ?? lower, redirect);
          const seen = new Set(readdirSync(join(dir, name)));
          for (const child of exists(from)?.isDirectory() ? readdirSync(from) : []) {
            if (seen.has(child)) continue;
            add('A', `${p}/${child}`);
            if (lstatSync(join(from, child)).isDirectory()) addAllLower(join(from, child), `${p}/${child}`);
          }
          visit(p, undefined);
          continue;
        }
        const lowerIsDir = inLower?.isDirectory() ?? false;
        if (x?.get(OPAQUE) === 'y' && lowerIsDir) {
          add('C', p);
          visitReplaced(p, lowerPath!);
          continue;
        }
        add(inLower ? 'C' : 'A', p);
        visit(p, lowerIsDir ? lowerPath : undefined);
      } else {
        add(inLower && !isWhiteout(inLower) ? 'C' : 'A', p);
      }
    }
  };

  // An opaque directory: nothing of the image shows below it, at any depth.
  // What the image had and the upper lacks is deleted; the rest is new, or
  // changed where the image had the same name.
  const visitReplaced = (rel: string, lowerDir: string): void => {
    const dir = join(upper, rel);
    const names = readdirSync(dir);
    const again = new Set(names);
    for (const child of readdirSync(lowerDir)) if (!again.has(child)) add('D', `${rel}/${child}`);
    for (const name of names.sort(compareNames)) {
      const p = `${rel}/${name}`;
      const st = lstatSync(join(dir, name));
      const inLower = exists(join(lowerDir, name));
      if (isWhiteout(st)) {
        if (inLower) add('D', p);
        continue;
      }
      add(inLower ? 'C' : 'A', p);
      if (st.isDirectory()) {
        if (inLower?.isDirectory()) visitReplaced(p, join(lowerDir, name));
        else visit(p, undefined);
      }
    }
  };

  visit('', lower);
  return withParents(changes);
}

/** Add the parents of every change as C (as podman does) and sort by path. */
export function withParents(changes: Change[]): Change[] {
  const byPath = new Map<string, ChangeKind>();
  for (const c of changes) byPath.set(c.path, c.kind);
  for (const c of changes) {
    for (let i = c.path.lastIndexOf('/'); i > 0; i = c.path.lastIndexOf('/', i - 1)) {
      const parent = c.path.slice(0, i);
      if (!byPath.has(parent)) byPath.set(parent, 'C');
    }
  }
  return [...byPath].map(([path, kind]) => ({ kind, path })).sort((a, b) => compareNames(a.path, b.path));
}

/** Changes between two image trees (diff IMAGE1 IMAGE2). */
export function diffTrees(a: FsNode, b: FsNode): Change[] {
  const changes: Change[] = [];
  const visit = (x: FsNode, y: FsNode, rel: string): void => {
    const names = new Set([...x.children!.keys(), ...y.children!.keys()]);
    for (const name of [...names].sort(compareNames)) {
      const p = `${rel}/${name}`;
      const cx = x.children!.get(name);
      const cy = y.children!.get(name);
      if (!cy) { changes.push({ kind: 'D', path: p }); continue; }
      if (!cx) {
        changes.push({ kind: 'A', path: p });
        if (isDir(cy)) for (const [sub] of walk(cy, p)) if (sub !== p) changes.push({ kind: 'A', path: sub });
        continue;
      }
      if (isDir(cx) && isDir(cy)) {
        if (!sameMeta(cx, cy)) changes.push({ kind: 'C', path: p });
        visit(cx, cy, p);
      } else if (!sameNode(cx, cy)) {
        changes.push({ kind: 'C', path: p });
        if (isDir(cy)) for (const [sub] of walk(cy, p)) if (sub !== p) changes.push({ kind: 'A', path: sub });
      }
    }
  };
  visit(a, b, '');
  return withParents(changes);
}

function sameMeta(x: FsNode, y: FsNode): boolean {
  if (x.mode !== y.mode || x.uid !== y.uid || x.gid !== y.gid || x.mtimeSec !== y.mtimeSec || x.mtimeNsec !== y.mtimeNsec) return false;
  if (x.xattrs.size !== y.xattrs.size) return false;
  for (const [k, v] of x.xattrs) {
    const w = y.xattrs.get(k);
    if (!w || Buffer.compare(v, w) !== 0) return false;
  }
  return true;
}

function sameNode(x: FsNode, y: FsNode): boolean {
  if ((x.mode & S_IFMT) !== (y.mode & S_IFMT) || !sameMeta(x, y) || x.rdev !== y.rdev || x.target !== y.target) return false;
  if (isReg(x)) {
    if (x.size !== y.size) return false;
    const cx = x.digest ?? x.inline;
    const cy = y.digest ?? y.inline;
    if (cx && cy) return Buffer.compare(cx, cy) === 0;
    return cx === cy;
  }
  return true;
}
