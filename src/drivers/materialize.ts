// Writing an image's tree out as ordinary files (the btrfs and vfs drivers):
// contents reflinked from the object store where the filesystem can (btrfs,
// xfs), copied otherwise; hardlinks, devices, fifos, owners, modes, xattrs
// and mtimes as recorded. Everything is written below `dest` only, by paths
// built from the tree, never by following a symlink of the tree.
import {
  copyFileSync, constants, linkSync, lchownSync, chmodSync, lutimesSync, mkdirSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { type FsNode, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, major, minor, walk } from '../tree/node.ts';
import { objectRelPath } from '../store/objects.ts';
import { toHex } from '../composefs/fsverity.ts';
import { asSpaceError } from '../util/fs.ts';

export type CopyMode = 'reflink' | 'copy';

/** Escape a path for setfattr --restore (getfattr's quoting: octal for odd bytes). */
function escapePath(p: string): string {
  return [...Buffer.from(p)].map((b) => (b < 0x21 || b > 0x7e || b === 0x5c || b === 0x3d ? `\\${b.toString(8).padStart(3, '0')}` : String.fromCharCode(b))).join('');
}

export function materializeTree(root: FsNode, dest: string, objectsDir: string, mode: CopyMode = 'reflink'): void {
  const first = new Map<FsNode, string>();
  const dirs: Array<[string, FsNode]> = [];
  const meta: Array<[string, FsNode]> = [];
  try {
    for (const [rel, n] of walk(root)) {
      const path = rel === '/' ? dest : join(dest, rel);
      const type = n.mode & S_IFMT;
      if (type === S_IFDIR) {
        if (rel !== '/') mkdirSync(path, { mode: 0o700 });
        dirs.push([path, n]);
      } else {
        const seen = first.get(n);
        if (seen) { linkSync(seen, path); continue; }
        first.set(n, path);
        if (type === S_IFREG) {
          if (n.inline || n.size === 0) writeFileSync(path, n.inline ?? new Uint8Array(0), { mode: 0o600 });
          else copyFileSync(join(objectsDir, objectRelPath(toHex(n.digest!))), path, mode === 'reflink' ? constants.COPYFILE_FICLONE : 0);
        } else if (type === S_IFLNK) {
          symlinkSync(n.target!, path);
        } else if (type === S_IFCHR || type === S_IFBLK) {
          execFileSync('mknod', [path, type === S_IFCHR ? 'c' : 'b', String(major(n.rdev)), String(minor(n.rdev))]);
        } else if (type === S_IFIFO) {
          execFileSync('mkfifo', [path]);
        } else {
          continue; // sockets are not recreated (nothing could be listening)
        }
        meta.push([path, n]);
      }
    }
    applyMetadata(meta, dirs);
  } catch (e) {
    throw asSpaceError(e, dest);
  }
}

/** What applyMetadata needs of an entry. */
export type Meta = Pick<FsNode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'>;

/**
 * Owners before modes (chown clears setuid bits), xattrs (one setfattr for
 * all), then times: directories last and deepest first, as writing into
 * them changed theirs. `dirs` are in creation (parent first) order.
 */
export function applyMetadata(entries: Array<[string, Meta]>, dirs: Array<[string, Meta]>): void {
  let xattrScript = '';
  for (const [path, n] of [...entries, ...dirs]) {
    lchownSync(path, n.uid, n.gid);
    if ((n.mode & S_IFMT) !== S_IFLNK) chmodSync(path, n.mode & 0o7777);
    if (n.xattrs.size > 0) {
      xattrScript += `# file: ${escapePath(path)}\n`;
      for (const [k, v] of n.xattrs) xattrScript += `${k}=0x${Buffer.from(v).toString('hex')}\n`;
      xattrScript += '\n';
    }
  }
  // Fed on stdin: a killed create leaves no script file behind.
  if (xattrScript) execFileSync('setfattr', ['-h', '--restore=-'], { input: xattrScript, stdio: ['pipe', 'ignore', 'pipe'], maxBuffer: 64 << 20 });
  for (const [path, n] of [...entries, ...[...dirs].reverse()]) {
    const t = n.mtimeSec + n.mtimeNsec / 1e9;
    lutimesSync(path, t, t);
  }
}
