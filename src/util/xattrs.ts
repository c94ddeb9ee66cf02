// Reading extended attributes. Node has no xattr API, so getfattr(1) reads
// them, many paths per process: one spawn per file would cost more than the
// rest of a commit.
import { execFileSync } from 'node:child_process';

const BATCH = 2000;

/** Every xattr of each path (symlinks themselves, not their targets). */
export function readXattrs(paths: string[]): Map<string, Map<string, Uint8Array>> {
  const out = new Map<string, Map<string, Uint8Array>>();
  for (let i = 0; i < paths.length; i += BATCH) {
    const chunk = paths.slice(i, i + BATCH);
    let text = '';
    try {
      text = execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', ...chunk], {
        encoding: 'latin1', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 256 << 20,
      });
    } catch (e) {
      // getfattr exits 1 when some path has no xattrs support; keep what it printed.
      text = String((e as { stdout?: string }).stdout ?? '');
    }
    parseGetfattr(text, out);
  }
  return out;
}

/**
 * Every xattr (or those whose names match `pattern`, a getfattr regex)
 * below dir, keyed by absolute path, with one getfattr process.
 */
export function readXattrsRecursive(dir: string, pattern = '-'): Map<string, Map<string, Uint8Array>> {
  let text = '';
  try {
    text = execFileSync('getfattr', ['-R', '-h', '-d', '-m', pattern, '-e', 'hex', '--absolute-names', dir], {
      encoding: 'latin1', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 512 << 20,
    });
  } catch (e) {
    text = String((e as { stdout?: string }).stdout ?? '');
  }
  const out = new Map<string, Map<string, Uint8Array>>();
  parseGetfattr(text, out);
  return out;
}

/** Parse `getfattr -d -e hex` output (names may be \\ooo-escaped). */
export function parseGetfattr(text: string, into: Map<string, Map<string, Uint8Array>>): void {
  let current: Map<string, Uint8Array> | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const path = Buffer.from(line.slice(8).replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), 'latin1').toString('utf8');
      current = new Map();
      into.set(path, current);
    } else if (current && line.length > 0 && !line.startsWith('#')) {
      const eq = line.indexOf('=');
      const key = Buffer.from(eq < 0 ? line : line.slice(0, eq), 'latin1').toString('utf8');
      const raw = eq < 0 ? '' : line.slice(eq + 1);
      current.set(key, raw.startsWith('0x') ? Buffer.from(raw.slice(2), 'hex') : Buffer.from(raw.replace(/^"|"$/g, ''), 'latin1'));
    }
  }
}
