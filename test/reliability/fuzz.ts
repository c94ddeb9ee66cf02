// Hostile input fuzzing: property-based (fast-check, seeded) over the tar
// reader, tar-split rebuild, composefs dump parser, EROFS reader, OCI JSON
// parsers and decompression, each target in a child process with a
// watchdog (a synchronous hang cannot be interrupted in-process). Plus fixed
// decompression and tar bombs consumed with a byte cap.
import { spawn, execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync, symlinkSync, linkSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { cowshedOk, debianFixture, removeTree, sharedPath, tempDir } from '../helpers/cli.ts';
import { buildHostileTars } from '../fixtures/edge-image.ts';
import { compressZstdChunked } from '../../src/chunked/writer.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
/** No progress for this long = a hang the child could not report itself. */
const WATCHDOG_MS = 30_000;

export interface FuzzFinding { target: string; kind: string; message: string; input: string }
export interface FuzzTargetFigures {
  target: string;
  executions: number;
  /** Inputs parsed without error, and inputs refused with a typed error by code: shows the fuzzing gets past the first check. */
  accepted: number;
  refused: Record<string, number>;
  seeds: number;
  findings: FuzzFinding[];
  ms: number;
  /** What the child said on stderr (the bombs' outcomes). */
  notes: string;
}

export const FUZZ_TARGETS = ['tar', 'tar-split', 'dump', 'erofs', 'oci-json', 'decompress', 'import', 'registry', 'policy', 'registries-d', 'pem', 'payload', 'chunked-toc', 'chunked-tar-split', 'chunked-footer'] as const;
export type FuzzTarget = typeof FUZZ_TARGETS[number];

/** Builds the seed corpus: real tars (PAX, GNU, ustar, hostile), dump vectors, EROFS images, OCI JSON, compressed tars. */
export async function buildSeeds(dir: string): Promise<void> {
  for (const d of ['tar', 'dump', 'erofs', 'json', 'compressed', 'chunked']) mkdirSync(join(dir, d), { recursive: true });
  const src = join(dir, 'src');
  mkdirSync(join(src, 'sub/deeper'), { recursive: true });
  writeFileSync(join(src, 'small.txt'), 'hello\n');
  writeFileSync(join(src, 'sub/deeper/' + 'long-name-'.repeat(12)), Buffer.alloc(3000, 7));
  writeFileSync(join(src, 'héllo ✓'), 'utf8 name\n');
  writeFileSync(join(src, 'empty'), '');
  symlinkSync('small.txt', join(src, 'link'));
  symlinkSync('../' + 'target-'.repeat(20), join(src, 'long-link'));
  linkSync(join(src, 'small.txt'), join(src, 'hard'));
  execFileSync('setfattr', ['-n', 'user.note', '-v', '0x00ff0a', join(src, 'small.txt')]);
  execFileSync('mknod', [join(src, 'null'), 'c', '1', '3']);
  const tars = join(dir, 'tar');
  for (const format of ['pax', 'gnu', 'ustar']) {
    try {
      execFileSync('tar', [`--format=${format}`, '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', src, '-cf', join(tars, `${format}.tar`), '.'], { stdio: 'ignore' });
    } catch { /* ustar cannot hold the long link target: skip it */ }
  }
  // PAX with large records and a global header, and GNU long names, by python's tarfile.
  execFileSync('python3', ['-c', `
import tarfile, io, sys
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT, pax_headers={'comment': 'g' * 2000}) as t:
    ti = tarfile.TarInfo('p/' + 'x' * 3000); ti.size = 5; ti.pax_headers = {'SCHILY.xattr.user.big': 'v' * 20000, 'mtime': '1700000000.123456789'}
    t.addfile(ti, io.BytesIO(b'12345'))
    ti = tarfile.TarInfo('l'); ti.type = tarfile.SYMTYPE; ti.linkname = 'y' * 500; t.addfile(ti)
with tarfile.open(sys.argv[2], 'w', format=tarfile.GNU_FORMAT) as t:
    ti = tarfile.TarInfo('g/' + 'z' * 300); ti.size = 3; ti.uid = 3000000; t.addfile(ti, io.BytesIO(b'abc'))
`, join(tars, 'pax-big.tar'), join(tars, 'gnu-long.tar')]);
  const hostile = await buildHostileTars(join(dir, 'hostile'));
  for (const [name, path] of Object.entries(hostile)) copyFileSync(path, join(tars, `hostile-${name}.tar`));

  // The composefs test vectors are shared data beside the repository; without them the dump target still has the dump of the small tree below.
  const vectors = sharedPath('vectors', 'composefs');
  if (!vectors.skip) {
    for (const f of readdirSync(vectors.path)) {
      if (/\.dump(\.gz)?$/.test(f)) copyFileSync(join(vectors.path, f), join(dir, 'dump', f));
    }
  }
  // A real EROFS image written by cowshed, from the small tree above.
  cowshedOk(join(dir, 'store-unused'), 'composefs', 'create', src, join(dir, 'erofs', 'small.cfs'));
  // Its dump is a dump seed of our own (the shared vectors may be absent).
  writeFileSync(join(dir, 'dump', 'small.dump'), cowshedOk(join(dir, 'store-unused'), 'composefs', 'dump', join(dir, 'erofs', 'small.cfs')));
  const debianOci = debianFixture().layout;
  copyFileSync(join(debianOci, 'index.json'), join(dir, 'json', 'index.json'));
  const blobs = join(debianOci, 'blobs', 'sha256');
  for (const f of readdirSync(blobs)) {
    if (statSync(join(blobs, f)).size < 100_000) copyFileSync(join(blobs, f), join(dir, 'json', f));
  }

  await buildTrustSeeds(dir);
  const pax = readFileSync(join(tars, 'pax.tar'));
  writeFileSync(join(dir, 'compressed', 'pax.tar.gz'), gzipSync(pax));
  writeFileSync(join(dir, 'compressed', 'pax.tar.zst'), zstdCompressSync(pax));
  writeFileSync(join(dir, 'compressed', 'pax.tar'), pax);
  // zstd:chunked: a blob cowshed writes (also a decompress seed), its TOC, tar-split and footer.
  const parts: Uint8Array[] = [];
  for await (const c of compressZstdChunked((async function* () { yield pax; })(), {})) parts.push(c);
  const blob = Buffer.concat(parts);
  writeFileSync(join(dir, 'compressed', 'pax.tar.zst-chunked'), blob);
  const f = blob.subarray(blob.length - 64);
  const at = (i: number): number => Number(f.readBigUInt64LE(i * 8));
  writeFileSync(join(dir, 'chunked', 'footer.bin'), f);
  writeFileSync(join(dir, 'chunked', 'toc.json'), zstdDecompressSync(blob.subarray(at(0), at(0) + at(1))));
  writeFileSync(join(dir, 'chunked', 'tar-split.json'), zstdDecompressSync(blob.subarray(at(4), at(4) + at(5))));
}

/** Seeds of the trust targets: policies, registries.d files, keys, payloads and signature manifests. */
async function buildTrustSeeds(dir: string): Promise<void> {
  const { generateSigstoreKey } = await import('../../src/trust/keys.ts');
  const { makePayload, SIGSTORE_TYPE, SIMPLE_SIGNING_TYPE } = await import('../../src/trust/payload.ts');
  for (const d of ['policy', 'registries-d', 'pem', 'payload']) mkdirSync(join(dir, d), { recursive: true });
  const key = generateSigstoreKey(Buffer.from('fuzz'));
  const keyData = Buffer.from(key.publicPem).toString('base64');
  const policies: object[] = [
    { default: [{ type: 'insecureAcceptAnything' }] },
    { default: [{ type: 'reject' }], transports: { docker: { 'registry.example/ns': [{ type: 'insecureAcceptAnything' }], '*.example.com': [{ type: 'reject' }] } } },
    { default: [{ type: 'sigstoreSigned', keyData, signedIdentity: { type: 'matchRepository' } }] },
    { default: [{ type: 'sigstoreSigned', keyDatas: [keyData, keyData], signedIdentity: { type: 'remapIdentity', prefix: 'a.example/x', signedPrefix: 'b.example/y' } }] },
    { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/nonexistent', signedIdentity: { type: 'exactReference', dockerReference: 'a.example/x:1' } }] },
    { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: ['/a', '/b'], signedIdentity: { type: 'exactRepository', dockerRepository: 'a.example/x' } }], transports: { docker: { '': [{ type: 'reject' }] }, oci: {} } },
  ];
  policies.forEach((p, i) => writeFileSync(join(dir, 'policy', `p${i}.json`), JSON.stringify(p, null, 2)));
  writeFileSync(join(dir, 'registries-d', 'a.yaml'), 'default-docker:\n  lookaside: file:///var/lib/containers/sigstore\n  use-sigstore-attachments: true\n');
  writeFileSync(join(dir, 'registries-d', 'b.yaml'), 'docker:\n  registry.example/ns:\n    sigstore: https://sigs.example/x\n    sigstore-staging: file:///tmp/x\n  other.example:\n    use-sigstore-attachments: false\n');
  writeFileSync(join(dir, 'registries-d', 'c.yaml'), 'docker: {a: {lookaside-staging: "file:///s"}}\nunknown: [1, 2, {x: y}]\n');
  writeFileSync(join(dir, 'pem', 'key.private'), key.privatePem);
  writeFileSync(join(dir, 'pem', 'key.pub'), key.publicPem);
  writeFileSync(join(dir, 'pem', 'cosign.private'), key.privatePem.replaceAll('SIGSTORE', 'COSIGN'));
  const digest = `sha256:${'ab'.repeat(32)}`;
  writeFileSync(join(dir, 'payload', 'sigstore.json'), makePayload(SIGSTORE_TYPE, 'registry.example/ns/app:v1', digest, 'cd'.repeat(32)));
  writeFileSync(join(dir, 'payload', 'simple.json'), makePayload(SIMPLE_SIGNING_TYPE, 'registry.example/ns/app:v1', digest));
  writeFileSync(join(dir, 'payload', 'manifest.json'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: 2 },
    layers: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', digest, size: 300, annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ==' } }],
  }));
}

