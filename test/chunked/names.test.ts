// zstd:chunked with names that are bytes: Latin-1 names (two that differ
// only in a byte that is not UTF-8, of the same size), 0xff, a 255-byte
// Latin-1 name, a UTF-8 name (kept as its bytes, never encoded twice), a
// symlink and a hardlink to such names. The TOC holds each name as Go's JSON
// encoder writes it (lossy when not UTF-8: the independent checker says
// what Go would write), the tar-split holds it exactly (`name_raw`), and a
// partial pull takes names from the tar-split only: it fetches the one
// changed file and gives exactly the image pushed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk, removeTree, tempDir } from '../helpers/cli.ts';
import { pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { checkZstdChunked } from './checker.ts';
import { cowshedAsync, cowshedAsyncOk, startRegistry, type RunningRegistry } from '../registry/servers.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const B = (s: string): Buffer => Buffer.from(s, 'latin1');
/** A binary-string (one char per byte) path below a host dir, as a Buffer for fs calls. */
const at = (dir: string, rel: string): Buffer => Buffer.concat([Buffer.from(dir), B('/'), B(rel)]);

const LONG = '\xe9'.repeat(255);
const UTF8 = Buffer.from('café.txt', 'utf8').toString('latin1');
const NAMES = { acute: 'caf\xe9.txt', grave: 'caf\xe8.txt', ff: '\xff', long: LONG, utf8: UTF8, dir: 'd\xe9j\xe0' };

/** The tree: the names above, and filler files so that a partial pull is worth it. */
function makeTree(root: string): void {
  mkdirSync(at(root, NAMES.dir), { recursive: true });
  writeFileSync(at(root, NAMES.acute), pseudoRandomBytes(6000, 1));
  writeFileSync(at(root, NAMES.grave), pseudoRandomBytes(6000, 2)); // same size, other bytes
  writeFileSync(at(root, NAMES.ff), pseudoRandomBytes(3000, 3));
  writeFileSync(at(root, NAMES.long), pseudoRandomBytes(4000, 4));
  writeFileSync(at(root, NAMES.utf8), pseudoRandomBytes(5000, 5));
  writeFileSync(at(root, `${NAMES.dir}/${NAMES.acute}`), pseudoRandomBytes(7000, 6));
  symlinkSync(B(NAMES.acute), at(root, 'lien-\xe9'));
  linkSync(at(root, NAMES.ff), at(root, 'hard-\xff'));
  for (let i = 0; i < 40; i++) writeFileSync(join(root, `filler${i}`), pseudoRandomBytes(20_000 + i, 100 + i));
}

/** GNU format: names as raw header bytes, the 255-byte one as a GNU long name. */
const tarOf = (root: string, file: string): string => {
  execFileSync('tar', ['--format=gnu', '--sort=name', '--mtime=@1700000000', '-C', root, '-cf', file, '.']);
  return file;
};

const sha = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('zstd:chunked: names are bytes', { skip: have('zstd') ? false : 'zstd is not installed' }, () => {
  let work: string;
  let src: string;
  let root: string;
  before(() => {
    work = tempDir('cowshed-chunked-names-');
    src = join(work, 'src');
    root = join(work, 'root');
    makeTree(root);
    cowshedOk(src, 'import', `tar:${tarOf(root, join(work, 'v1.tar'))}`, 'names:v1');
  });
  after(() => { if (work) removeTree(work); });

  test('export: the TOC names as Go writes them, the tar-split names exactly (name_raw), rebuilding the tar', () => {
    const out = join(work, 'layout');
    cowshedOk(src, 'export', '--compression-format', 'zstd:chunked', 'names:v1', `oci:${out}`);
    const blob = (d: string): Buffer => readFileSync(join(out, 'blobs', 'sha256', d.slice(7)));
    const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    const manifest = JSON.parse(blob(index.manifests[0]!.digest).toString()) as { layers: Array<{ digest: string; annotations?: Record<string, string> }> };
    const layer = manifest.layers[0]!;
    const diffId = sha(readFileSync(join(work, 'v1.tar')));
    const r = checkZstdChunked(blob(layer.digest), layer.annotations ?? {}, diffId);
    const toc = new Map(r.names.map((n) => [n.exact, n.toc]));
    // The UTF-8 name is its text (not its bytes taken as Latin-1 and encoded again).
    assert.equal(toc.get(`./${UTF8}`), './café.txt');
    // Go's encoder: one U+FFFD per byte that is not UTF-8.
    assert.equal(toc.get(`./${NAMES.acute}`), './caf\ufffd.txt');
    assert.equal(toc.get(`./${NAMES.grave}`), './caf\ufffd.txt');
    assert.equal(toc.get(`./${LONG}`), `./${'\ufffd'.repeat(255)}`);
    assert.equal(toc.get(`./${NAMES.dir}/`), './d\ufffdj\ufffd/');
    // \xff and hard-\xff are one inode: tar stores the first it meets (by name: hard-\xff), the other as a link.
    assert.equal(r.files.get('./hard-\xff'), sha(readFileSync(at(root, NAMES.ff))));
    assert.equal(toc.get(`./${NAMES.ff}`), './\ufffd');
    assert.equal(toc.get('./lien-\xe9'), './lien-\ufffd');
    for (const n of [NAMES.acute, NAMES.grave, LONG, UTF8, `${NAMES.dir}/${NAMES.acute}`]) {
      assert.equal(r.files.get(`./${n}`), sha(readFileSync(at(root, n))), `content of ${JSON.stringify(n)}`);
    }
    // And cowshed reads the blob back as the same image.
    cowshedOk(src, 'import', `oci:${out}`, 'names:back');
    const inspect = (n: string) => JSON.parse(cowshedOk(src, 'inspect', n)) as { composefs: string };
    assert.equal(inspect('names:back').composefs, inspect('names:v1').composefs);
  });

  describe('partial pull', { skip: have('docker-registry') ? false : 'docker-registry is not installed' }, () => {
    let registry: RunningRegistry;
    before(async () => { registry = await startRegistry(join(work, 'registry')); });
    after(async () => { await registry?.stop(); });

    test('fetches only the changed Latin-1 file (its twin by the TOC\'s lossy name is not mistaken for it) and gives exactly the image pushed', async () => {
      // v2: one byte of caf\xe9.txt changed; caf\xe8.txt, of the same size and TOC name, is not.
      const f = readFileSync(at(root, NAMES.acute));
      f[100] ^= 1;
      writeFileSync(at(root, NAMES.acute), f);
      await cowshedAsyncOk(src, ['import', `tar:${tarOf(root, join(work, 'v2.tar'))}`, 'names:v2']);
      for (const t of ['v1', 'v2']) {
        await cowshedAsyncOk(src, ['push', '--tls-verify=false', '--compression-format', 'zstd:chunked', `names:${t}`, `${registry.host}/names:${t}`]);
      }
      const store = join(work, 'client');
      await cowshedAsyncOk(store, ['pull', '-q', '--tls-verify=false', `${registry.host}/names:v1`]);
      const out = await cowshedAsync(store, ['pull', '--json', '--tls-verify=false', `${registry.host}/names:v2`]);
      assert.equal(out.status, 0, out.stderr);
      const r = JSON.parse(out.stdout) as { layers: Array<{ method: string; filesFetched?: number; fallback?: string }> };
      assert.equal(r.layers[0]!.method, 'partial', JSON.stringify(r.layers[0]));
      assert.equal(r.layers[0]!.filesFetched, 1, 'only caf\\xe9.txt');
      const want = JSON.parse(await cowshedAsyncOk(src, ['inspect', 'names:v2'])) as { composefs: string };
      const got = JSON.parse(await cowshedAsyncOk(store, ['inspect', `${registry.host}/names:v2`])) as { composefs: string };
      assert.equal(got.composefs, want.composefs, 'exactly the tree pushed, names and all');
    });
  });
});
