// Writing an image's tree out as ordinary files (the btrfs and vfs drivers):
// contents reflinked from the object store where the filesystem can (btrfs,
// xfs), copied otherwise; hardlinks, devices, fifos, owners, modes, xattrs
// and mtimes as recorded. Everything is written below `dest` only, by paths
// built from the tree, never by following a symlink of the tree.
import {
  copyFileSync, constants, linkSync, openSync, closeSync, lchownSync, chmodSync, lutimesSync, mkdirSync, symlinkSync, writeFileSync, renameSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fromHost, fsPath } from '../util/names.ts';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { type FsNode, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, major, minor, walk } from '../tree/node.ts';
import { objectRelPath } from '../store/objects.ts';
import { toHex } from '../composefs/fsverity.ts';
import { asSpaceError } from '../util/fs.ts';

export type CopyMode = 'reflink' | 'copy';

/** Escape a path or xattr name (binary strings) for setfattr --restore (getfattr's quoting: octal for odd bytes). */
function escapePath(p: string): string {
  return [...Buffer.from(p, 'latin1')].map((b) => (b < 0x21 || b > 0x7e || b === 0x5c || b === 0x3d ? `\\${b.toString(8).padStart(3, '0')}` : String.fromCharCode(b))).join('');
}

/**
 * A device or fifo at `path` (a binary string). mknod(1) and mkfifo(1) take
 * names as UTF-8 arguments, so the node is made under a plain temporary
 * name in the same directory, reached through our descriptor of it
 * (/proc/PID/fd/N), and renamed to its real bytes.
 */
export function makeSpecial(path: string, args: string[]): void {
  const slash = path.lastIndexOf('/');
  const dir = path.slice(0, slash + 1);
  const tmpName = `.cowshed-node-${randomBytes(6).toString('hex')}`;
  const fd = openSync(fsPath(dir), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const via = `/proc/${process.pid}/fd/${fd}/${tmpName}`;
    if (args[0] === 'p') execFileSync('mkfifo', [via]);
    else execFileSync('mknod', [via, ...args]);
  } finally {
    closeSync(fd);
  }
  renameSync(fsPath(dir + tmpName), fsPath(path));
}

/** `dest` is a host path; names below it are written as the bytes they are. */
export function materializeTree(root: FsNode, destDir: string, objectsDir: string, mode: CopyMode = 'reflink'): void {
  const dest = fromHost(destDir);
  const first = new Map<FsNode, string>();
  const dirs: Array<[string, FsNode]> = [];
  const meta: Array<[string, FsNode]> = [];
  try {
    for (const [rel, n] of walk(root)) {
      const path = rel === '/' ? dest : join(dest, rel);
      const type = n.mode & S_IFMT;
      if (type === S_IFDIR) {
        if (rel !== '/') mkdirSync(fsPath(path), { mode: 0o700 });
        dirs.push([path, n]);
      } else {
        const seen = first.get(n);
        if (seen) { linkSync(fsPath(seen), fsPath(path)); continue; }
        first.set(n, path);
        if (type === S_IFREG) {
          if (n.inline || n.size === 0) writeFileSync(fsPath(path), n.inline ?? new Uint8Array(0), { mode: 0o600 });
          else copyFileSync(join(objectsDir, objectRelPath(toHex(n.digest!))), fsPath(path), mode === 'reflink' ? constants.COPYFILE_FICLONE : 0);
        } else if (type === S_IFLNK) {
          symlinkSync(fsPath(n.target!), fsPath(path));
        } else if (type === S_IFCHR || type === S_IFBLK) {
          makeSpecial(path, [type === S_IFCHR ? 'c' : 'b', String(major(n.rdev)), String(minor(n.rdev))]);
        } else if (type === S_IFIFO) {
          makeSpecial(path, ['p']);
        } else {
          continue; // sockets are not recreated (nothing could be listening)
        }
        meta.push([path, n]);
      }
    }
    applyMetadata(meta, dirs);
  } catch (e) {
    throw asSpaceError(e, destDir);
  }
}

/** What applyMetadata needs of an entry. */
export type Meta = Pick<FsNode, 'mode' | 'uid' | 'gid' | 'mtimeSec' | 'mtimeNsec' | 'xattrs'>;

/**
 * Owners before modes (chown clears setuid bits), xattrs (one setfattr for
 * all), then times: directories last and deepest first, as writing into
 * them changed theirs. `dirs` are in creation (parent first) order. Paths
 * are binary strings (util/names.ts).
 */
export function applyMetadata(entries: Array<[string, Meta]>, dirs: Array<[string, Meta]>): void {
  let xattrScript = '';
  for (const [path, n] of [...entries, ...dirs]) {
    lchownSync(fsPath(path), n.uid, n.gid);
    if ((n.mode & S_IFMT) !== S_IFLNK) chmodSync(fsPath(path), n.mode & 0o7777);
    if (n.xattrs.size > 0) {
      xattrScript += `# file: ${escapePath(path)}\n`;
      for (const [k, v] of n.xattrs) xattrScript += `${escapePath(k)}=0x${Buffer.from(v).toString('hex')}\n`;
      xattrScript += '\n';
    }
  }
  // Fed on stdin: a killed create leaves no script file behind.
  if (xattrScript) execFileSync('setfattr', ['-h', '--restore=-'], { input: Buffer.from(xattrScript, 'latin1'), stdio: ['pipe', 'ignore', 'pipe'], maxBuffer: 64 << 20 });
  for (const [path, n] of [...entries, ...[...dirs].reverse()]) {
    const t = n.mtimeSec + n.mtimeNsec / 1e9;
    lutimesSync(fsPath(path), t, t);
  }
}

/** Sets xattrs on paths (binary strings), with one setfattr. */
export function setXattrs(list: Array<[string, Map<string, Uint8Array>]>): void {
  let script = '';
  for (const [path, xs] of list) {
    script += `# file: ${escapePath(path)}\n`;
    for (const [k, v] of xs) script += `${escapePath(k)}=0x${Buffer.from(v).toString('hex')}\n`;
    script += '\n';
  }
  if (script) execFileSync('setfattr', ['-h', '--restore=-'], { input: Buffer.from(script, 'latin1'), stdio: ['pipe', 'ignore', 'pipe'], maxBuffer: 64 << 20 });
}