function runTarget(target: FuzzTarget | 'bombs', seed: number, runs: number, seeds: string, findingsDir: string): Promise<FuzzTargetFigures> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const progress = join(findingsDir, `.progress-${target}`);
    const script = target === 'bombs' ? join(HERE, 'bombs-child.ts') : join(HERE, 'fuzz-child.ts');
    const child = spawn(process.execPath, [script, target, String(seed), String(runs), seeds, progress, findingsDir],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: findingsDir });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    let hung = false;
    let lastChange = Date.now();
    let lastMtime = 0;
    const watchdog = setInterval(() => {
      let m = 0;
      try { m = statSync(progress).mtimeMs; } catch { /* not started */ }
      if (m !== lastMtime) { lastMtime = m; lastChange = Date.now(); }
      if (Date.now() - lastChange > WATCHDOG_MS) { hung = true; child.kill('SIGKILL'); }
    }, 1000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearInterval(watchdog);
      const ms = Math.round(performance.now() - started);
      const last = out.trim().split('\n').pop() ?? '';
      if (status === 0 && last.startsWith('{')) {
        const r = JSON.parse(last) as { executions: number; accepted?: number; refused?: Record<string, number>; seeds: number; findings: Omit<FuzzFinding, 'target'>[] };
        resolve({ target, executions: r.executions, accepted: r.accepted ?? 0, refused: r.refused ?? {}, seeds: r.seeds, findings: r.findings.map((f) => ({ target, ...f })), ms, notes: err });
        return;
      }
      // The child died: a hang (watchdog), an out-of-memory abort or a crash outside the property.
      const input = join(findingsDir, `${target}-fatal.bin`);
      if (existsSync(progress)) copyFileSync(progress, input);
      const kind = hung ? 'hang' : 'fatal';
      const message = hung ? `no progress for ${WATCHDOG_MS / 1000} s (synchronous loop?)` : `child exited ${status}: ${err.trim().slice(0, 600)}`;
      resolve({ target, executions: -1, accepted: 0, refused: {}, seeds: 0, findings: [{ target, kind, message, input }], ms, notes: err });
    });
  });
}

