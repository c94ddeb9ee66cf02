// One step of the ten-version series (scripts/build-debian-series.sh):
//   node scripts/series-mutate.ts ROOTFS VERSION [--seed N] [--edit-percent P]
// edits ROOTFS in place, deterministically given the seed, the version and
// the tree it starts from: P percent of the regular files (default 2) get a
// few small byte changes, three files are added and two removed. Edited and
// added files get a fixed mtime derived from the version. Names are handled
// as bytes (Buffer paths), never decoded.
import {
  lstatSync, mkdirSync, openSync, readdirSync, closeSync, readSync, writeSync, writeFileSync, unlinkSync, lutimesSync,
} from 'node:fs';
import { parseArgs } from 'node:util';
// The series must not depend on Math.random: the synthetic tree's seeded mulberry32.
import { prng } from './gen-synthetic-tree.ts';


const SLASH = Buffer.from('/');

/** Regular files below root, as byte paths, in byte order (deterministic). */
function regularFiles(root: Buffer): Buffer[] {
  const out: Buffer[] = [];
  const visit = (dir: Buffer): void => {
    const names = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
    for (const n of names) {
      const p = Buffer.concat([dir, SLASH, n]);
      const st = lstatSync(p);
      if (st.isDirectory()) visit(p);
      else if (st.isFile() && st.size > 0) out.push(p);
    }
  };
  visit(root);
  return out;
}

function main(): void {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { seed: { type: 'string', default: '1' }, 'edit-percent': { type: 'string', default: '2' } },
  });
  if (positionals.length !== 2) throw new Error('usage: series-mutate.ts ROOTFS VERSION [--seed N] [--edit-percent P]');
  const root = Buffer.from(positionals[0]!);
  const version = Number(positionals[1]);
  const rand = prng(Number(values.seed) * 1000 + version);
  const mtime = 1_700_000_000 + version * 86_400;
  const files = regularFiles(root);
  const edits = Math.max(1, Math.round((files.length * Number(values['edit-percent'])) / 100));

  // Edits: a few bytes overwritten at one to four places, in place (hardlinks keep sharing).
  const chosen = new Set<number>();
  while (chosen.size < Math.min(edits, files.length)) chosen.add(Math.floor(rand() * files.length));
  for (const i of [...chosen].sort((a, b) => a - b)) {
    const p = files[i]!;
    const size = lstatSync(p).size;
    const fd = openSync(p, 'r+');
    try {
      const places = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < places; k++) {
        const len = Math.min(size, 1 + Math.floor(rand() * 8));
        const at = Math.floor(rand() * (size - len + 1));
        const b = Buffer.alloc(len);
        readSync(fd, b, 0, len, at);
        for (let j = 0; j < len; j++) b[j] = (b[j]! + 1 + Math.floor(rand() * 255)) & 0xff;
        writeSync(fd, b, 0, len, at);
      }
    } finally {
      closeSync(fd);
    }
    lutimesSync(p, mtime, mtime);
  }

  // Two removals (not among the edited files, so the counts stay honest).
  const touched: Buffer[] = [];
  const left = files.filter((_, i) => !chosen.has(i));
  for (let k = 0; k < 2 && left.length > 0; k++) {
    const i = Math.floor(rand() * left.length);
    unlinkSync(left[i]!);
    touched.push(left[i]!.subarray(0, left[i]!.lastIndexOf(SLASH)));
    left.splice(i, 1);
  }

  // Three additions: text-like content of a few KiB, in a directory per version.
  const dir = Buffer.concat([root, Buffer.from(`/usr/share/series/v${version}`)]);
  mkdirSync(dir, { recursive: true });
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet'];
  for (let k = 0; k < 3; k++) {
    const n = 512 + Math.floor(rand() * 8192);
    const parts: string[] = [];
    for (let j = 0; j < n; j++) parts.push(words[Math.floor(rand() * words.length)]!);
    const p = Buffer.concat([dir, Buffer.from(`/added-${k}.txt`)]);
    writeFileSync(p, `${parts.join(' ')}\n`);
    lutimesSync(p, mtime, mtime);
  }
  // Directories whose entries changed get the version's time too (not the wall clock).
  touched.push(dir, Buffer.concat([root, Buffer.from('/usr/share/series')]), Buffer.concat([root, Buffer.from('/usr/share')]));
  for (const d of touched) lutimesSync(d, mtime, mtime);
  process.stderr.write(`series-mutate: v${version}: ${chosen.size} of ${files.length} files edited, 2 removed, 3 added\n`);
}

main();
