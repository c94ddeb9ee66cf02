// A canonical description of a directory tree, for tests that compare what
// cowshed produced (a mounted image, an unpacked container, an export) with
// what a reference tool produced from the same input. Inode numbers, device
// numbers and directory sizes differ between filesystems, so they are not
// part of the description; hardlinks are described by structure instead.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { createInterface } from 'node:readline';

export type EntryType = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

export interface EntryInfo {
  type: EntryType;
  /** Permission bits, including setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Content length of regular files; 0 for everything else (directory sizes are filesystem-specific). */
  size: number;
  /** Hex SHA-256 of a regular file's content. */
  sha256?: string;
  /** Symlink target. */
  target?: string;
  rdevMajor?: number;
  rdevMinor?: number;
  mtimeSec: number;
  /** Only with `{ nsec: true }`. */
  mtimeNsec?: number;
  /** Extended attribute name to hex value (no 0x), names sorted. */
  xattrs: Record<string, string>;
  /**
   * For a non-directory with more than one name inside the tree: the first of
   * those names in sorted order, the same for every name of the inode. Two
   * trees with the same link structure get the same groups, whatever their
   * inode numbers. Undefined for an inode with a single name.
   */
  linkGroup?: string;
}

export interface ListTreeOptions {
  /** Record mtime nanoseconds too. */
  nsec?: boolean;
  /** Leave out xattrs for which this returns true (e.g. security.selinux). */
  ignoreXattrs?: (name: string, path: string) => boolean;
  /** Skip hashing content (faster; sizes are still compared). */
  noHash?: boolean;
  /** A filesystem that stores no xattrs at all (zfs-fuse: getfattr fails, ENOTSUP): list none. */
  noXattrs?: boolean;
  /**
   * Paths, symlink targets and xattr names as binary strings (one char per
   * byte, as cowshed keeps names), exact for names that are not UTF-8.
   * Without it they are decoded as UTF-8.
   */
  bytes?: boolean;
}

