// diff for drivers without an upper directory (btrfs, vfs): the container's
// root walked and compared with the image's recorded tree. The cost follows
// the image's size; composefs and overlay read only what changed.
import { readdirSync, lstatSync, readlinkSync, type BigIntStats } from 'node:fs';
import { fromHost, fsPath } from '../util/names.ts';
import { join } from 'node:path';
import { type FsNode, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, compareNames } from '../tree/node.ts';
import { readXattrsRecursive } from '../util/xattrs.ts';
import { withParents, type Change } from './diff.ts';

function sameXattrs(a: Map<string, Uint8Array>, b: Map<string, Uint8Array> | undefined): boolean {
  const bb = b ?? new Map<string, Uint8Array>();
  if (a.size !== bb.size) return false;
  for (const [k, v] of a) {
    const w = bb.get(k);
    if (!w || Buffer.compare(v, w) !== 0) return false;
  }
  return true;
}

function changed(n: FsNode, st: BigIntStats, path: string, x: Map<string, Uint8Array> | undefined): boolean {
  const type = Number(st.mode) & S_IFMT;
  if (type !== (n.mode & S_IFMT)) return true;
  if (Number(st.mode & 0o7777n) !== (n.mode & 0o7777) || Number(st.uid) !== n.uid || Number(st.gid) !== n.gid) return true;
  if (!sameXattrs(n.xattrs, x)) return true;
  if (type === S_IFDIR) return false; // a directory's own mtime moves with its entries
  // Times within a microsecond: setting them through Node's API (a double
  // of seconds) keeps no more than that.
  const delta = st.mtimeNs - (BigInt(n.mtimeSec) * 1_000_000_000n + BigInt(n.mtimeNsec));
  if (delta > 1000n || delta < -1000n) return true;
  if (type === S_IFREG) return Number(st.size) !== n.size;
  if (type === S_IFLNK) return readlinkSync(fsPath(path), { encoding: 'latin1' }) !== n.target;
  return Number(st.rdev) !== n.rdev;
}

export function diffAgainstTree(rootDir: string, image: FsNode): Change[] {
  // Paths are binary strings (util/names.ts), given to fs calls as bytes.
  const rootfs = fromHost(rootDir);
  const xattrs = readXattrsRecursive(rootfs);
  const changes: Change[] = [];
  const visit = (dir: string, rel: string, node: FsNode | undefined): void => {
    const names = readdirSync(fsPath(dir), { encoding: 'latin1' }).sort(compareNames);
    const present = new Set(names);
    if (node?.children) for (const name of node.children.keys()) if (!present.has(name)) changes.push({ kind: 'D', path: `${rel}/${name}` });
    for (const name of names) {
      const path = join(dir, name);
      const p = `${rel}/${name}`;
      const st = lstatSync(fsPath(path), { bigint: true });
      const n = node?.children?.get(name);
      if (!n) changes.push({ kind: 'A', path: p });
      else if (changed(n, st, path, xattrs.get(path))) changes.push({ kind: 'C', path: p });
      if (st.isDirectory()) visit(path, p, n && (n.mode & S_IFMT) === S_IFDIR ? n : undefined);
    }
  };
  visit(rootfs, '', image);
  return withParents(changes);
}
