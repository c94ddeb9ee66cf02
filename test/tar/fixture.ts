// A source tree with everything tar gets wrong (binary xattrs, long names and
// link targets, hard links, devices, fifos, setuid, nanosecond and far-future
// mtimes, big uids), the GNU tar archives made from it, and the expected
// entry of each path read back from the tree with lstat/getfattr.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, linkSync, symlinkSync, lstatSync, chmodSync, chownSync, readlinkSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { major, minor } from '../../src/tree/node.ts';
import type { TarEntry, TarEntryType } from '../../src/tar/reader.ts';

export const run = (cmd: string, args: string[], opts: { cwd?: string } = {}): string =>
  execFileSync(cmd, args, { encoding: 'latin1', stdio: ['ignore', 'pipe', 'pipe'], ...opts });

export const isRoot = process.getuid?.() === 0;

/** Content that is not a multiple of 512 bytes and not all zeros. */
export function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const touch = (p: string, when: string): void => {
  run('touch', ['-h', '-d', when, p]);
};

export interface Fixture {
  dir: string;
  /** Holds base/ (fits ustar) and extra/ (needs GNU or PAX). */
  root: string;
  cleanup(): void;
}

/** Builds the tree under a new temp dir. Needs root (devices, chown, security.capability). */
export function makeFixture(): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'cowshed-tar-'));
  const root = join(dir, 'src');
  const base = join(root, 'base');
  const extra = join(root, 'extra');
  mkdirSync(join(base, 'dir'), { recursive: true });
  mkdirSync(extra, { recursive: true });

  writeFileSync(join(base, 'dir/hello.txt'), 'hello\n');
  writeFileSync(join(base, 'dir/empty'), '');
  writeFileSync(join(base, 'dir/exact512'), pattern(512, 1));
  writeFileSync(join(base, 'dir/big.bin'), pattern(300_001, 2));
  linkSync(join(base, 'dir/hello.txt'), join(base, 'hardlink'));
  symlinkSync('dir/hello.txt', join(base, 'symlink'));
  writeFileSync(join(base, 'setuid'), '#!/bin/sh\n');
  chmodSync(join(base, 'setuid'), 0o4755);
  mkdirSync(join(base, 'setgid-dir'));
  chmodSync(join(base, 'setgid-dir'), 0o2775);
  mkdirSync(join(base, 'sticky'));
  chmodSync(join(base, 'sticky'), 0o1777);
  writeFileSync(join(base, 'owned'), 'x');
  chownSync(join(base, 'owned'), 1234, 5678);
  run('mknod', [join(base, 'null'), 'c', '1', '3']);
  run('mknod', [join(base, 'blockdev'), 'b', '8', '1']);
  run('mknod', [join(base, 'bigdev'), 'c', '4000', '1000000']);
  run('mkfifo', [join(base, 'fifo')]);
  // 60 + 1 + 60 + 1 + 10 bytes: needs the ustar prefix field.
  const mid = join(base, 'p'.repeat(60), 'q'.repeat(60));
  mkdirSync(mid, { recursive: true });
  writeFileSync(join(mid, 'midlong.tx'), 'mid\n');
  // xattrs: binary security.capability and non-UTF-8 user values.
  writeFileSync(join(base, 'cap'), 'caps\n');
  run('setcap', ['cap_net_raw,cap_net_admin+ep', join(base, 'cap')]);
  run('setfattr', ['-n', 'user.binary', '-v', '0xff00fe80c3', join(base, 'cap')]);
  run('setfattr', ['-n', 'user.empty', join(base, 'cap')]);
  run('setfattr', ['-n', 'user.text', '-v', 'héllo wörld', join(base, 'dir')]);
  run('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(base, 'setgid-dir')]);
  writeFileSync(join(base, 'ünïcödé'), 'utf8 name\n');
  touch(join(base, 'dir/hello.txt'), '@1700000000.123456789');
  touch(join(base, 'symlink'), '@1600000000.5');
  touch(join(base, 'fifo'), '@1000000000.000000001');

  // Only in the GNU and PAX archives.
  const deep = join(extra, 'x'.repeat(100), 'y'.repeat(100), 'z'.repeat(100));
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, 'very-long-name.txt'), 'deep\n');
  symlinkSync('t'.repeat(150) + '/target', join(extra, 'longlink'));
  linkSync(join(deep, 'very-long-name.txt'), join(extra, 'hardlink-to-deep'));
  writeFileSync(join(extra, 'bigid'), 'big ids\n');
  chownSync(join(extra, 'bigid'), 3_000_000, 3_000_001);
  writeFileSync(join(extra, 'future'), 'year 2255\n');
  touch(join(extra, 'future'), '@9000000000.25');
  writeFileSync(join(extra, 'past'), 'before 1970\n');
  touch(join(extra, 'past'), '@-1000');
  return { dir, root, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export type TarFormat = 'pax' | 'gnu' | 'ustar';

/** GNU tar's archive of the tree in one format (sorted, so hard link order is fixed). */
export function gnuTar(fx: Fixture, format: TarFormat, out: string): void {
  const members = format === 'ustar' ? ['base'] : ['base', 'extra'];
  const xattrs = format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : [];
  run('tar', ['--format=' + format, ...xattrs, '--sort=name', '-C', fx.root, '-cf', out, ...members]);
}

/** Every xattr of a path, as getfattr reports it (hex values parsed back to bytes). */
export function getXattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let text: string;
  try {
    text = run('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', path]);
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^([^#=][^=]*)=?(.*)$/.exec(line);
    if (!m || line === '') continue;
    const v = m[2];
    out.set(m[1], v.startsWith('0x') ? Buffer.from(v.slice(2), 'hex') : Buffer.alloc(0));
  }
  return out;
}

export interface Expected {
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  linkname?: string;
  devmajor: number;
  devminor: number;
  ino: number;
  xattrs: Map<string, Buffer>;
}

/** lstat/getfattr view of every path under `root`, keyed as tar names them ("base/dir/"). */
export function expectedTree(root: string, top: string[]): Map<string, Expected> {
  const out = new Map<string, Expected>();
  const visit = (rel: string): void => {
    const abs = join(root, rel);
    const st = lstatSync(abs, { bigint: true });
    const ns = st.mtimeNs;
    const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
    const e: Expected = {
      type: st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink'
        : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'fifo',
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: st.isFile() ? Number(st.size) : 0,
      mtimeSec: Number(sec),
      mtimeNsec: Number(ns - sec * 1_000_000_000n),
      devmajor: st.isCharacterDevice() || st.isBlockDevice() ? major(Number(st.rdev)) : 0,
      devminor: st.isCharacterDevice() || st.isBlockDevice() ? minor(Number(st.rdev)) : 0,
      ino: Number(st.ino),
      xattrs: st.isSymbolicLink() ? new Map() : getXattrs(abs),
    };
    if (st.isSymbolicLink()) e.linkname = readlinkSync(abs);
    out.set(st.isDirectory() ? rel + '/' : rel, e);
    if (st.isDirectory()) for (const name of readdirSync(abs)) visit(`${rel}/${name}`);
  };
  for (const t of top) visit(t);
  return out;
}

/** Collects an entry's fields (the body read into memory: test archives are small). */
export async function entryFields(e: TarEntry): Promise<TarEntry & { data: Buffer }> {
  const chunks: Buffer[] = [];
  for await (const c of e.body()) chunks.push(Buffer.from(c));
  return { ...e, data: Buffer.concat(chunks) };
}

export async function* chunksOf(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}
