// The composefs writer against mkcomposefs 1.0.x's output (sha256 of every
// vector image), the dump parser's rejections, dump and image round trips,
// and fsck.erofs on what we write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { parseDump, printDump } from '../../src/composefs/dump.ts';
import { writeComposefsImage, xxh32, type WriteOptions } from '../../src/composefs/erofs-writer.ts';
import { readComposefsImage, readComposefsInfo } from '../../src/composefs/erofs-reader.ts';
import { FsVerityHasher } from '../../src/composefs/fsverity.ts';
import { walk, type FsNode } from '../../src/tree/node.ts';
import { CowshedError } from '../../src/util/errors.ts';
import { sharedPath } from '../helpers/cli.ts';

// mkcomposefs's test vectors: shared data beside the repository (../shared).
const vectors = sharedPath('vectors', 'composefs');
const DIR = vectors.path;
const LENIENT_ONLY = new Set(['no-newline.dump', 'longlink.dump', 'honggfuzz-longlink-unterminated.dump']);
const files = vectors.skip ? [] : readdirSync(DIR).filter((f) => /\.dump(\.gz)?$/.test(f)).sort();
const good = files.filter((f) => !f.startsWith('should-fail-'));
const bad = files.filter((f) => f.startsWith('should-fail-'));

function load(f: string): Buffer {
  const d = readFileSync(join(DIR, f));
  return f.endsWith('.gz') ? gunzipSync(d) : d;
}
function options(f: string): WriteOptions {
  const vf = join(DIR, `${f}.version`);
  if (!existsSync(vf)) return {};
  const v = Number(readFileSync(vf, 'utf8').trim());
  return { minVersion: v, maxVersion: v };
}
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Dump text with what the image cannot carry normalised away (payload/digest of non-external files, mode high bits). */
function normalisedDump(root: FsNode): string {
  for (const [, n] of walk(root)) {
    n.mode &= 0xffff;
    if (!(n.size > 0 && !n.inline)) {
      delete n.digest;
      delete n.payload;
    }
  }
  return printDump(root);
}

if (vectors.skip) test('mkcomposefs test vectors', { skip: vectors.skip }, () => {});

test('xxh32 matches the reference implementation', () => {
  assert.equal(xxh32(Buffer.alloc(0), 0), 0x02cc5d05);
  assert.equal(xxh32(Buffer.from('a'), 0), 0x550d7456);
  assert.equal(xxh32(Buffer.from('Nobody inspects the spammish repetition'), 0), 0xe2293b2f);
});

for (const f of good) {
  test(`vector ${f}: image sha256 matches mkcomposefs`, () => {
    const root = parseDump(load(f), { lenient: LENIENT_ONLY.has(f) });
    const img = writeComposefsImage(root, options(f));
    const want = readFileSync(join(DIR, `${f}.sha256`), 'utf8').trim().split(/\s+/)[0];
    assert.equal(sha256(img), want);
  });
}

for (const f of vectors.skip ? [] : LENIENT_ONLY) {
  test(`vector ${f}: rejected by the strict parser`, () => {
    assert.throws(() => parseDump(load(f)), (e: unknown) => e instanceof CowshedError && e.code === 'EFORMAT');
  });
}

for (const f of bad) {
  for (const lenient of [false, true]) {
    test(`vector ${f}: rejected (${lenient ? 'lenient' : 'strict'})`, () => {
      assert.throws(() => writeComposefsImage(parseDump(load(f), { lenient })),
        (e: unknown) => e instanceof CowshedError && (e.code === 'EFORMAT' || e.code === 'EINVAL') && !e.message.includes('\n'));
    });
  }
}

test('image fs-verity digests match the README table', { skip: vectors.skip }, () => {
  const table: [string, string][] = [
    ['special.dump', '6fae72a66167ef8d5830fa15647263ef1b535681aa91fdf195fa3d6f5e3ae15e'],
    ['special_v1.dump', '1d268f8bc7609b4f8f8467e98565f45300f9e192c0e6ef2d05820d3ea41d4515'],
    ['bigfile.dump', '160c71227628d810604ad305e5d4a912e01a5964866b9bec9f8fddc55e352bfb'],
  ];
  for (const [f, want] of table) {
    const img = writeComposefsImage(parseDump(load(f)), options(f));
    assert.equal(new FsVerityHasher().update(img).digest().toString('hex'), want, f);
  }
});

for (const f of good) {
  test(`vector ${f}: dump and image round trips`, () => {
    const root = parseDump(load(f), { lenient: true });
    const printed = printDump(root);
    assert.equal(printDump(parseDump(printed)), printed, 'printDump(parseDump(printDump(x))) is stable');
    const img = writeComposefsImage(root, options(f));
    const back = readComposefsImage(img);
    assert.equal(normalisedDump(back), normalisedDump(parseDump(printed)));
    assert.equal(readComposefsInfo(img).composefsVersion, f === 'special.dump' ? 0 : f === 'special_v1.dump' ? 1 : readComposefsInfo(img).composefsVersion);
    // The writer does not modify its input.
    assert.equal(printDump(root), printed);
  });
}

test('fsck.erofs accepts the images', { skip: vectors.skip }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'cfs-fsck-'));
  try {
    for (const f of good) {
      if (f.startsWith('cs9-x86_64-developer')) continue; // same shape as cs9-minimal, just slower
      const p = join(tmp, 'img');
      writeFileSync(p, writeComposefsImage(parseDump(load(f), { lenient: true }), options(f)));
      execFileSync('fsck.erofs', [p], { stdio: 'pipe' });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('dump escapes survive printing and parsing', () => {
  const src = '/ 4096 40755 2 0 0 0 0.0 - - - user.a\\x3db=\\x00\\xff\\x20\\\\\n' +
    '/a\\x20b\\nc 3 100644 1 0 0 0 5.7 - \\x2d\\t= - trusted.overlay.x=-\n' +
    '/ext 10000 100600 1 1 2 0 1.2 ab/cd - ' + 'ab'.repeat(32) + '\n' +
    '/lnk 1 120777 1 0 0 0 0.0 \\x2d - -\n';
  const root = parseDump(src);
  assert.deepEqual([...root.xattrs.get('user.a=b')!], [0, 255, 32, 92]);
  const f = root.children!.get('a b\nc')!;
  assert.deepEqual(Buffer.from(f.inline!).toString(), '-\t=');
  assert.equal(root.children!.get('lnk')!.target, '-');
  assert.equal(printDump(parseDump(printDump(root))), printDump(root));
  const back = readComposefsImage(writeComposefsImage(root));
  assert.equal(printDump(back), printDump(root));
});

test('hardlinks: one node under several names, @ lines in the dump', () => {
  const src = '/ 4096 40755 2 0 0 0 0.0 - - -\n/a 5 100644 3 0 0 0 0.0 - hello -\n/d 4096 40755 2 0 0 0 0.0 - - -\n' +
    '/d/b 5 @100644 3 0 0 0 0.0 /a - -\n/z 5 @100644 3 0 0 0 0.0 /d/b - -\n';
  const root = parseDump(src);
  assert.equal(root.children!.get('a'), root.children!.get('d')!.children!.get('b'));
  assert.equal(root.children!.get('a'), root.children!.get('z'));
  assert.match(printDump(root), /\/z 5 @100644 3 .* \/a hello -\n/);
  const back = readComposefsImage(writeComposefsImage(root));
  assert.equal(back.children!.get('a'), back.children!.get('z'));
  assert.equal(printDump(back), printDump(root));
});
