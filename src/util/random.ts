// Random bytes for names and ids without loading node:crypto: on the path of
// a short command (create) that built-in and the twenty-odd internal modules
// it loads cost more than the rest of the command's own work. The kernel's
// /dev/urandom is what crypto.randomBytes reads in the end (getrandom).
import { closeSync, openSync, readSync } from 'node:fs';
import { crypto } from './builtins.ts';

export function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let fd: number;
  try {
    fd = openSync('/dev/urandom', 'r');
  } catch {
    return crypto().randomBytes(n); // a sandbox without /dev
  }
  try {
    for (let got = 0; got < n;) got += readSync(fd, b, got, n - got, null);
  } finally {
    closeSync(fd);
  }
  return b;
}
