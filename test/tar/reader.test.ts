import { fromHost } from '../../src/util/names.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, readFileSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { readTar, type TarEntry } from '../../src/tar/reader.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { makeFixture, gnuTar, expectedTree, entryFields, chunksOf, isRoot, type Fixture, type TarFormat } from './fixture.ts';

let fx: Fixture;
before(() => {
  if (isRoot) fx = makeFixture();
});
after(() => fx?.cleanup());

const text = (s: string): string => Buffer.from(s, 'latin1').toString('utf8');
const skip = isRoot ? false : 'needs root (devices, chown, security.capability)';

async function readAll(source: AsyncIterable<Uint8Array>): Promise<(TarEntry & { data: Buffer })[]> {
  const out: (TarEntry & { data: Buffer })[] = [];
  for await (const e of readTar(source)) out.push(await entryFields(e));
  return out;
}

for (const format of ['pax', 'gnu', 'ustar'] as TarFormat[]) {
  void test(`reads every field of a GNU tar --format=${format} archive as lstat/getfattr see the tree`, { skip }, async () => {
    const archive = join(fx.dir, `reader-${format}.tar`);
    gnuTar(fx, format, archive);
    const expected = expectedTree(fx.root, format === 'ustar' ? ['base'] : ['base', 'extra']);
    // Small, odd-sized chunks: every header and body straddles chunk borders.
    const entries = await readAll(createReadStream(archive, { highWaterMark: 997 }));
    const seen = new Set<string>();
    // Names come out as bytes (binary strings); the fixture's are UTF-8 text.
    for (const e of entries.map((x) => Object.assign(x, { path: text(x.path), linkname: text(x.linkname) }))) {
      const exp = expected.get(e.path);
      assert.ok(exp, `unexpected entry ${e.path}`);
      seen.add(e.path);
      const abs = join(fx.root, e.path);
      if (e.type === 'hardlink') {
        assert.equal(exp.type, 'file', e.path);
        assert.equal(lstatSync(join(fx.root, e.linkname)).ino, exp.ino, `${e.path} links to ${e.linkname}`);
        assert.equal(e.size, 0);
        assert.equal(e.data.length, 0);
      } else {
        assert.equal(e.type, exp.type, `${e.path} type`);
        assert.equal(e.size, exp.size, `${e.path} size`);
        if (e.type === 'file') assert.ok(e.data.equals(readFileSync(abs)), `${e.path} content`);
        else assert.equal(e.data.length, 0);
      }
      assert.equal(e.mode, exp.mode, `${e.path} mode`);
      assert.equal(e.uid, exp.uid, `${e.path} uid`);
      assert.equal(e.gid, exp.gid, `${e.path} gid`);
      assert.equal(e.mtimeSec, exp.mtimeSec, `${e.path} mtime`);
      // Only PAX carries sub-second times.
      assert.equal(e.mtimeNsec, format === 'pax' ? exp.mtimeNsec : 0, `${e.path} mtime ns`);
      if (exp.linkname !== undefined) assert.equal(e.linkname, exp.linkname, `${e.path} link target`);
      assert.equal(e.devmajor, exp.devmajor, `${e.path} devmajor`);
      assert.equal(e.devminor, exp.devminor, `${e.path} devminor`);
      if (e.uid === 0) assert.equal(e.uname, 'root');
      if (format === 'pax' && e.type !== 'hardlink') {
        assert.deepEqual(new Map([...e.xattrs].map(([k, v]) => [k, Buffer.from(v)])), exp.xattrs, `${e.path} xattrs`);
      } else {
        assert.equal(e.xattrs.size, 0);
      }
    }
    assert.deepEqual([...seen].sort(), [...expected.keys()].sort());
    // What the archive must have exercised.
    const byPath = new Map(entries.map((e) => [e.path, e]));
    assert.equal(byPath.get('base/hardlink')?.type === 'hardlink' || byPath.get('base/dir/hello.txt')?.type === 'hardlink', true);
    assert.equal(byPath.get('base/null')?.type, 'char');
    assert.equal(byPath.get('base/fifo')?.type, 'fifo');
    assert.equal(byPath.get('base/setuid')?.mode, 0o4755);
    if (format !== 'ustar') {
      assert.ok(entries.some((e) => e.path.length > 300), 'a name longer than 255 bytes');
      assert.equal(byPath.get('extra/longlink')?.linkname.length, 157);
      assert.equal(byPath.get('extra/bigid')?.uid, 3_000_000);
      assert.equal(byPath.get('extra/future')?.mtimeSec, 9_000_000_000);
    }
    if (format === 'pax') {
      const cap = byPath.get('base/cap')!.xattrs.get('security.capability');
      assert.ok(cap && cap.length === 20 && cap[0] === 1, 'binary security.capability kept');
      assert.deepEqual(Buffer.from(byPath.get('base/cap')!.xattrs.get('user.binary')!), Buffer.from('ff00fe80c3', 'hex'));
    }
  });
}