/** Paths are "/" for the root and "/a/b" below it, like cowshed's own diff output. */
export async function listTree(dir: string, opts: ListTreeOptions = {}): Promise<Map<string, EntryInfo>> {
  // Walked with byte paths: names are bytes on Linux, not all of them UTF-8.
  const root = Buffer.from(await realpath(dir), 'utf8').toString('latin1');
  const bytesOf = (p: string): Buffer => Buffer.from(p, 'latin1');
  const out = new Map<string, EntryInfo>();
  const inodes = new Map<string, string[]>(); // "dev:ino" -> names of non-directories
  const toHash: [Buffer, EntryInfo][] = [];

  const visit = async (rel: string): Promise<void> => {
    const abs = bytesOf(rel === '/' ? root : root + rel);
    const st = await lstat(abs, { bigint: true });
    const mode = Number(st.mode);
    const info: EntryInfo = {
      type: typeOf(mode),
      mode: mode & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: 0,
      mtimeSec: Number(st.mtimeNs / 1_000_000_000n),
      xattrs: {},
    };
    if (opts.nsec) info.mtimeNsec = Number(st.mtimeNs % 1_000_000_000n);
    out.set(rel, info);
    if (info.type !== 'dir') {
      const key = `${st.dev}:${st.ino}`;
      const names = inodes.get(key);
      if (names) names.push(rel); else inodes.set(key, [rel]);
    }
    switch (info.type) {
      case 'file':
        info.size = Number(st.size);
        if (!opts.noHash) toHash.push([abs, info]);
        break;
      case 'symlink':
        info.target = await readlink(abs, { encoding: 'latin1' });
        break;
      case 'chardev':
      case 'blockdev': {
        // glibc's major()/minor() for the 64-bit dev_t encoding.
        const rdev = st.rdev;
        info.rdevMajor = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
        info.rdevMinor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
        break;
      }
      case 'dir': {
        const names = await readdir(abs, { encoding: 'latin1' });
        const prefix = rel === '/' ? '' : rel;
        // The lstats queue on libuv's thread pool, so this overlaps I/O without unbounded threads.
        await Promise.all(names.map((n) => visit(`${prefix}/${n}`)));
        break;
      }
    }
  };
  await visit('/');

  for (const names of inodes.values()) {
    if (names.length < 2) continue;
    names.sort();
    for (const n of names) out.get(n)!.linkGroup = names[0];
  }

  await pool(toHash, 16, async ([abs, info]) => { info.sha256 = await sha256File(abs, info.size); });
  if (!opts.noXattrs) await readXattrs(root, out, opts.ignoreXattrs && !opts.bytes ? (n, p) => opts.ignoreXattrs!(text(n), text(p)) : opts.ignoreXattrs);
  let entries = [...out.entries()];
  if (!opts.bytes) {
    entries = entries.map(([p, info]) => {
      if (info.target !== undefined) info.target = text(info.target);
      if (info.linkGroup !== undefined) info.linkGroup = text(info.linkGroup);
      info.xattrs = Object.fromEntries(Object.entries(info.xattrs).map(([k, v]) => [text(k), v]));
      return [text(p), info] as [string, EntryInfo];
    });
  }
  return new Map(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const text = (s: string): string => Buffer.from(s, 'latin1').toString('utf8');

function typeOf(mode: number): EntryType {
  switch (mode & 0o170000) {
    case 0o100000: return 'file';
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    case 0o020000: return 'chardev';
    case 0o060000: return 'blockdev';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    default: throw new Error(`unknown file type in mode ${mode.toString(8)}`);
  }
}

async function sha256File(path: Buffer, size: number): Promise<string> {
  if (size < 1 << 20) return createHash('sha256').update(await readFile(path)).digest('hex');
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** getfattr escapes unprintable bytes in file names as \ooo and the backslash as \\ (binary strings in and out). */
function unescapeName(s: string): string {
  if (!s.includes('\\')) return s;
  const bytes: number[] = [];
  const raw = Buffer.from(s, 'latin1');
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x5c && raw[i + 1] === 0x5c) { bytes.push(0x5c); i++; continue; }
    if (raw[i] === 0x5c && i + 3 < raw.length && /^[0-7]{3}$/.test(raw.subarray(i + 1, i + 4).toString('latin1'))) {
      bytes.push(parseInt(raw.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
      continue;
    }
    bytes.push(raw[i]!);
  }
  return Buffer.from(bytes).toString('latin1');
}

/** All xattrs of the tree with one getfattr process, parsed as it streams. */
async function readXattrs(
  root: string,
  out: Map<string, EntryInfo>,
  ignore: ((name: string, path: string) => boolean) | undefined,
): Promise<void> {
  const child = spawn('getfattr', ['-R', '-d', '-m', '-', '-e', 'hex', '-h', '--absolute-names', Buffer.from(root, 'latin1').toString('utf8')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4096) stderr += d; });
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? -1));
  });
  let current: EntryInfo | undefined;
  let currentPath = '';
  for await (const line of createInterface({ input: child.stdout.setEncoding('latin1'), crlfDelay: Infinity })) {
    if (line.startsWith('# file: ')) {
      const abs = unescapeName(line.slice(8));
      currentPath = abs === root ? '/' : abs.startsWith(root + '/') ? abs.slice(root.length) : abs;
      current = out.get(currentPath);
      if (!current) throw new Error(`getfattr reported a path outside the listing: ${abs}`);
      continue;
    }
    if (line === '' || !current) continue;
    const eq = line.indexOf('=');
    const name = unescapeName(eq < 0 ? line : line.slice(0, eq));
    let value = eq < 0 ? '' : line.slice(eq + 1);
    if (value.startsWith('0x')) value = value.slice(2);
    else if (value.startsWith('"')) value = Buffer.from(value.slice(1, -1)).toString('hex'); // not with -e hex, but be safe
    if (ignore?.(name, currentPath)) continue;
    current.xattrs[name] = value.toLowerCase();
  }
  const code = await exited;
  if (code !== 0) throw new Error(`getfattr exited ${code}: ${stderr.trim()}`);
  for (const info of out.values()) {
    const keys = Object.keys(info.xattrs);
    if (keys.length > 1) info.xattrs = Object.fromEntries(keys.sort().map((k) => [k, info.xattrs[k]!]));
  }
}

