// Raw ustar archives for hostile cases, written by hand rather than by our
// own tar writer, so nothing in cowshed can tidy them up on the way.

export type RawType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo' | 'pax' | 'gnu-longname';
const TYPEFLAG: Record<RawType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6', pax: 'x', 'gnu-longname': 'L' };

export interface RawEntry { name: string; type: RawType; size?: number | bigint; linkname?: string; mode?: number; devmajor?: number; devminor?: number; body?: Buffer }

/** One 512-byte ustar header; sizes past the octal field go base-256. */
export function ustarHeader(e: RawEntry): Buffer {
  const h = Buffer.alloc(512);
  h.write(e.name.slice(0, 100), 0, 'latin1');
  h.write((e.mode ?? 0o644).toString(8).padStart(7, '0') + '\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  const size = BigInt(e.size ?? e.body?.length ?? 0);
  if (size > 0o77777777777n) {
    let v = size;
    h[124] = 0x80;
    for (let i = 135; i > 124; i--) { h[i] = Number(v & 0xffn); v >>= 8n; }
  } else {
    h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  }
  h.write('14540000000\0', 136, 'latin1');
  h.write(TYPEFLAG[e.type], 156, 'latin1');
  h.write((e.linkname ?? '').slice(0, 100), 157, 'latin1');
  h.write('ustar\x0000', 257, 'latin1');
  h.write((e.devmajor ?? 0).toString(8).padStart(7, '0') + '\0', 329, 'latin1');
  h.write((e.devminor ?? 0).toString(8).padStart(7, '0') + '\0', 337, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/** A whole archive: headers, bodies padded to 512, two zero blocks. */
export function tarArchive(entries: RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(ustarHeader(e));
    if (e.body?.length) {
      parts.push(e.body);
      const pad = (512 - (e.body.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
