import { fromHost } from '../../src/util/names.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream, mkdirSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { readTar, type TarEntry } from '../../src/tar/reader.ts';
import { writeTar, tarHeaderBlocks, type TarHeaderInput } from '../../src/tar/writer.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { makeFixture, gnuTar, expectedTree, entryFields, chunksOf, run, isRoot, type Fixture } from './fixture.ts';

let fx: Fixture;
before(() => {
  if (isRoot) fx = makeFixture();
});
after(() => fx?.cleanup());
const skip = isRoot ? false : 'needs root (devices, chown, security.capability)';

const toHeader = (e: TarEntry): TarHeaderInput => ({
  path: e.path, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, uname: e.uname, gname: e.gname,
  size: e.size, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, linkname: e.linkname,
  devmajor: e.devmajor, devminor: e.devminor, xattrs: e.xattrs,
});

/** Re-writes GNU tar's PAX archive of the fixture with our writer. */
async function rewrite(from: string, to: string): Promise<void> {
  async function* entries() {
    for await (const e of readTar(createReadStream(from))) yield { header: toHeader(e), body: e.body() };
  }
  await pipeline(Readable.from(writeTar(entries())), createWriteStream(to));
}

void test('GNU tar extracts our archive to the same tree, xattrs, devices, times and all', { skip }, async () => {
  const gnu = join(fx.dir, 'w-gnu.tar');
  const ours = join(fx.dir, 'w-ours.tar');
  gnuTar(fx, 'pax', gnu);
  await rewrite(gnu, ours);

  const listing = run('tar', ['-tvf', ours]);
  assert.match(listing, /base\/setuid/);
  assert.match(listing, /extra\/longlink -> t{150}\/target/);
  assert.match(listing, /x{100}\/y{100}\/z{100}\/very-long-name\.txt/);

  const out = join(fx.dir, 'w-extract');
  mkdirSync(out);
  run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', ours, '-C', out]);
  const want = expectedTree(fx.root, ['base', 'extra']);
  const got = expectedTree(out, ['base', 'extra']);
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  const inodeGroups = (t: Map<string, { ino: number }>): string[][] => {
    const g = new Map<number, string[]>();
    for (const [p, e] of t) g.set(e.ino, [...(g.get(e.ino) ?? []), p]);
    return [...g.values()].map((ps) => ps.sort()).sort();
  };
  for (const [p, w] of want) {
    const g = got.get(p)!;
    assert.deepEqual({ ...g, ino: 0 }, { ...w, ino: 0 }, p);
    if (w.type === 'file') assert.ok(readFileSync(join(out, p)).equals(readFileSync(join(fx.root, p))), `${p} content`);
  }
  assert.deepEqual(inodeGroups(got), inodeGroups(want), 'hard links');
});

void test('our reader reads back what our writer wrote', { skip }, async () => {
  const gnu = join(fx.dir, 'r-gnu.tar');
  const ours = join(fx.dir, 'r-ours.tar');
  gnuTar(fx, 'pax', gnu);
  await rewrite(gnu, ours);
  const strip = (e: TarEntry & { data: Buffer }) => ({
    ...e, headerOffset: 0, dataOffset: 0, input: undefined, split: undefined, closed: undefined, bodyStarted: undefined,
    xattrs: new Map([...e.xattrs].map(([k, v]) => [k, Buffer.from(v)])),
  });
  const a = [];
  for await (const e of readTar(createReadStream(gnu))) a.push(strip(await entryFields(e)));
  const b = [];
  for await (const e of readTar(createReadStream(ours))) b.push(strip(await entryFields(e)));
  assert.equal(b.length, a.length);
  for (let i = 0; i < a.length; i++) assert.deepEqual(b[i], a[i], a[i].path);
});

