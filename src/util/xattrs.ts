// Reading extended attributes. Node has no xattr API, so getfattr(1) reads
// them, many paths per process: one spawn per file would cost more than the
// rest of a commit. Paths and xattr names are binary strings (util/names.ts):
// paths reach getfattr as bytes through `xargs -0` (arguments given to
// execFile would be UTF-8-encoded), and its output is read as bytes.
import { execFileSync } from 'node:child_process';

const BATCH = 2000;

/** getfattr over `paths` (binary strings), NUL-separated on xargs' stdin; its output as a binary string. */
function getfattr(args: string[], paths: string[], maxBuffer: number): string {
  if (paths.length === 0) return '';
  try {
    // One ASCII path (a container's upper directory for diff): as an argument, which
    // encodes it unchanged, with one process fewer on the path of a short command.
    if (paths.length === 1 && /^[\x01-\x7f]*$/.test(paths[0]!)) {
      return execFileSync('getfattr', [...args, '--absolute-names', '--', paths[0]!], { encoding: 'latin1', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer });
    }
    const input = Buffer.concat(paths.map((p) => Buffer.from(p + '\0', 'latin1')));
    return execFileSync('xargs', ['-0', '-r', 'getfattr', ...args, '--absolute-names', '--'], {
      input, encoding: 'latin1', stdio: ['pipe', 'pipe', 'ignore'], maxBuffer,
    });
  } catch (e) {
    // getfattr exits 1 when some path has no xattrs support; keep what it printed.
    return String((e as { stdout?: string }).stdout ?? '');
  }
}

/** Every xattr of each path (symlinks themselves, not their targets); keys as given. */
export function readXattrs(paths: string[]): Map<string, Map<string, Uint8Array>> {
  const out = new Map<string, Map<string, Uint8Array>>();
  for (let i = 0; i < paths.length; i += BATCH) {
    parseGetfattr(getfattr(['-h', '-d', '-m', '-', '-e', 'hex'], paths.slice(i, i + BATCH), 256 << 20), out);
  }
  return out;
}

/**
 * Every xattr (or those whose names match `pattern`, a getfattr regex)
 * below dir, keyed by absolute path, with one getfattr process.
 */
export function readXattrsRecursive(dir: string, pattern = '-'): Map<string, Map<string, Uint8Array>> {
  const out = new Map<string, Map<string, Uint8Array>>();
  parseGetfattr(getfattr(['-R', '-h', '-d', '-m', pattern, '-e', 'hex'], [dir], 512 << 20), out);
  return out;
}

/** getfattr's `\ooo` escapes (in file and attribute names) undone; binary string in and out. */
const unescapeOctal = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8) & 0xff));

/** Parse `getfattr -d -e hex` output read as a binary string (names may be \\ooo-escaped). */
export function parseGetfattr(text: string, into: Map<string, Map<string, Uint8Array>>): void {
  let current: Map<string, Uint8Array> | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      current = new Map();
      into.set(unescapeOctal(line.slice(8)), current);
    } else if (current && line.length > 0 && !line.startsWith('#')) {
      const eq = line.indexOf('=');
      const key = unescapeOctal(eq < 0 ? line : line.slice(0, eq));
      const raw = eq < 0 ? '' : line.slice(eq + 1);
      current.set(key, raw.startsWith('0x') ? Buffer.from(raw.slice(2), 'hex') : Buffer.from(raw.replace(/^"|"$/g, ''), 'latin1'));
    }
  }
}
