// Build an FsNode tree from a directory on disk, as `mkcomposefs DIR` does:
// lstat every entry, keep xattrs (all by default, only user.* with
// userXattrs, none with skipXattrs), inline small files, compute fs-verity
// digests of the others and refer to them by digest path ("ab/cdef…"),
// optionally copying them into a digest store.
//
// Hardlinks: like mkcomposefs 1.0.x (and upstream today), every name of a
// hardlinked file becomes its own inode with nlink 1, so a digest computed by
// either tool on the same directory agrees. `hardlinks: true` keeps them:
// names sharing (dev, ino) become one FsNode whose nlink counts the names
// inside the tree (what upstream's proposed `mkcomposefs --hardlinks` does).
//
// Cost: one synchronous walk (lstat, readdir, readlink, small files), one
// `getfattr -R` run beside it for every xattr of the tree, and the hashing of
// the external files (hash-files.ts), on worker threads for big trees.
import { spawn } from 'node:child_process';
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { type FsNode, S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, newNode } from '../tree/node.ts';
import { CowshedError, errno } from '../util/errors.ts';
import { escapeName } from '../util/names.ts';
import { hashFiles, type HashJob } from './hash-pool.ts';

export interface TreeFromDirectoryOptions {
  skipXattrs?: boolean;
  /** Keep only user.* xattrs. */
  userXattrs?: boolean;
  /** Leave out block and character devices. */
  skipDevices?: boolean;
  /** Record every mtime as 0. */
  useEpoch?: boolean;
  /** Files up to this size are stored inside the image (mkcomposefs: 64). */
  inlineMax?: number;
  /** Keep hardlinks (one inode under several names) instead of one inode per name as mkcomposefs 1.0.x. */
  hardlinks?: boolean;
  /** Copy every external file into this digest store (XX/<62 hex>), where it is not already. */
  digestStore?: string;
  /** Threads hashing files, this one included (default: the cores available; small trees use one). */
  threads?: number;
  /** Called once per external inode (by first name) once its digest is known, e.g. to remember where its content is. */
  storeObject?: (srcPath: Buffer, digest: Buffer, size: number) => Promise<void>;
}

/** getfattr escapes file names with backslash-octal (\012, \134); `s` is a binary string. */
function unescapeOctal(s: string): Buffer {
  const bytes: number[] = [];
  const raw = Buffer.from(s, 'latin1');
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x5c && i + 3 < raw.length && /^[0-7]{3}$/.test(raw.subarray(i + 1, i + 4).toString('latin1'))) {
      bytes.push(parseInt(raw.subarray(i + 1, i + 4).toString('latin1'), 8));
      i += 3;
    } else {
      bytes.push(raw[i]!);
    }
  }
  return Buffer.from(bytes);
}