void test('headers use PAX only when ustar cannot hold a field', async () => {
  const plain = tarHeaderBlocks({ path: 'usr/bin/ls', type: 'file', mode: 0o755, size: 10, mtimeSec: 1_700_000_000 });
  assert.equal(plain.length, 512);
  const prefixed = tarHeaderBlocks({ path: 'a'.repeat(120) + '/' + 'b'.repeat(90), type: 'file', mode: 0o644 });
  assert.equal(prefixed.length, 512, 'a 211-byte path fits ustar prefix + name');
  const cases: [string, TarHeaderInput, RegExp][] = [
    ['long name', { path: 'c'.repeat(200) + '/' + 'c'.repeat(99), type: 'file', mode: 0o644 }, /path=c{200}\/c{99}\n/],
    ['utf-8 name', { path: fromHost('dir/ünï'), type: 'dir', mode: 0o755 }, /path=dir\/ünï\/\n/],
    ['long link', { path: 'l', type: 'symlink', mode: 0o777, linkname: 't'.repeat(101) }, /linkpath=t{101}\n/],
    ['big uid', { path: 'u', type: 'file', mode: 0o644, uid: 3_000_000 }, /uid=3000000\n/],
    ['big size', { path: 's', type: 'file', mode: 0o644, size: 2 ** 34 }, /size=17179869184\n/],
    ['ns mtime', { path: 'm', type: 'file', mode: 0o644, mtimeSec: 1, mtimeNsec: 500_000_000 }, /mtime=1\.5\n/],
    ['negative mtime', { path: 'n', type: 'file', mode: 0o644, mtimeSec: -2, mtimeNsec: 750_000_000 }, /mtime=-1\.25\n/],
    ['future mtime', { path: 'f', type: 'file', mode: 0o644, mtimeSec: 9_000_000_000 }, /mtime=9000000000\n/],
    ['long uname', { path: 'n', type: 'file', mode: 0o644, uname: 'x'.repeat(40) }, /uname=x{40}\n/],
  ];
  for (const [what, h, re] of cases) {
    const b = tarHeaderBlocks(h);
    assert.equal(b[156], 'x'.charCodeAt(0), `${what}: a PAX header first`);
    assert.match(b.toString('utf8', 512, b.length - 512), re, what);
    const [e] = await readAllBlocks(Buffer.concat([b, Buffer.alloc((512 - ((h.type === 'file' ? h.size ?? 0 : 0) % 512)) % 512), Buffer.alloc(1024)]), h.type === 'file' ? h.size ?? 0 : 0);
    assert.equal(e.path, h.type === 'dir' ? h.path + '/' : h.path, what);
    if (h.linkname) assert.equal(e.linkname, h.linkname);
    if (h.uid) assert.equal(e.uid, h.uid);
    if (h.size) assert.equal(e.size, h.size);
    if (h.mtimeSec !== undefined) assert.deepEqual([e.mtimeSec, e.mtimeNsec], [h.mtimeSec, h.mtimeNsec ?? 0]);
    if (h.uname) assert.equal(e.uname, h.uname);
  }
  const withXattr = tarHeaderBlocks({ path: 'x', type: 'file', mode: 0o644, xattrs: new Map([['security.capability', Buffer.from([1, 0, 0, 2, 0x0a, 0, 0xff])]]) });
  const i = withXattr.indexOf('SCHILY.xattr.security.capability=');
  assert.ok(i > 0);
  assert.deepEqual(withXattr.subarray(i + 33, i + 41), Buffer.from([1, 0, 0, 2, 0x0a, 0, 0xff, 0x0a]));
});

/** Reads entries from header bytes, skipping bodies (a big size has none here: only the headers are checked). */
async function readAllBlocks(data: Buffer, size: number): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  if (size > 0) {
    // No body bytes follow: take the first entry and stop before the reader wants them.
    for await (const e of readTar(chunksOf(data, 512))) {
      out.push({ ...e });
      break;
    }
    return out;
  }
  for await (const e of readTar(chunksOf(data, 512))) out.push({ ...e });
  return out;
}

void test('writeTar checks body sizes and rejects bad headers', async () => {
  const drain = async (entries: { header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }[]) => {
    for await (const c of writeTar(entries)) assert.ok(c);
  };
  const isInval = (e: unknown): boolean => isCowshedError(e) && e.code === 'EINVAL';
  await assert.rejects(drain([{ header: { path: 'f', type: 'file', mode: 0o644, size: 5 }, body: chunksOf(Buffer.from('abc'), 2) }]), isInval);
  await assert.rejects(drain([{ header: { path: 'f', type: 'file', mode: 0o644, size: 2 }, body: chunksOf(Buffer.from('abc'), 2) }]), isInval);
  await assert.rejects(drain([{ header: { path: '', type: 'file', mode: 0o644 } }]), isInval);
  await assert.rejects(drain([{ header: { path: 'a\0b', type: 'file', mode: 0o644 } }]), isInval);
  await assert.rejects(drain([{ header: { path: 'u', type: 'file', mode: 0o644, uid: -1 } }]), isInval);
});