export async function fuzzCampaign(opts: { runs: number; seed: number; targets?: FuzzTarget[]; bombs?: boolean; findingsDir?: string; log?: (l: string) => void }): Promise<FuzzTargetFigures[]> {
  const log = opts.log ?? (() => {});
  const work = tempDir('cowshed-fuzz-');
  // Inputs of findings are kept (and named in the log) so each can be replayed.
  const findingsDir = opts.findingsDir ?? tempDir('cowshed-fuzz-findings-');
  mkdirSync(findingsDir, { recursive: true });
  try {
    const seeds = join(work, 'seeds');
    await buildSeeds(seeds);
    const results: FuzzTargetFigures[] = [];
    for (const t of opts.targets ?? FUZZ_TARGETS) {
      // An import (a store transaction per input) costs ~20 parser runs: it gets a fifth of the inputs.
      // A pull from the hostile registry (a few HTTP round trips and a store transaction) likewise.
      const runs = t === 'import' || t === 'registry' ? Math.ceil(opts.runs / 5) : opts.runs;
      const r = await runTarget(t, opts.seed, runs, seeds, findingsDir);
      const codes = Object.entries(r.refused).map(([c, n]) => `${c} ${n}`).join(', ');
      log(`fuzz ${t}: ${r.executions} executions from ${r.seeds} seeds in ${(r.ms / 1000).toFixed(1)} s: ${r.accepted} accepted, refused ${codes || 'none'}; ${r.findings.length} findings`);
      for (const f of r.findings) log(`  ${f.kind}: ${f.message} (input ${f.input})`);
      results.push(r);
    }
    if (opts.bombs ?? true) {
      const r = await runTarget('bombs', opts.seed, 0, seeds, findingsDir);
      log(`bombs: ${r.executions} cases in ${(r.ms / 1000).toFixed(1)} s, ${r.findings.length} findings`);
      for (const l of r.notes.trim().split('\n')) if (l && !l.startsWith('npm warn')) log(`  ${l}`);
      for (const f of r.findings) log(`  ${f.kind}: ${f.message}`);
      results.push(r);
    }
    return results;
  } finally {
    if (!opts.findingsDir && !readdirSync(findingsDir).some((f) => f.endsWith('.bin'))) removeTree(findingsDir);
    removeTree(work);
  }
}
