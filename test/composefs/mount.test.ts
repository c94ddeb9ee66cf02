// What the kernel sees: images we write are loop-mounted as EROFS with an
// overlay on top (objects as a data-only layer), and the mounted tree must be
// the tree we wrote. Random trees cover every file type, binary xattrs,
// hardlinks, inline and external files; a real directory covers
// treeFromDirectory. Needs root (mount, loop devices); skipped otherwise.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  mkdtempSync, mkdirSync, writeFileSync, rmSync, readFileSync, lstatSync, readdirSync, readlinkSync,
  symlinkSync, linkSync, copyFileSync, existsSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeComposefsImage } from '../../src/composefs/erofs-writer.ts';
import { readComposefsImage } from '../../src/composefs/erofs-reader.ts';
import { printDump } from '../../src/composefs/dump.ts';
import { treeFromDirectory, readAllXattrs } from '../../src/composefs/from-dir.ts';
import { fromHost } from '../../src/util/names.ts';
import { FsVerityHasher } from '../../src/composefs/fsverity.ts';
import {
  type FsNode, S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, newNode, makedev, walk,
} from '../../src/tree/node.ts';

const canMount = process.getuid?.() === 0 && existsSync('/dev/loop-control');
const work = mkdtempSync(join(tmpdir(), 'cfs-mount-'));
const mounted: string[] = [];

after(() => {
  for (const m of mounted.reverse()) {
    try {
      execFileSync('umount', [m], { stdio: 'pipe' });
    } catch { /* already gone */ }
  }
  rmSync(work, { recursive: true, force: true });
});

function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mount `image` as EROFS and an overlay over it with `objects` as data layer; returns the overlay path. */
function mountComposefs(name: string, image: Buffer, objects: string): string {
  const img = join(work, `${name}.cfs`);
  const lower = join(work, `${name}-lower`);
  const top = join(work, `${name}-mnt`);
  writeFileSync(img, image);
  mkdirSync(lower);
  mkdirSync(top);
  execFileSync('mount', ['-t', 'erofs', '-o', 'loop,ro', img, lower]);
  mounted.push(lower);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o',
    `ro,metacopy=on,redirect_dir=on,lowerdir+=${lower},datadir+=${objects}`, top]);
  mounted.push(top);
  return top;
}

function unmount(top: string): void {
  for (const m of [top, top.replace(/-mnt$/, '-lower')]) {
    execFileSync('umount', [m]);
    mounted.splice(mounted.indexOf(m), 1);
  }
}

interface Desc { line: string; ino: string }

