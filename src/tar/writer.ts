// Tar writer for export and commit: ustar headers, with a PAX extended header
// in front when a field does not fit ustar (long or non-ASCII names and link
// targets, big numbers, nanosecond mtimes, xattrs, which are binary and go in
// `SCHILY.xattr.*` records as raw bytes). GNU tar reads the result with
// --xattrs; so does our reader.
//
// Names are binary strings (util/names.ts) and are written as the bytes they
// are: ASCII ones in ustar fields (PAX when too long), UTF-8 ones in PAX
// records, and names that are not UTF-8 as raw bytes in the ustar fields or,
// when too long, in GNU long-name ('L'/'K') records: GNU tar, Go's
// archive/tar (umoci, podman) and our reader all take those bytes verbatim,
// whereas a PAX path that is not UTF-8 needs hdrcharset=BINARY, which GNU
// tar ignores.
import { CowshedError } from '../util/errors.ts';
import { escapeName, isUtf8 } from '../util/names.ts';
import type { TarEntryType } from './reader.ts';

export interface TarHeaderInput {
  /** Path inside the archive ("usr/bin/x"); directories get a trailing "/" if they lack one. */
  path: string;
  type: TarEntryType;
  /** Permission bits incl. setuid/setgid/sticky; file type bits are ignored. */
  mode: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Body length for 'file'; ignored (0) for the other types. */
  size?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  /** Hard link or symlink target. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Uint8Array>;
}

const BLOCK = 512;

const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6',
};

const isAscii = (s: string): boolean => /^[\x01-\x7f]*$/.test(s);

/** Largest value an octal field of `len` bytes holds (len - 1 digits and a NUL). */
const octalMax = (len: number): number => 8 ** (len - 1) - 1;

function putOctal(block: Buffer, off: number, len: number, v: number): void {
  block.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
}

/** GNU base-256: for numbers no octal field holds (device numbers, where PAX has no standard key). */
function putBase256(block: Buffer, off: number, len: number, v: number): void {
  let x = BigInt(v);
  for (let i = len - 1; i > 0; i--) {
    block[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  block[off] = 0x80;
}

/** One PAX record, "LEN KEY=VALUE\n", where LEN counts the whole record including its own digits. */
function paxRecord(key: string, value: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), body]);
}

/** Splits a path into ustar prefix (≤155 bytes) and name (≤100 bytes) at a "/", or null. */
function splitUstarPath(p: Buffer): [Buffer, Buffer] | null {
  if (p.length <= 100) return [Buffer.alloc(0), p];
  if (p.length > 256) return null;
  for (let i = Math.min(155, p.length - 2); i > 0; i--) {
    if (p[i] === 0x2f && p.length - i - 1 <= 100 && p.length - i - 1 > 0) return [p.subarray(0, i), p.subarray(i + 1)];
  }
  return null;
}

/** A GNU long name ('L') or long link name ('K') header and its NUL-ended data, as GNU tar writes them. */
function gnuLongName(flag: 'L' | 'K', name: Buffer): Buffer {
  const data = Buffer.concat([name, Buffer.alloc(1)]);
  const b = ustarBlock({
    name: Buffer.from('././@LongLink', 'latin1'), prefix: Buffer.alloc(0), mode: 0o644, uid: 0, gid: 0, size: data.length,
    mtime: 0, typeflag: flag, linkname: Buffer.alloc(0), uname: Buffer.alloc(0), gname: Buffer.alloc(0), devmajor: 0, devminor: 0,
  });
  return Buffer.concat([b, data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK)]);
}

