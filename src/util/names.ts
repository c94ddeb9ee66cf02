// File names, link targets and xattr names are bytes on Linux. Everywhere in
// cowshed they are "binary" strings: one char per byte (latin1), so nothing
// is decoded on the way through, JS string comparison is byte order, and
// Map keys keep working. Only the edges convert:
//   bytes → name: bin(buf)           name → bytes: bytesOf(name)
//   name → fs call: fsPath(name)     (a Buffer: Node would UTF-8-encode a string)
//   host path (UTF-8, from argv or config) → name: fromHost(path)
//   name → screen: display(name)     name → JSON: jsonName(name)
import { StringDecoder } from 'node:string_decoder';

/** Bytes → binary string. */
export const bin = (b: Uint8Array): string =>
  (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength)).toString('latin1');

/** Binary string → bytes. */
export const bytesOf = (s: string): Buffer => Buffer.from(s, 'latin1');

/** A binary-string path for node:fs (Buffers keep every byte). */
export const fsPath = bytesOf;

/** A host path as given by the user or the system (UTF-8 text) as a binary string. */
export const fromHost = (p: string): string => Buffer.from(p, 'utf8').toString('latin1');

/** Byte length of a binary string. */
export const byteLen = (s: string): number => s.length;

const fatal = new TextDecoder('utf-8', { fatal: true });

/** The name decoded as UTF-8, or undefined when its bytes are not valid UTF-8. */
export function utf8Of(s: string): string | undefined {
   
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  try {
    return fatal.decode(bytesOf(s));
  } catch {
    return undefined;
  }
}

/** A valid UTF-8 byte sequence? */
export const isUtf8 = (b: Uint8Array): boolean => {
  try {
    fatal.decode(b);
    return true;
  } catch {
    return false;
  }
};

/** For a terminal: the bytes as they are, as podman prints them (a lossy decode only for JS string output). */
export const display = (s: string): string => {
  const u = utf8Of(s);
  if (u !== undefined) return u;
  const d = new StringDecoder('utf8');
  return d.write(bytesOf(s)) + d.end();
};

/**
 * For messages: the name with every byte that is not printable ASCII (and
 * the backslash) as `\xNN`, so an error names the entry exactly and stays
 * one line.
 */
export const escapeName = (s: string): string =>
   
  s.replace(/[^\x20-\x5b\x5d-\x7e]/g, (c) => '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0'));

/**
 * For --json: `{ [key]: text }` when the name is valid UTF-8; otherwise the
 * text with U+FFFD for each bad byte plus `[key + 'Bytes']`: the exact
 * bytes in base64.
 */
export function jsonName(key: string, s: string): Record<string, string> {
  const u = utf8Of(s);
  if (u !== undefined) return { [key]: u };
  return { [key]: display(s), [`${key}Bytes`]: bytesOf(s).toString('base64') };
}