/** One comparable line per path: type, permissions, owner, times, size, target, content, xattrs. */
function describe(p: {
  mode: number; uid: number; gid: number; nlink: number; size: number; rdev: number; mtimeSec: number; mtimeNsec: number;
  target?: string; content?: Buffer; xattrs: Map<string, Uint8Array>;
}, isRoot: boolean): string {
  const type = p.mode & S_IFMT;
  const xs = [...p.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${Buffer.from(v).toString('hex')}`).join(',');
  return [
    (p.mode & 0o177777).toString(8), p.uid, p.gid, isRoot ? '-' : p.nlink,
    type === S_IFREG ? p.size : '-', type === S_IFCHR || type === S_IFBLK ? p.rdev : '-',
    `${p.mtimeSec}.${p.mtimeNsec}`, p.target ?? '-', p.content ? p.content.toString('hex') : '-', xs,
  ].join(' ');
}

/** Walk a mounted (or real) directory tree. */
async function readMounted(top: string): Promise<Map<string, Desc>> {
  const xattrs = await readAllXattrs(top);
  const out = new Map<string, Desc>();
  const visit = (abs: string, rel: string): void => {
    const st = lstatSync(abs, { bigint: true });
    const mode = Number(st.mode);
    const type = mode & S_IFMT;
    const desc = describe({
      mode, uid: Number(st.uid), gid: Number(st.gid), nlink: Number(st.nlink), size: Number(st.size), rdev: Number(st.rdev),
      mtimeSec: Number(st.mtimeNs / 1_000_000_000n), mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
      target: type === S_IFLNK ? readlinkSync(abs) : undefined,
      content: type === S_IFREG ? readFileSync(abs) : undefined,
      xattrs: xattrs.get(Buffer.from(abs).toString('latin1')) ?? new Map(),
    }, rel === '/');
    out.set(rel, { line: desc, ino: `${st.dev}:${st.ino}` });
    if (type === S_IFDIR) {
      for (const name of readdirSync(abs).sort()) visit(join(abs, name), rel === '/' ? `/${name}` : `${rel}/${name}`);
    }
  };
  visit(top, '/');
  return out;
}

/** What the overlay shows for a tree: whiteouts are escaped into empty files carrying overlay xattrs. */
function expected(root: FsNode, contents: Map<FsNode, Buffer>): Map<string, Desc> {
  const ids = new Map<FsNode, string>();
  const out = new Map<string, Desc>();
  for (const [path, n] of walk(root)) {
    const type = n.mode & S_IFMT;
    const xattrs = new Map(n.xattrs);
    let mode = n.mode;
    let size = n.size;
    if (type === S_IFCHR && n.rdev === 0) {
      mode = (mode & ~S_IFMT) | S_IFREG;
      size = 0;
      xattrs.set('trusted.overlay.whiteout', new Uint8Array());
      xattrs.set('user.overlay.whiteout', new Uint8Array());
    }
    if (type === S_IFDIR && [...n.children!.values()].some((c) => (c.mode & S_IFMT) === S_IFCHR && c.rdev === 0)) {
      for (const k of ['trusted.overlay.whiteouts', 'user.overlay.whiteouts']) xattrs.set(k, new Uint8Array());
      for (const k of ['trusted.overlay.opaque', 'user.overlay.opaque']) xattrs.set(k, Buffer.from('x'));
    }
    if (!ids.has(n)) ids.set(n, String(ids.size));
    out.set(Buffer.from(path, "latin1").toString("utf8"), { // tree names are bytes; the mount is read as UTF-8 text
      line: describe({
        ...n, mode, size, xattrs,
        content: (mode & S_IFMT) === S_IFREG ? (n.inline ? Buffer.from(n.inline) : contents.get(n) ?? Buffer.alloc(0)) : undefined,
      }, path === '/'),
      ino: ids.get(n)!,
    });
  }
  return out;
}

/** Same entries, same attributes, and names share an inode exactly when they share one in the tree. */
function assertSameTree(actual: Map<string, Desc>, want: Map<string, Desc>): void {
  assert.deepEqual([...actual.keys()].sort(), [...want.keys()].sort());
  for (const [p, d] of want) assert.equal(actual.get(p)!.line, d.line, p);
  const groups = (m: Map<string, Desc>): string[] => {
    const g = new Map<string, string[]>();
    for (const [p, d] of m) g.set(d.ino, [...(g.get(d.ino) ?? []), p]);
    return [...g.values()].map((ps) => ps.sort().join('|')).sort();
  };
  assert.deepEqual(groups(actual), groups(want));
}

function randomTree(seed: number, objects: string): { root: FsNode; contents: Map<FsNode, Buffer> } {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
  const contents = new Map<FsNode, Buffer>();
  const time = (): Partial<FsNode> => ({
    mtimeSec: rand() < 0.5 ? 1700000000 : 1600000000 + Math.floor(rand() * 1e8),
    mtimeNsec: rand() < 0.5 ? 0 : Math.floor(rand() * 1e9),
  });
  const owner = (): Partial<FsNode> => (rand() < 0.7 ? { uid: 0, gid: 0 } : { uid: Math.floor(rand() * 100000), gid: Math.floor(rand() * 70000) });
  // The kernel only allows user.* on files and directories, and drops security.capability values it cannot parse.
  const xattrs = (userOk = true): Map<string, Uint8Array> => {
    const m = new Map<string, Uint8Array>();
    const keys = [...(userOk ? ['user.a', 'user.b', 'user.binary'] : []), 'trusted.t', 'security.cowshed', 'trusted.overlay.mine'];
    const n = rand() < 0.5 ? 0 : Math.floor(rand() * 4);
    for (let i = 0; i < n; i++) {
      // Repeat common values so some xattrs land in the shared table.
      m.set(pick(keys), rand() < 0.5 ? Buffer.from('shared-value') : bytes(Math.floor(rand() * 40)));
    }
    return m;
  };
  const root = newNode(S_IFDIR | 0o755, { ...time(), xattrs: xattrs() });
  const dirs: FsNode[] = [root];
  const files: FsNode[] = [];
  let made = 0;
  const name = (): string => {
    const base = pick(['a', 'bin', 'etc', 'x y', 'long-' + 'n'.repeat(Math.floor(rand() * 200)), fromHost('ünï') /* names are bytes: the UTF-8 encoding */, 'f', '.hidden', 'ab', '00']);
    return `${base}${made}`;
  };
  while (made < 300) {
    const dir = pick(dirs);
    const nm = name();
    if (dir.children!.has(nm)) continue;
    made++;
    const r = rand();
    let n: FsNode;
    if (r < 0.12 && dirs.length < 40) {
      n = newNode(S_IFDIR | pick([0o755, 0o700, 0o1777]), { ...time(), ...owner(), xattrs: xattrs() });
      dirs.push(n);
    } else if (r < 0.4) {
      const size = pick([1, 10, 64, 100, 2049, 4095, 4096, 5000]);
      n = newNode(S_IFREG | pick([0o644, 0o755, 0o4755, 0o600]), { ...time(), ...owner(), xattrs: xattrs(), size, inline: bytes(size) });
      files.push(n);
    } else if (r < 0.65) {
      const size = pick([1, 65, 4096, 4097, 100000, 1 << 20]);
      const data = bytes(size);
      const digest = new FsVerityHasher().update(data).digest();
      const hex = digest.toString('hex');
      mkdirSync(join(objects, hex.slice(0, 2)), { recursive: true });
      writeFileSync(join(objects, hex.slice(0, 2), hex.slice(2)), data);
      n = newNode(S_IFREG | 0o644, {
        ...time(), ...owner(), xattrs: xattrs(), size, digest: new Uint8Array(digest), payload: `${hex.slice(0, 2)}/${hex.slice(2)}`,
      });
      contents.set(n, data);
      files.push(n);
    } else if (r < 0.7) {
      n = newNode(S_IFREG | 0o644, { ...time(), ...owner(), xattrs: xattrs() });
      files.push(n);
    } else if (r < 0.8) {
      n = newNode(S_IFLNK | 0o777, { ...time(), ...owner(), xattrs: xattrs(false), target: pick(['target', '../up', '/abs/path', 'x'.repeat(1 + Math.floor(rand() * 3000))]) });
      files.push(n);
    } else if (r < 0.85) {
      n = newNode(pick([S_IFCHR, S_IFBLK]) | 0o660, { ...time(), ...owner(), rdev: makedev(1 + Math.floor(rand() * 200), Math.floor(rand() * 300)) });
      files.push(n);
    } else if (r < 0.9) {
      n = newNode(pick([S_IFIFO, S_IFSOCK]) | 0o644, { ...time(), ...owner(), xattrs: xattrs(false) });
      files.push(n);
    } else if (r < 0.94) {
      n = newNode(S_IFCHR | 0o644, { ...time(), ...owner() }); // whiteout (0:0)
    } else {
      if (files.length === 0) continue;
      n = pick(files); // hardlink
      n.nlink++;
    }
    dir.children!.set(nm, n);
  }
  // Directory link counts as the kernel reports them.
  for (const d of dirs) d.nlink = 2 + [...d.children!.values()].filter((c) => (c.mode & S_IFMT) === S_IFDIR).length;
  return { root, contents };
}

for (const seed of [1, 2, 3]) {
  test(`random tree ${seed}: image mounts as the same tree`, { skip: !canMount && 'needs root and loop devices' }, async () => {
    const objects = join(work, `objects-${seed}`);
    mkdirSync(objects);
    const { root, contents } = randomTree(seed, objects);
    const image = writeComposefsImage(root);
    writeFileSync(join(work, 'fsck.img'), image);
    execFileSync('fsck.erofs', [join(work, 'fsck.img')], { stdio: 'pipe' });
    // The reader gives back the same tree, too.
    assert.equal(printDump(readComposefsImage(image)), printDump(root));
    const top = mountComposefs(`rand${seed}`, image, objects);
    try {
      assertSameTree(await readMounted(top), expected(root, contents));
    } finally {
      unmount(top);
    }
  });
}

test('treeFromDirectory: a real directory mounts back as itself', { skip: !canMount && 'needs root and loop devices' }, async () => {
  const src = join(work, 'src');
  const objects = join(work, 'objects-dir');
  mkdirSync(objects);
  mkdirSync(join(src, 'sub/deeper'), { recursive: true });
  writeFileSync(join(src, 'small'), 'hello\n');
  writeFileSync(join(src, 'empty'), '');
  writeFileSync(join(src, 'exactly64'), 'x'.repeat(64));
  writeFileSync(join(src, 'sub/big'), Buffer.alloc(300000, 7));
  writeFileSync(join(src, 'sub/deeper/medium'), 'm'.repeat(65));
  linkSync(join(src, 'sub/big'), join(src, 'big-link'));
  linkSync(join(src, 'small'), join(src, 'sub/small-link'));
  symlinkSync('sub/big', join(src, 'sym'));
  symlinkSync('/nowhere/' + 'p'.repeat(300), join(src, 'sub/dangling'));
  writeFileSync(join(src, 'name with spaces\nand newline'), 'odd');
  execFileSync('mkfifo', [join(src, 'fifo')]);
  execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
  execFileSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', join(src, 'small')]);
  execFileSync('setfattr', ['-n', 'user.same', '-v', 'v', join(src, 'sub')]);
  execFileSync('setfattr', ['-n', 'user.same', '-v', 'v', join(src, 'sub/big')]);
  execFileSync('setfattr', ['-n', 'trusted.overlay.redirect', '-v', '/escaped', join(src, 'empty')]);
  execFileSync('setfattr', ['-h', '-n', 'trusted.linkattr', '-v', 'on-symlink', join(src, 'sym')]);
  execFileSync('chown', ['1234:5678', join(src, 'sub/deeper/medium')]);
  execFileSync('touch', ['-d', '2001-02-03 04:05:06.789', join(src, 'sub/deeper')]);
  execFileSync('touch', ['-d', '1999-01-01', join(src)]);

  const stored: string[] = [];
  const root = await treeFromDirectory(src, {
    hardlinks: true,
    storeObject: async (p, digest) => {
      const hex = digest.toString('hex');
      mkdirSync(join(objects, hex.slice(0, 2)), { recursive: true });
      copyFileSync(p, join(objects, hex.slice(0, 2), hex.slice(2)));
      stored.push(p.toString());
    },
  });
  assert.equal(stored.length, 2, 'one object per external inode (big, medium)');
  assert.ok(root.children!.get('small')!.inline, 'files up to 64 bytes are inline');
  assert.equal(root.children!.get('big-link'), root.children!.get('sub')!.children!.get('big'));
  assert.equal(root.children!.get('big-link')!.nlink, 2);
  // By default (as mkcomposefs 1.0.x) each name is its own inode with nlink 1, same content.
  const split = await treeFromDirectory(src);
  const [a, b] = [split.children!.get('big-link')!, split.children!.get('sub')!.children!.get('big')!];
  assert.notEqual(a, b);
  assert.deepEqual([a.nlink, b.nlink], [1, 1]);
  assert.equal(a.payload, b.payload);
  assert.deepEqual(split.children!.get('sub')!.children!.get('small-link')!.inline, root.children!.get('small')!.inline);
  const want = await readMounted(src);
  const top = mountComposefs('fromdir', writeComposefsImage(root), objects);
  try {
    assertSameTree(await readMounted(top), want);
  } finally {
    unmount(top);
  }
});

test('treeFromDirectory options: userXattrs, skipXattrs, skipDevices, useEpoch', async () => {
  const src = join(work, 'opts');
  mkdirSync(src);
  writeFileSync(join(src, 'f'), 'data');
  execFileSync('setfattr', ['-n', 'user.u', '-v', '1', join(src, 'f')]);
  execFileSync('setfattr', ['-n', 'trusted.t', '-v', '2', join(src, 'f')]);
  if (canMount) execFileSync('mknod', [join(src, 'dev'), 'b', '7', '0']);
  const all = await treeFromDirectory(src);
  assert.deepEqual([...all.children!.get('f')!.xattrs.keys()].sort(), ['trusted.t', 'user.u']);
  const user = await treeFromDirectory(src, { userXattrs: true });
  assert.deepEqual([...user.children!.get('f')!.xattrs.keys()], ['user.u']);
  const none = await treeFromDirectory(src, { skipXattrs: true, skipDevices: true, useEpoch: true });
  assert.equal(none.children!.get('f')!.xattrs.size, 0);
  assert.equal(none.children!.has('dev'), false);
  assert.equal(none.mtimeSec, 0);
  assert.equal(none.children!.get('f')!.mtimeSec, 0);
  await assert.rejects(treeFromDirectory(src, { skipXattrs: true, userXattrs: true }), { code: 'EINVAL' });
  await assert.rejects(treeFromDirectory(join(src, 'missing')), { code: 'ENOENT' });
});
