// A tree as tar entries (for a layer made from a directory, and later for
// commit and export): sorted paths, parents before children, the root as
// "./", a hardlink entry for every further name of a node, sockets left out
// (tar cannot hold them, GNU tar skips them too).
import type { TarHeaderInput } from '../tar/writer.ts';
import type { TarEntryType } from '../tar/reader.ts';
import { type FsNode, S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, major, minor, walk } from './node.ts';

const TYPES: Record<number, TarEntryType> = {
  [S_IFREG]: 'file', [S_IFDIR]: 'dir', [S_IFLNK]: 'symlink', [S_IFCHR]: 'char', [S_IFBLK]: 'block', [S_IFIFO]: 'fifo',
};

export interface TarSourceEntry { header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }

export function* treeToTarEntries(
  root: FsNode,
  openContent: (node: FsNode, path: string) => AsyncIterable<Uint8Array>,
): Generator<TarSourceEntry> {
  const firstName = new Map<FsNode, string>();
  for (const [path, node] of walk(root)) {
    const type = TYPES[node.mode & S_IFMT];
    if (!type) continue; // a socket
    const name = path === '/' ? './' : path.slice(1);
    const header: TarHeaderInput = {
      path: name, type, mode: node.mode & 0o7777, uid: node.uid, gid: node.gid,
      mtimeSec: node.mtimeSec, mtimeNsec: node.mtimeNsec, xattrs: node.xattrs,
    };
    if (type !== 'dir') {
      const first = firstName.get(node);
      if (first !== undefined) {
        yield { header: { ...header, type: 'hardlink', linkname: first, xattrs: new Map() } };
        continue;
      }
      firstName.set(node, name);
    }
    if (type === 'symlink') header.linkname = node.target;
    if (type === 'char' || type === 'block') { header.devmajor = major(node.rdev); header.devminor = minor(node.rdev); }
    if (type === 'file') {
      header.size = node.size;
      yield { header, body: node.size > 0 ? (node.inline ? once(node.inline) : openContent(node, path)) : undefined };
    } else {
      yield { header };
    }
  }
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}
