// Builds a large, deterministic directory tree for scaling benchmarks:
//   node scripts/gen-synthetic-tree.ts DIR [--entries 100000] [--seed 1] [--oci LAYOUT[:TAG]]
// Many small files, a few large ones, deep directories, symlinks, hardlinks,
// duplicate contents, varied modes and owners, user.* xattrs and fixed mtimes.
// The same entries and seed give the same tree (names, contents, metadata).
// With --oci the tree is also packed as a one-layer OCI image (umoci), and
// made of what such a layer can hold: whole-second mtimes, no empty xattr
// values (so the directory and the image are the same tree).
import { execFileSync } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import {
  chmodSync, existsSync, linkSync, lchownSync, lutimesSync, mkdirSync, readdirSync, rmSync, symlinkSync,
  utimesSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

/** Small, fast, seedable PRNG (mulberry32): the tree must not depend on Math.random. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SyntheticTreeOptions {
  entries: number;
  seed: number;
  /**
   * Only what an OCI layer written by umoci keeps: whole-second mtimes (Go's
   * archive/tar rounds them) and no empty-valued xattrs (PAX cannot carry
   * them). Set with --oci, so that the directory and the image hold the same tree.
   */
  ociFaithful?: boolean;
}

export interface SyntheticTreeStats {
  dirs: number;
  files: number;
  symlinks: number;
  hardlinks: number;
  xattrs: number;
  bytes: number;
}