function ustarBlock(f: {
  name: Buffer; prefix: Buffer; mode: number; uid: number; gid: number; size: number; mtime: number;
  typeflag: string; linkname: Buffer; uname: Buffer; gname: Buffer; devmajor: number; devminor: number;
}): Buffer {
  const b = Buffer.alloc(BLOCK);
  f.name.copy(b, 0, 0, 100);
  putOctal(b, 100, 8, f.mode);
  putOctal(b, 108, 8, f.uid);
  putOctal(b, 116, 8, f.gid);
  putOctal(b, 124, 12, f.size);
  putOctal(b, 136, 12, f.mtime);
  b.write(f.typeflag, 156, 1, 'latin1');
  f.linkname.copy(b, 157, 0, 100);
  b.write('ustar\0' + '00', 257, 8, 'latin1');
  f.uname.copy(b, 265, 0, 32);
  f.gname.copy(b, 297, 0, 32);
  if (f.devmajor > octalMax(8)) putBase256(b, 329, 8, f.devmajor);
  else putOctal(b, 329, 8, f.devmajor);
  if (f.devminor > octalMax(8)) putBase256(b, 337, 8, f.devminor);
  else putOctal(b, 337, 8, f.devminor);
  f.prefix.copy(b, 345, 0, 155);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return b;
}

const checkInt = (v: number, what: string, path: string, min = 0): number => {
  if (!Number.isSafeInteger(v) || v < min) throw new CowshedError('EINVAL', `tar: bad ${what} ${v} for ${escapeName(path)}`);
  return v;
};