void test('skips bodies the consumer does not read', { skip }, async () => {
  const archive = join(fx.dir, 'skip.tar');
  gnuTar(fx, 'pax', archive);
  const paths: string[] = [];
  let big: Buffer | undefined;
  for await (const e of readTar(createReadStream(archive, { highWaterMark: 4096 }))) {
    paths.push(e.path);
    if (e.path === 'base/dir/big.bin') {
      // Read only part of it, then move on.
      for await (const c of e.body()) {
        big = Buffer.from(c);
        break;
      }
    }
  }
  assert.ok(big && big.length > 0);
  assert.ok(paths.includes(fromHost('base/ünïcödé')));
  assert.ok(paths.length > 20);
});

/** Expects an EFORMAT CowshedError whose message matches. */
async function rejectsFormat(data: Buffer, message: RegExp): Promise<void> {
  await assert.rejects(readAll(chunksOf(data, 512)), (e: unknown) => {
    assert.ok(isCowshedError(e), String(e));
    assert.equal(e.code, 'EFORMAT');
    assert.match(e.message, message);
    return true;
  });
}

void test('truncated archives give a typed error', { skip }, async () => {
  const archive = join(fx.dir, 'trunc.tar');
  gnuTar(fx, 'gnu', archive);
  const data = readFileSync(archive);
  // Find big.bin's header to cut inside its body and inside a header.
  let bigStart = -1;
  for await (const e of readTar(chunksOf(data, 65536))) if (e.path === 'base/dir/big.bin') bigStart = e.dataOffset;
  assert.ok(bigStart > 0);
  await rejectsFormat(data.subarray(0, bigStart + 1000), /truncated tar archive/);
  await rejectsFormat(data.subarray(0, bigStart - 100), /truncated tar archive/);
  await rejectsFormat(data.subarray(0, 1), /truncated tar archive/);
  assert.deepEqual(await readAll(chunksOf(Buffer.alloc(0), 512)), [], 'an empty input is an empty archive');
  // Cut exactly after an entry with no end blocks: accepted, as GNU tar does.
  const firstEnd = 512 + 0; // base/ directory header only
  const entries = await readAll(chunksOf(data.subarray(0, firstEnd), 512));
  assert.deepEqual(entries.map((e) => e.path), ['base/']);
});

void test('a bad checksum or a non-tar input gives a typed error', { skip }, async () => {
  const archive = join(fx.dir, 'corrupt.tar');
  gnuTar(fx, 'ustar', archive);
  const data = Buffer.from(readFileSync(archive));
  data[512 + 10] ^= 0x01; // the second header's name
  await rejectsFormat(data, /bad header checksum at offset 512/);
  await rejectsFormat(Buffer.from('\x1f\x8b' + 'x'.repeat(1000)), /not a tar archive/);
});

