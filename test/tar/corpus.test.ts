// libarchive's own tar test archives (../shared/corpus/libarchive-tar/, see
// its README) with GNU tar as the judge: where GNU tar extracts an archive,
// `cowshed import tar:` must give the same tree, mounted and compared entry
// by entry (names as bytes, modes, owners, times, contents, link targets,
// devices, xattrs, hardlinks); where GNU tar fails, cowshed must refuse it
// with one line or give exactly what GNU tar did extract.
//
// Where cowshed deliberately does more than GNU tar: it applies
// `LIBARCHIVE.xattr.*` and `RHT.security.selinux` PAX records (GNU tar 1.34
// ignores the first, "Ignoring unknown extended header keyword", and reads
// the second only with --selinux), so xattrs only those records set are left
// out of the comparison.
//
// Directory mtimes GNU tar made itself are not compared: a parent directory
// the archive has no entry for gets the time of extraction (cowshed's image
// has 0 there, as umoci gives), and GNU tar sets a directory's time as soon
// as it extracts something outside it, so an entry written into it later
// (tar__test_patterns_2 lists /tmp/foo/bar/baz after /tmp/foo/baz) moves
// that time to now. Both show up as a directory of the GNU tree whose mtime
// is not before the extraction began.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import { REPO, cowshed, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { compareTrees, listTree, type EntryInfo } from '../helpers/tree-listing.ts';

const CORPUS = join(REPO, '..', 'shared', 'corpus', 'libarchive-tar');
const isRoot = process.getuid?.() === 0;
const hasZstd = spawnSync('zstd', ['--version']).status === 0;
const skip = !existsSync(CORPUS) ? `no corpus at ${CORPUS} (a clone outside this workspace)`
  : !isRoot ? 'needs root (GNU tar -p with owners and xattrs, mounts)' : false;

// The whole corpus takes minutes: `npm test` runs the archives that cover
// what issue 11 fixed (byte names: PAX hdrcharset and raw GNU names; old GNU
// and PAX 1.0 sparse files; repeated names and an unknown entry type; the
// multi-member gzip, multi-frame zstd with a skippable frame, and pzstd
// layers); `npm run test:slow` (COWSHED_SLOW=1) runs every archive.
const SLOW = !!process.env.COWSHED_SLOW;
const FAST = new Set([
  'libarchive__test_pax_filename_encoding.tar.gz',
  'libarchive__test_read_format_gtar_filename_koi8r.tar.gz',
  'libarchive__test_read_format_gtar_sparse_1_13.tar.gz',
  'libarchive__test_read_format_gtar_sparse_1_17_posix10.tar.gz',
  'libarchive__test_compat_solaris_tar_acl.tar.gz',
]);
const slowOnly = (f: string): string | false => (SLOW || FAST.has(f) ? false : 'only under COWSHED_SLOW (npm run test:slow); npm test runs a subset');

let work: string;
let store: string;
before(() => {
  if (skip) return;
  work = tempDir('cowshed-corpus-');
  store = join(work, 'store');
});
after(() => { if (work) removeTree(work); });

/** Xattr names GNU tar ignored because only a LIBARCHIVE.xattr.* record carried them. */
function libarchiveOnlyXattrs(stderr: string): Set<string> {
  const out = new Set<string>(['security.selinux']);
  for (const m of stderr.matchAll(/unknown extended header keyword '(?:‘)?LIBARCHIVE\.xattr\.([^'’]+)/g)) {
    out.add(m[1]!.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))));
  }
  return out;
}

/** Extracts with GNU tar as the README says; returns its exit status and stderr. */
function gnuExtract(archive: string, dest: string): { status: number; stderr: string; started: number } {
  mkdirSync(dest);
  const started = Math.floor(Date.now() / 1000) - 1;
  const r = spawnSync('tar', ['--numeric-owner', '--xattrs', "--xattrs-include=*", '-xpf', archive], { cwd: dest, encoding: 'latin1' });
  return { status: r.status ?? -1, stderr: r.stderr, started };
}

let n = 0;
async function check(name: string, archive: string): Promise<void> {
  const ref = join(work, `ref-${n}`);
  const image = `corpus-${n++}`;
  const gnu = gnuExtract(archive, ref);
  const ours = cowshed(store, 'import', `tar:${archive}`, image);
  if (ours.status !== 0) {
    assert.notEqual(gnu.status, 0, `${name}: GNU tar extracts it, cowshed refused it: ${ours.stderr}`);
    assert.equal(ours.stderr.trim().split('\n').length, 1, `${name}: one line: ${ours.stderr}`);
    return;
  }
  // Imported: must be exactly what GNU tar extracted (all of it, or all it could).
  const mnt = lastLine(cowshed(store, 'mount', image).stdout);
  assert.ok(mnt && existsSync(mnt), `${name}: mount printed ${mnt}`);
  // Left mounted (one CLI call less per archive): removeTree unmounts the store's mounts at the end.
  const want = await listTree(ref, { bytes: true, nsec: true });
  const got = await listTree(mnt, { bytes: true, nsec: true });
  const extra = libarchiveOnlyXattrs(gnu.stderr);
  for (const [p, info] of got) {
    const w: EntryInfo | undefined = want.get(p);
    for (const k of Object.keys(info.xattrs)) if (extra.has(k) && w && !(k in w.xattrs)) delete info.xattrs[k];
  }
  for (const [p, info] of want) {
    const g = got.get(p);
    if (info.type === 'dir' && info.mtimeSec >= gnu.started && g?.type === 'dir') { info.mtimeSec = g.mtimeSec; info.mtimeNsec = g.mtimeNsec; }
  }
  const diffs = compareTrees(want, got, { ignoreRoot: true });
  assert.deepEqual(diffs, [], `${name} (GNU tar exit ${gnu.status}): GNU tar's tree vs cowshed's`);
}

const archives = skip ? [] : readdirSync(join(CORPUS, 'tars')).filter((f) => f.endsWith('.gz')).sort();

void test('the corpus is there: 70 archives and 3 compressed originals', { skip }, () => {
  assert.equal(archives.length, 70);
  assert.equal(readdirSync(join(CORPUS, 'compressed')).length, 3);
});

for (const f of archives) {
  // (sparse_skip_entry, a 10 GiB sparse file, is imported in full, its holes staying holes; hashing it twice to compare takes a while.)
  void test(`libarchive corpus: ${f.replace(/\.gz$/, '')} imports as GNU tar extracts it`, { skip: skip || slowOnly(f) }, async () => {
    const archive = join(work, f.replace(/\.gz$/, ''));
    writeFileSync(archive, gunzipSync(readFileSync(join(CORPUS, 'tars', f))));
    await check(f, archive);
  });
}

// The three compressed originals, layers as libarchive ships them (a
// multi-member gzip, zstd frames with a skippable frame between them, pzstd
// output): src/oci/compression.ts decodes every member and frame. Always run.
for (const f of skip ? [] : readdirSync(join(CORPUS, 'compressed')).sort()) {
  void test(`libarchive corpus (compressed): ${f} imports as GNU tar extracts it`, { skip: f.endsWith('.zst') && !hasZstd ? 'zstd(1) not installed (GNU tar needs it)' : false }, async () => {
    const archive = join(work, f);
    execFileSync('cp', [join(CORPUS, 'compressed', f), archive]);
    await check(f, archive);
  });
}