/** All xattrs under `dir` (symlinks not followed), from one `getfattr -R` run, keyed by absolute path as a binary string; names are binary strings too. */
export async function readAllXattrs(dir: string): Promise<Map<string, Map<string, Uint8Array>>> {
  const out = new Map<string, Map<string, Uint8Array>>();
  const child = spawn('getfattr', ['-R', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '-h', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => { if (stderr.length < 4096) stderr += d; });
  const exited = new Promise<number | null>((res, rej) => {
    child.on('error', rej);
    child.on('close', (code) => res(code));
  });
  let current: Map<string, Uint8Array> | undefined;
  // getfattr prints bytes; decode as latin1 so every byte survives to unescapeOctal.
  const rl = createInterface({ input: child.stdout.setEncoding('latin1'), crlfDelay: Infinity });
  for await (const lineLatin1 of rl) {
    const line = lineLatin1;
    if (line.startsWith('# file: ')) {
      current = new Map();
      out.set(unescapeOctal(line.slice(8)).toString('latin1'), current);
    } else if (line !== '' && current) {
      const eq = line.indexOf('=');
      const key = eq < 0 ? line : line.slice(0, eq);
      const val = eq < 0 ? '' : line.slice(eq + 1);
      let value: Buffer;
      if (val.startsWith('0x')) value = Buffer.from(val.slice(2), 'hex');
      else if (val.startsWith('"')) value = Buffer.from(val.slice(1, -1), 'latin1');
      else if (val.startsWith('0s')) value = Buffer.from(val.slice(2), 'base64');
      else value = Buffer.alloc(0);
      current.set(unescapeOctal(key).toString('latin1'), new Uint8Array(value));
    }
  }
  const code = await exited.catch((e: unknown) => {
    throw new CowshedError('ETOOL', `cannot run getfattr (install the attr package): ${(e as Error).message}`);
  });
  if (code !== 0) throw new CowshedError('ETOOL', `getfattr failed on ${dir}: ${stderr.trim().split('\n')[0]}`);
  return out;
}

export async function treeFromDirectory(dir: string, opts: TreeFromDirectoryOptions = {}): Promise<FsNode> {
  if (opts.skipXattrs && opts.userXattrs) throw new CowshedError('EINVAL', 'skipXattrs and userXattrs conflict');
  const inlineMax = opts.inlineMax ?? 64;
  const top = resolve(dir);
  const rootStat = await lstat(top).catch((e: unknown) => {
    throw new CowshedError(errno(e) === 'ENOENT' ? 'ENOENT' : 'EINVAL', `cannot read ${top}: ${(e as Error).message}`);
  });
  if (!rootStat.isDirectory()) throw new CowshedError('EINVAL', `${top} is not a directory`);
  // getfattr walks the tree in its own process while this one walks and hashes.
  const xattrsRead = opts.skipXattrs ? undefined : readAllXattrs(top);
  xattrsRead?.catch(() => {}); // awaited below; not unhandled if the walk fails first
  const paths = new Map<string, FsNode>(); // by absolute path (binary string), to attach the xattrs
  /** Names of one inode (st_nlink > 1): the node (hardlinks kept), or its shared content. */
  const byIno = new Map<string, { node: FsNode; job?: HashJob }>();
  const jobs: HashJob[] = [];

  const readInline = (path: Buffer, size: number): Uint8Array => {
    const fd = openSync(path, 'r');
    try {
      const buf = new Uint8Array(size);
      let got = 0;
      while (got < size) {
        const n = readSync(fd, buf, got, size - got, got);
        if (n === 0) throw new CowshedError('EINVAL', `${escapeName(path.toString('latin1'))}: file shrank while reading`);
        got += n;
      }
      return buf;
    } finally {
      closeSync(fd);
    }
  };

  // Synchronous calls: thousands of small files cost a thread-pool round
  // trip each otherwise.
  const loadEntry = (pathStr: string): FsNode | undefined => {
    const path = Buffer.from(pathStr, 'latin1');
    const st = lstatSync(path, { bigint: true });
    const mode = Number(st.mode);
    const type = mode & S_IFMT;
    if (opts.skipDevices && (type === S_IFBLK || type === S_IFCHR)) return undefined;
    const key = type !== S_IFDIR && st.nlink > 1n ? `${st.dev}:${st.ino}` : undefined;
    const seen = key === undefined ? undefined : byIno.get(key);
    if (seen && opts.hardlinks) {
      seen.node.nlink++;
      return seen.node;
    }
    const node = newNode(mode, {
      uid: Number(st.uid), gid: Number(st.gid),
      rdev: type === S_IFBLK || type === S_IFCHR ? Number(st.rdev) : 0,
      mtimeSec: opts.useEpoch ? 0 : Number(st.mtimeNs / 1_000_000_000n),
      mtimeNsec: opts.useEpoch ? 0 : Number(st.mtimeNs % 1_000_000_000n),
    });
    paths.set(pathStr, node);
    if (type === S_IFLNK) {
      node.target = readlinkSync(path, { encoding: 'latin1' });
    } else if (type === S_IFREG) {
      const size = Number(st.size);
      node.size = size;
      if (seen) {
        // Another name of a file already read: same content, no second read or hash.
        if (seen.node.inline) node.inline = seen.node.inline;
        seen.job?.nodes.push(node);
      } else if (size > 0 && size <= inlineMax) {
        node.inline = readInline(path, size);
      } else if (size > 0) {
        const job: HashJob = { path, size, nodes: [node] };
        jobs.push(job);
        if (key !== undefined) byIno.set(key, { node, job });
      }
    }
    if (key !== undefined && !byIno.has(key)) byIno.set(key, { node });
    return node;
  };
  const load = (path: string): FsNode | undefined => {
    try {
      return loadEntry(path);
    } catch (e) {
      if (e instanceof CowshedError) throw e;
      // Files vanishing or unreadable mid-walk: name the file, keep the cause.
      throw new CowshedError(errno(e) === 'ENOENT' ? 'ENOENT' : 'EINVAL', `cannot read ${escapeName(path)}: ${(e as Error).message}`, { cause: e });
    }
  };

  const topStr = Buffer.from(top, 'utf8').toString('latin1');
  const root = load(topStr)!;
  const stack: [FsNode, string][] = [[root, topStr]];
  while (stack.length) {
    const [node, path] = stack.pop()!;
    let names: string[];
    try {
      names = readdirSync(Buffer.from(path, 'latin1'), { encoding: 'latin1' });
    } catch (e) {
      throw new CowshedError('EINVAL', `cannot list ${escapeName(path)}: ${(e as Error).message}`, { cause: e });
    }
    for (const name of names) {
      const childPath = `${path}/${name}`;
      const child = load(childPath);
      if (!child) continue;
      node.children!.set(name, child);
      if ((child.mode & S_IFMT) === S_IFDIR) stack.push([child, childPath]);
    }
  }

  await hashFiles(jobs, { digestStore: opts.digestStore, threads: opts.threads });
  if (opts.storeObject) for (const j of jobs) await opts.storeObject(j.path, Buffer.from(j.nodes[0]!.digest!), j.size);

  for (const [path, xs] of (await xattrsRead) ?? []) {
    const node = paths.get(path);
    if (!node) continue; // a device left out, or a file made after the walk
    for (const [k, v] of xs) if (!opts.userXattrs || k.startsWith('user.')) node.xattrs.set(k, v);
  }

  // Directory link counts as the image records them: 2 + subdirectories.
  const fix = (n: FsNode): void => {
    let subdirs = 0;
    for (const c of n.children?.values() ?? []) {
      if ((c.mode & S_IFMT) === S_IFDIR) { subdirs++; fix(c); }
    }
    if (n.children) n.nlink = 2 + subdirs;
  };
  fix(root);
  return root;
}