/** A header block with a valid checksum. */
function header(name: string, typeflag: string, size: number | Buffer, opts: { sizeField?: Buffer } = {}): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, 'utf8');
  b.write('0000644\0', 100, 'latin1');
  b.write('0000000\0', 108, 'latin1');
  b.write('0000000\0', 116, 'latin1');
  if (opts.sizeField) opts.sizeField.copy(b, 124);
  else b.write((size as number).toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  b.write('00000000000\0', 136, 'latin1');
  b.write(typeflag, 156, 'latin1');
  b.write('ustar\x0000', 257, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

void test('a huge claimed PAX or long-name size is rejected without reading or allocating it', async () => {
  for (const flag of ['x', 'g', 'L', 'K']) {
    const data = Buffer.concat([header('h', flag, 2 ** 40), Buffer.alloc(1024)]);
    const started = process.memoryUsage().rss;
    await rejectsFormat(data, /exceeds the 67108864-byte limit/);
    assert.ok(process.memoryUsage().rss - started < 64 * 2 ** 20);
  }
  // Base-256 size beyond 2^53.
  const huge = Buffer.alloc(12, 0xff);
  huge[0] = 0x80;
  await rejectsFormat(Buffer.concat([header('f', '0', 0, { sizeField: huge }), Buffer.alloc(1024)]), /size out of range/);
  // A file claiming far more than the input holds ends in a truncation error, not a hang.
  await rejectsFormat(Buffer.concat([header('f', '0', 2 ** 33 - 1)]), /truncated/);
});

void test('malformed PAX records give a typed error', async () => {
  const bad = (records: string): Buffer => {
    const body = Buffer.from(records, 'latin1');
    const padded = Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
    return Buffer.concat([header('p', 'x', body.length), padded, header('f', '0', 0), Buffer.alloc(1024)]);
  };
  await rejectsFormat(bad('99 path=x\n'), /malformed PAX/);
  await rejectsFormat(bad('abc path=x\n'), /malformed PAX/);
  await rejectsFormat(bad('3 p\n'), /malformed PAX/);
  await rejectsFormat(bad('12 pathxxxxx\n'), /malformed PAX/);
  await rejectsFormat(bad('11 size=-1\n'), /bad PAX size/);
});

void test('PAX values are bytes: binary xattrs, fractional and negative mtimes, overrides', async () => {
  const rec = (k: string, v: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return Buffer.concat([Buffer.from(String(len)), body]);
  };
  const body = Buffer.concat([
    rec('path', Buffer.from('a/ä/' + 'n'.repeat(200))),
    rec('SCHILY.xattr.user.bin', Buffer.from([0xff, 0x0a, 0x00, 0x3d, 0x80])),
    rec('LIBARCHIVE.xattr.user.b64%3D', Buffer.from(Buffer.from([0xc3, 0x28]).toString('base64'))),
    rec('mtime', Buffer.from('-1.25')),
    rec('uid', Buffer.from('4294967294')),
    rec('size', Buffer.from('3')),
  ]);
  const padded = Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
  const data = Buffer.concat([header('p', 'x', body.length), padded, header('short', '0', 0), Buffer.from('abc'), Buffer.alloc(509), Buffer.alloc(1024)]);
  const [e] = await readAll(chunksOf(data, 100));
  assert.equal(e.path, fromHost('a/ä/' + 'n'.repeat(200)));
  assert.deepEqual(Buffer.from(e.xattrs.get('user.bin')!), Buffer.from([0xff, 0x0a, 0x00, 0x3d, 0x80]));
  assert.deepEqual(Buffer.from(e.xattrs.get('user.b64=')!), Buffer.from([0xc3, 0x28]));
  assert.equal(e.mtimeSec, -2);
  assert.equal(e.mtimeNsec, 750_000_000);
  assert.equal(e.uid, 4294967294);
  assert.equal(e.size, 3);
  assert.equal(e.data.toString(), 'abc');
});

void test('unknown entry types are regular files, as GNU tar extracts them', async () => {
  await assert.rejects(readAll(chunksOf(Buffer.concat([header('m', 'M', 0), Buffer.alloc(1024)]), 512)),
    (e: unknown) => isCowshedError(e) && e.code === 'EUNSUPPORTED' && /multi-volume/.test(e.message));
  const q = await readAll(chunksOf(Buffer.concat([header('q', 'Q', 3), Buffer.from('abc'), Buffer.alloc(509), Buffer.alloc(1024)]), 512));
  assert.deepEqual(q.map((e) => [e.path, e.type, e.data.toString()]), [['q', 'file', 'abc']]);
  // A GNU volume label is not an entry; old-style '\0' entries are files, or directories with a trailing slash.
  const data = Buffer.concat([header('label', 'V', 0), header('old', '\0', 0), header('olddir/', '\0', 0), header('c', '7', 0), Buffer.alloc(1024)]);
  const entries = await readAll(chunksOf(data, 512));
  assert.deepEqual(entries.map((e) => [e.path, e.type]), [['old', 'file'], ['olddir/', 'dir'], ['c', 'file']]);
});