export function generateTree(dir: string, opts: SyntheticTreeOptions): SyntheticTreeStats {
  const rand = prng(opts.seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const chance = (p: number): boolean => rand() < p;
  const isRoot = process.getuid?.() === 0;

  // Incompressible bytes from AES-CTR keyed by the seed: fast and reproducible.
  const key = Buffer.alloc(16);
  key.writeUInt32LE(opts.seed >>> 0, 0);
  const randomBytes = (n: number, index: number): Buffer => {
    const iv = Buffer.alloc(16);
    iv.writeUInt32BE(index >>> 0, 0);
    return createCipheriv('aes-128-ctr', key, iv).update(Buffer.alloc(n));
  };
  // Compressible text from a fixed vocabulary (like config files, scripts, docs).
  const vocab = Array.from({ length: 600 }, () =>
    Array.from({ length: int(2, 10) }, () => String.fromCharCode(97 + int(0, 25))).join(''));
  const text = (n: number): Buffer => {
    const parts: string[] = [];
    let len = 0;
    while (len < n) {
      const w = chance(0.08) ? '\n' : pick(vocab) + ' ';
      parts.push(w);
      len += w.length;
    }
    return Buffer.from(parts.join('').slice(0, n));
  };
  const fileSize = (): number => {
    const r = rand();
    if (r < 0.04) return 0;
    if (r < 0.85) return int(1, 2048);
    if (r < 0.98) return int(2049, 16384);
    return int(16385, 131072);
  };

  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755); // not left to the umask
  const stats: SyntheticTreeStats = { dirs: 0, files: 0, symlinks: 0, hardlinks: 0, xattrs: 0, bytes: 0 };
  const dirs: { path: string; depth: number }[] = [{ path: '', depth: 0 }];
  const files: string[] = [];
  const contents: Buffer[] = []; // a window of recent contents, for duplicates
  const xattrDump: string[] = [];
  const times: [string, number, boolean][] = []; // path, mtime, is symlink
  const baseTime = 1_600_000_000;
  const mtime = (): number => {
    const t = baseTime + int(0, 100_000_000) + (chance(0.5) ? int(1, 999_999) / 1e6 : 0);
    return opts.ociFaithful ? Math.floor(t) : t;
  };

  const nDirs = Math.max(1, Math.round(opts.entries * 0.08));
  const nSymlinks = Math.round(opts.entries * 0.04);
  const nHardlinks = Math.round(opts.entries * 0.02);
  const nLarge = Math.min(8, Math.max(1, Math.round(opts.entries / 10_000)));
  const nFiles = Math.max(0, opts.entries - 1 - nDirs - nSymlinks - nHardlinks);

  // Directories: some chains go deep, most hang off random parents.
  for (let i = 0; i < nDirs; i++) {
    const deep = chance(0.3) ? dirs[dirs.length - 1]! : pick(dirs);
    const parent = deep.depth >= 30 ? pick(dirs.slice(0, Math.ceil(dirs.length / 2))) : deep;
    const name = chance(0.01) ? `long-${'x'.repeat(int(100, 240))}-${i}` : `d${i}`;
    const path = parent.path ? `${parent.path}/${name}` : name;
    mkdirSync(join(dir, path));
    const r = rand();
    chmodSync(join(dir, path), r < 0.9 ? 0o755 : r < 0.98 ? 0o700 : 0o1777);
    dirs.push({ path, depth: parent.depth + 1 });
    stats.dirs++;
    if (chance(0.03)) { xattrDump.push(`# file: ${path}\nuser.dir.note=0x${randomBytes(int(1, 32), i + 1e9).toString('hex')}\n`); stats.xattrs++; }
  }

  for (let i = 0; i < nFiles; i++) {
    const parent = pick(dirs);
    const large = i < nLarge;
    const name = chance(0.005) ? `café-ü-${i}.txt` : chance(0.5) ? `f${i}.txt` : `f${i}.bin`;
    const path = parent.path ? `${parent.path}/${name}` : name;
    let content: Buffer;
    if (large) content = randomBytes(int(4, 16) << 20, i);
    else if (contents.length > 0 && chance(0.08)) content = pick(contents);
    else {
      const n = fileSize();
      content = name.endsWith('.txt') || chance(0.3) ? text(n) : randomBytes(n, i);
      if (contents.length < 256) contents.push(content); else contents[int(0, 255)] = content;
    }
    writeFileSync(join(dir, path), content);
    stats.bytes += content.length;
    const r = rand();
    chmodSync(join(dir, path), r < 0.8 ? 0o644 : r < 0.93 ? 0o755 : r < 0.98 ? 0o600 : r < 0.995 ? 0o444 : 0o4755);
    if (isRoot && chance(0.1)) lchownSync(join(dir, path), chance(0.8) ? 1000 : 65534, chance(0.8) ? 1000 : 65534);
    // Only plain ASCII names get xattrs, so the dump needs no escaping.
    if (!name.startsWith('café') && chance(0.05)) {
      const lines = [`# file: ${path}`, `user.checksum=0x${randomBytes(int(1, 64), i + 2e9).toString('hex')}`];
      if (chance(0.2) && !opts.ociFaithful) lines.push('user.empty=0x');
      if (chance(0.1)) lines.push(`user.big=0x${randomBytes(int(200, 2000), i + 3e9).toString('hex')}`);
      xattrDump.push(lines.join('\n') + '\n');
      stats.xattrs += lines.length - 1;
    }
    files.push(path);
    times.push([path, mtime(), false]);
    stats.files++;
  }

  for (let i = 0; i < nHardlinks && files.length > 0; i++) {
    const target = pick(files);
    const parent = pick(dirs);
    const path = parent.path ? `${parent.path}/h${i}` : `h${i}`;
    linkSync(join(dir, target), join(dir, path));
    stats.hardlinks++;
  }

  const all = [...dirs.slice(1).map((d) => d.path), ...files];
  for (let i = 0; i < nSymlinks; i++) {
    const parent = pick(dirs);
    const path = parent.path ? `${parent.path}/s${i}` : `s${i}`;
    const r = rand();
    const depth = parent.path ? parent.path.split('/').length : 0;
    const target = r < 0.7 && all.length > 0
      ? '../'.repeat(depth) + pick(all) // relative, resolves inside the tree
      : r < 0.9 ? pick(['/usr/bin/env', '/etc/passwd', '/bin/sh']) : `missing-${i}`;
    symlinkSync(target, join(dir, path));
    if (isRoot && chance(0.05)) lchownSync(join(dir, path), 1000, 1000);
    times.push([path, mtime(), true]);
    stats.symlinks++;
  }

  if (xattrDump.length > 0) {
    const dumpFile = join(tmpdir(), `cowshed-synthetic-xattrs-${process.pid}.txt`);
    writeFileSync(dumpFile, xattrDump.join('\n'));
    try {
      execFileSync('setfattr', [`--restore=${dumpFile}`], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    } finally {
      rmSync(dumpFile, { force: true });
    }
  }

  // Times last: creating entries changes their parents' mtimes. Deepest directories first.
  for (const [path, t, isLink] of times) (isLink ? lutimesSync : utimesSync)(join(dir, path), t, t);
  for (const d of [...dirs].sort((x, y) => y.depth - x.depth)) {
    const t = mtime();
    utimesSync(join(dir, d.path), t, t);
  }
  return stats;
}

/** Packs DIR as a one-layer OCI image; the root directory of the layer is DIR itself. */
export function packOci(dir: string, layoutRef: string): void {
  const colon = layoutRef.lastIndexOf(':');
  const [layout, tag] = colon > 0 ? [layoutRef.slice(0, colon), layoutRef.slice(colon + 1)] : [layoutRef, 'latest'];
  if (!existsSync(join(layout, 'index.json'))) {
    if (existsSync(layout) && readdirSync(layout).length > 0) throw new Error(`${layout} exists and is not an OCI layout`);
    execFileSync('umoci', ['init', '--layout', layout]);
  }
  execFileSync('umoci', ['new', '--image', `${layout}:${tag}`]);
  // stderr piped: umoci warns per file about things the tree does not have with ociFaithful.
  execFileSync('umoci', ['insert', '--image', `${layout}:${tag}`, '--history.created_by', 'gen-synthetic-tree', dir, '/'],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  execFileSync('umoci', ['gc', '--layout', layout]);
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      entries: { type: 'string', default: '100000' },
      seed: { type: 'string', default: '1' },
      oci: { type: 'string' },
    },
  });
  const entries = Number(values.entries);
  const seed = Number(values.seed);
  if (positionals.length !== 1 || !Number.isInteger(entries) || entries < 2 || !Number.isInteger(seed)) {
    process.stderr.write('usage: node scripts/gen-synthetic-tree.ts DIR [--entries N] [--seed N] [--oci LAYOUT[:TAG]]\n');
    process.exit(2);
  }
  const dir = positionals[0]!;
  const t0 = performance.now();
  const s = generateTree(dir, { entries, seed, ociFaithful: values.oci !== undefined });
  process.stderr.write(
    `gen-synthetic-tree: ${s.dirs} dirs, ${s.files} files (${(s.bytes / 1e6).toFixed(0)} MB), ` +
    `${s.symlinks} symlinks, ${s.hardlinks} hardlinks, ${s.xattrs} xattrs in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
  if (values.oci) {
    packOci(dir, values.oci);
    process.stderr.write(`gen-synthetic-tree: packed as ${values.oci}\n`);
  }
}

if (import.meta.main) main();