export interface CompareOptions {
  /**
   * Ignore the root directory's own mode, owner, mtime and xattrs: the root
   * of a mount point or of a temp dir is made by the test, not by the tool.
   */
  ignoreRoot?: boolean;
  /**
   * Ignore directory mtimes. Seen on the Debian image (v2 = v1 + one layer made
   * by `umoci repack`): that layer omits unchanged parent directories (it has
   * usr/lib/mime/packages/less but no usr/lib/mime/). `umoci unpack` and an
   * erofs image of its result keep the lower layer's mtime for such a parent;
   * podman (containers-storage) creates it in the upper layer with the current
   * time, and the overlay mount shows that. File mtimes agree everywhere;
   * erofs and umoci agree to the nanosecond.
   */
  ignoreDirMtime?: boolean;
  /** Ignore all mtimes. */
  ignoreMtime?: boolean;
  /** Leave these paths out of the comparison altogether. */
  ignorePath?: (path: string) => boolean;
  /** At most this many differences are listed (default 50), then a count of the rest. */
  limit?: number;
}

const octal = (m: number): string => m.toString(8).padStart(4, '0');

/** Human-readable differences between two listings; empty when they are equal. */
export function compareTrees(a: Map<string, EntryInfo>, b: Map<string, EntryInfo>, opts: CompareOptions = {}): string[] {
  const limit = opts.limit ?? 50;
  const diffs: string[] = [];
  let total = 0;
  const add = (s: string): void => { total++; if (diffs.length < limit) diffs.push(s); };

  const paths = new Set([...a.keys(), ...b.keys()]);
  for (const p of [...paths].sort()) {
    if (opts.ignorePath?.(p)) continue;
    const x = a.get(p);
    const y = b.get(p);
    if (!x) { add(`${p}: only in second tree (${y!.type})`); continue; }
    if (!y) { add(`${p}: only in first tree (${x.type})`); continue; }
    if (x.type !== y.type) { add(`${p}: type ${x.type} != ${y.type}`); continue; }
    const isRoot = p === '/';
    if (isRoot && opts.ignoreRoot) continue;
    if (x.mode !== y.mode) add(`${p}: mode ${octal(x.mode)} != ${octal(y.mode)}`);
    if (x.uid !== y.uid || x.gid !== y.gid) add(`${p}: owner ${x.uid}:${x.gid} != ${y.uid}:${y.gid}`);
    if (x.size !== y.size) add(`${p}: size ${x.size} != ${y.size}`);
    else if (x.sha256 !== y.sha256) add(`${p}: content differs (sha256 ${x.sha256?.slice(0, 12)} != ${y.sha256?.slice(0, 12)})`);
    if (x.target !== y.target) add(`${p}: symlink target ${JSON.stringify(x.target)} != ${JSON.stringify(y.target)}`);
    if (x.rdevMajor !== y.rdevMajor || x.rdevMinor !== y.rdevMinor) {
      add(`${p}: device ${x.rdevMajor},${x.rdevMinor} != ${y.rdevMajor},${y.rdevMinor}`);
    }
    const skipMtime = opts.ignoreMtime || (x.type === 'dir' && opts.ignoreDirMtime);
    if (!skipMtime) {
      if (x.mtimeSec !== y.mtimeSec) add(`${p}: mtime ${x.mtimeSec} != ${y.mtimeSec}`);
      else if (x.mtimeNsec !== undefined && y.mtimeNsec !== undefined && x.mtimeNsec !== y.mtimeNsec) {
        add(`${p}: mtime nsec ${x.mtimeNsec} != ${y.mtimeNsec}`);
      }
    }
    const names = new Set([...Object.keys(x.xattrs), ...Object.keys(y.xattrs)]);
    for (const n of [...names].sort()) {
      const vx = x.xattrs[n];
      const vy = y.xattrs[n];
      if (vx === vy) continue;
      if (vx === undefined) add(`${p}: xattr ${n} only in second tree`);
      else if (vy === undefined) add(`${p}: xattr ${n} only in first tree`);
      else add(`${p}: xattr ${n} 0x${vx.slice(0, 32)} != 0x${vy.slice(0, 32)}`);
    }
    if (x.linkGroup !== y.linkGroup) {
      add(`${p}: hardlinked with ${x.linkGroup ?? '(nothing)'} != with ${y.linkGroup ?? '(nothing)'}`);
    }
  }
  if (total > diffs.length) diffs.push(`... and ${total - diffs.length} more differences`);
  return diffs;
}