/** The header blocks of one entry: a PAX extended header if needed, then the ustar header. */
export function tarHeaderBlocks(h: TarHeaderInput): Buffer {
  let path = h.path;
  if (path === '') throw new CowshedError('EINVAL', 'tar: empty path');
  if (path.includes('\0') || (h.linkname ?? '').includes('\0')) throw new CowshedError('EINVAL', `tar: NUL byte in name ${escapeName(path)}`);
  if (h.type === 'dir' && !path.endsWith('/')) path += '/';
  const size = h.type === 'file' ? checkInt(h.size ?? 0, 'size', path) : 0;
  const uid = checkInt(h.uid ?? 0, 'uid', path);
  const gid = checkInt(h.gid ?? 0, 'gid', path);
  const mtimeSec = checkInt(h.mtimeSec ?? 0, 'mtime', path, Number.MIN_SAFE_INTEGER);
  const mtimeNsec = checkInt(h.mtimeNsec ?? 0, 'mtime nanoseconds', path);
  if (mtimeNsec > 999_999_999) throw new CowshedError('EINVAL', `tar: bad mtime nanoseconds ${mtimeNsec} for ${escapeName(path)}`);
  const isDev = h.type === 'char' || h.type === 'block';
  const devmajor = isDev ? checkInt(h.devmajor ?? 0, 'devmajor', path) : 0;
  const devminor = isDev ? checkInt(h.devminor ?? 0, 'devminor', path) : 0;
  const linkname = h.type === 'hardlink' || h.type === 'symlink' ? (h.linkname ?? '') : '';
  const uname = h.uname ?? '';
  const gname = h.gname ?? '';

  const pax: Buffer[] = [];
  const gnu: Buffer[] = [];
  const pathBytes = Buffer.from(path, 'latin1');
  const pathUtf8 = isAscii(path) || isUtf8(pathBytes);
  let split = isAscii(path) || !pathUtf8 ? splitUstarPath(pathBytes) : null;
  if (!split) {
    if (pathUtf8) pax.push(paxRecord('path', pathBytes));
    else gnu.push(gnuLongName('L', pathBytes));
    split = [Buffer.alloc(0), pathBytes.subarray(0, 100)];
  }
  const linkBytes = Buffer.from(linkname, 'latin1');
  if (isAscii(linkname) || isUtf8(linkBytes)) {
    if (linkBytes.length > 100 || !isAscii(linkname)) pax.push(paxRecord('linkpath', linkBytes));
  } else if (linkBytes.length > 100) {
    gnu.push(gnuLongName('K', linkBytes));
  }
  const numeric = (key: string, v: number, len: number): number => {
    if (v <= octalMax(len)) return v;
    pax.push(paxRecord(key, Buffer.from(String(v))));
    return 0;
  };
  const sizeField = numeric('size', size, 12);
  const uidField = numeric('uid', uid, 8);
  const gidField = numeric('gid', gid, 8);
  let mtimeField = mtimeSec;
  if (mtimeNsec !== 0 || mtimeSec < 0 || mtimeSec > octalMax(12)) {
    let s: string;
    if (mtimeSec < 0 && mtimeNsec > 0) {
      // -1 s + 0.25 s is written "-0.75".
      const whole = -(mtimeSec + 1);
      s = `-${whole}.${String(1e9 - mtimeNsec).padStart(9, '0')}`;
    } else {
      s = mtimeNsec === 0 ? String(mtimeSec) : `${mtimeSec}.${String(mtimeNsec).padStart(9, '0')}`;
    }
    pax.push(paxRecord('mtime', Buffer.from(s.replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, ''))));
    mtimeField = Math.min(Math.max(mtimeSec, 0), octalMax(12));
  }
  const nameField = (key: string, v: string, len: number): Buffer => {
    const b = Buffer.from(v, 'latin1');
    if (b.length <= len && (isAscii(v) || !isUtf8(b))) return b;
    pax.push(paxRecord(key, b));
    return Buffer.alloc(0);
  };
  const unameField = nameField('uname', uname, 32);
  const gnameField = nameField('gname', gname, 32);
  for (const [k, v] of [...(h.xattrs ?? new Map<string, Uint8Array>())].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (k === '' || k.includes('=') || k.includes('\0')) throw new CowshedError('EINVAL', `tar: bad xattr name ${escapeName(k)} on ${escapeName(path)}`);
    pax.push(paxRecord(`SCHILY.xattr.${k}`, v));
  }

  const blocks: Buffer[] = [];
  if (pax.length > 0) {
    const data = Buffer.concat(pax);
    // GNU tar's naming: DIR/PaxHeaders/BASE.
    const trimmed = path.replace(/\/+$/, '');
    const slash = trimmed.lastIndexOf('/');
    const paxName = `${slash >= 0 ? trimmed.slice(0, slash) : '.'}/PaxHeaders/${trimmed.slice(slash + 1)}`;
    const paxNameBytes = Buffer.from(isAscii(paxName) ? paxName : 'PaxHeaders/entry').subarray(0, 100);
    blocks.push(ustarBlock({
      name: paxNameBytes, prefix: Buffer.alloc(0), mode: 0o644, uid: 0, gid: 0, size: data.length,
      mtime: mtimeField, typeflag: 'x', linkname: Buffer.alloc(0), uname: Buffer.alloc(0), gname: Buffer.alloc(0),
      devmajor: 0, devminor: 0,
    }));
    blocks.push(data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK));
  }
  blocks.push(...gnu);
  blocks.push(ustarBlock({
    name: split[1], prefix: split[0], mode: h.mode & 0o7777, uid: uidField, gid: gidField, size: sizeField,
    mtime: mtimeField, typeflag: TYPEFLAG[h.type], linkname: linkBytes.length <= 100 ? linkBytes : linkBytes.subarray(0, 100),
    uname: unameField, gname: gnameField, devmajor, devminor,
  }));
  return Buffer.concat(blocks);
}

/**
 * Writes a tar stream: each entry's headers, its body (exactly `header.size`
 * bytes for files) with padding, then the two zero blocks that end an archive.
 */
export async function* writeTar(
  entries: AsyncIterable<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }> | Iterable<{ header: TarHeaderInput; body?: AsyncIterable<Uint8Array> }>,
): AsyncGenerator<Uint8Array> {
  for await (const { header, body } of entries) {
    yield tarHeaderBlocks(header);
    const size = header.type === 'file' ? (header.size ?? 0) : 0;
    let written = 0;
    if (body) {
      for await (const chunk of body) {
        written += chunk.length;
        if (written > size) break;
        if (chunk.length > 0) yield chunk;
      }
    }
    if (written !== size) {
      throw new CowshedError('EINVAL', `tar: ${escapeName(header.path)} has ${written > size ? 'more' : 'fewer'} bytes than its size ${size}`);
    }
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad > 0) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(2 * BLOCK);
}
