// One fuzz target in its own process (so a synchronous hang can be killed by
// the parent's watchdog): `node fuzz-child.ts TARGET SEED RUNS SEEDS_DIR PROGRESS_FILE`.
// Runs fast-check over random and mutated inputs; prints one JSON line:
// { target, executions, findings: [{ kind, message, input (file) }] }.
//
// A finding is: an exception other than CowshedError, an async input that
// does not settle within the per-input timeout, a peak RSS more than
// RSS_BUDGET above the start, or any write to the file system.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { gzipSync, gunzipSync } from 'node:zlib';
import fc from 'fast-check';
import { isCowshedError } from '../../src/util/errors.ts';
import { readTar } from '../../src/tar/reader.ts';
import { TarSplitWriter, rebuildTar } from '../../src/tar/split.ts';
import { parseDump, printDump } from '../../src/composefs/dump.ts';
import { writeComposefsImage } from '../../src/composefs/erofs-writer.ts';
import type { FsNode } from '../../src/tree/node.ts';
import { readComposefsImage, readComposefsInfo } from '../../src/composefs/erofs-reader.ts';
import { parseManifest, parseIndex, parseConfig } from '../../src/oci/types.ts';
import { decompress } from '../../src/oci/compression.ts';
import { Store } from '../../src/store/store.ts';
import { fsck } from '../../src/store/fsck.ts';
import { writeFileAtomic } from '../../src/util/fs.ts';
import { tarArchive, type RawEntry, type RawType } from './tar-bytes.ts';
import { pullImage } from '../../src/registry/pull.ts';
import { checkPositions, fileFrames, matchTocAndTarSplit, parseFooter, parseTarSplit, parseToc } from '../../src/chunked/format.ts';
import { scriptArb, startHostileRegistry, type HostileRegistry, type Script } from './hostile-registry.ts';

import { parsePolicy } from '../../src/trust/policy.ts';
import { parseRegistriesYaml } from '../../src/trust/registries-d.ts';
import { decryptPrivateKey, readPublicKeys } from '../../src/trust/keys.ts';
import { parsePayload, SIGSTORE_TYPE, SIMPLE_SIGNING_TYPE } from '../../src/trust/payload.ts';
import { parseSignatureManifest } from '../../src/trust/sigstore.ts';

import type { FuzzTarget } from './fuzz.ts';

const PER_INPUT_TIMEOUT_MS = 5000;
const RSS_BUDGET_KB = 256 * 1024;
/** Most output bytes taken from any stream (decompressed data, tar bodies, rebuilt tars). */
const BYTE_CAP = 32 << 20;

interface Finding { kind: string; message: string; input: string }

// ---- file system guard: the parsers must not write anything ----------------

const writes: string[] = [];
const realOpenSync = fs.openSync;
const realRmSync = fs.rmSync;
/** Our own bookkeeping writes (progress, finding inputs) bypass the guard. */
function realWriteFileSync(path: string, data: Uint8Array): void {
  const fd = realOpenSync(path, 'w');
  try { fs.writeSync(fd, data); } finally { fs.closeSync(fd); }
}
/**
 * Every write-like fs call is checked: allowed only below `allowed` (the
 * import target's own temp dir); anything else is recorded and refused.
 */
function guardFs(allowed?: string): void {
  const inside = (p: unknown): boolean => allowed !== undefined && typeof p === 'string' && (resolve(p) + '/').startsWith(allowed + '/');
  const wrap = (name: string, real: (...a: unknown[]) => unknown, pathArgs: number[]) => (...args: unknown[]): unknown => {
    if (pathArgs.every((i) => inside(args[i]))) return real(...args);
    writes.push(`${name}(${pathArgs.map((i) => String(args[i])).join(', ')})`);
    throw new Error(`fuzz guard: ${name} outside the allowed directory`);
  };
  const destArgs: Record<string, number[]> = { rename: [0, 1], link: [1], symlink: [1], copyFile: [1] };
  const patch = (mod: Record<string, unknown>, names: string[], prefix: string): void => {
    for (const name of names) {
      const real = mod[name];
      if (typeof real !== 'function') continue;
      const base = name.replace(/Sync$/, '');
      mod[name] = wrap(prefix + name, (real as (...a: unknown[]) => unknown).bind(mod), destArgs[base] ?? [0]);
    }
  };
  const mod = fs as unknown as Record<string, unknown>;
  patch(mod, ['writeFileSync', 'writeFile', 'appendFileSync', 'appendFile', 'mkdirSync', 'mkdir', 'renameSync', 'rename', 'symlinkSync', 'symlink',
    'linkSync', 'link', 'unlinkSync', 'unlink', 'rmSync', 'rm', 'rmdirSync', 'rmdir', 'chmodSync', 'chmod', 'chownSync', 'chown', 'lchownSync', 'truncateSync', 'truncate',
    'createWriteStream', 'mknodSync', 'copyFileSync', 'copyFile', 'utimesSync', 'utimes', 'lutimesSync', 'mkdtempSync', 'mkdtemp'], '');
  const writeFlags = (flags: unknown): boolean => flags !== undefined && flags !== 'r' && flags !== fs.constants.O_RDONLY;
  const open = fs.openSync;
  mod.openSync = (path: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
    if (writeFlags(flags) && !inside(path)) { writes.push(`openSync(${String(path)}, ${String(flags)})`); throw new Error('fuzz guard: openSync for writing'); }
    return open(path, flags ?? 'r', mode);
  };
  const pmod = fsp as unknown as Record<string, unknown>;
  patch(pmod, ['writeFile', 'appendFile', 'mkdir', 'rename', 'symlink', 'link', 'unlink', 'rm', 'rmdir', 'chmod', 'chown', 'truncate', 'copyFile', 'utimes', 'mkdtemp'], 'promises.');
  const popen = fsp.open;
  pmod.open = (path: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    if (writeFlags(flags) && !inside(path)) { writes.push(`promises.open(${String(path)}, ${String(flags)})`); return Promise.reject(new Error('fuzz guard: open for writing')); }
    return popen(path, flags, mode);
  };
  syncBuiltinESMExports();
}

// ---- mutations ---------------------------------------------------------------

const INTERESTING_U32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0xfff, 0x1000, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
interface Mutation { kind: number; pos: number; val: number; len: number }
const mutationArb = fc.record({ kind: fc.nat(9), pos: fc.nat(), val: fc.nat(), len: fc.nat(64) });

function mutate(seed: Buffer, ms: Mutation[], alignedFields: number[] = []): Buffer {
  let b = Buffer.from(seed);
  for (const m of ms) {
    const at = b.length ? m.pos % b.length : 0;
    switch (m.kind) {
      case 0: if (b.length) b[at] ^= 1 << (m.val % 8); break;
      case 1: if (b.length) b[at] = m.val & 0xff; break;
      case 2: b = Buffer.concat([b.subarray(0, at), Buffer.alloc(m.len + 1, m.val & 0xff), b.subarray(at)]); break;
      case 3: b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len + 1)]); break;
      case 4: b = b.subarray(0, at); break;
      case 5: { // duplicate a slice somewhere else
        const from = b.length ? m.val % b.length : 0;
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + m.len * 16), b.subarray(at)]);
        break;
      }
      case 6: if (b.length >= 4) b.writeUInt32LE(INTERESTING_U32[m.val % INTERESTING_U32.length], Math.min(at & ~3, b.length - 4)); break;
      case 7: if (b.length >= 8) b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(INTERESTING_U32[m.val % INTERESTING_U32.length]) << BigInt(m.len % 40)), Math.min(at & ~7, b.length - 8)); break;
      case 8: case 9: { // a format field: write an interesting number as octal text or raw
        if (!alignedFields.length || b.length < 512) { if (b.length) b[at] = m.val & 0xff; break; }
        const block = Math.floor(at / 512) * 512;
        const field = alignedFields[m.val % alignedFields.length];
        const n = [0, 1, 0o777777777777, 8 ** 11 - 1, 2 ** 33, 512, 1 << 20, 2 ** 53][m.len % 8];
        const text = Buffer.from(n.toString(8).padStart(11, '0').slice(-11) + '\0', 'latin1');
        if (m.kind === 9) { text.fill(0xff, 0, 1); text[1] = m.val & 0xff; } // base-256 with a junk top byte
        text.copy(b, Math.min(block + field, b.length - 12));
        break;
      }
    }
  }
  return b;
}

// ---- tar helpers ---------------------------------------------------------------

// name, mode, uid, gid, size, mtime, typeflag(-1), linkname, devmajor, devminor
const TAR_FIELDS = [0, 100, 108, 116, 124, 136, 155, 157, 329, 337];

/** Recompute the checksum of every block that looks like a ustar header, so mutations reach past the checksum test. */
function fixTarChecksums(b: Buffer): Buffer {
  for (let off = 0; off + 512 <= b.length; off += 512) {
    if (b.toString('latin1', off + 257, off + 262) !== 'ustar') continue;
    b.fill(0x20, off + 148, off + 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += b[off + i];
    Buffer.from(sum.toString(8).padStart(6, '0') + '\0 ', 'latin1').copy(b, off + 148);
  }
  return b;
}

/** Chunks of varying size, as a network or a pipe delivers them. */
async function* chunked(data: Buffer, seed: number): AsyncGenerator<Uint8Array> {
  let x = seed | 1;
  for (let at = 0; at < data.length;) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    const n = 1 + ((x >>> 0) % 3000);
    yield data.subarray(at, at + n);
    at += n;
  }
}

async function* zeros(size: number): AsyncGenerator<Uint8Array> {
  const chunk = Buffer.alloc(64 << 10);
  for (let left = size; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

async function drain(source: AsyncIterable<Uint8Array>, cap = BYTE_CAP): Promise<number> {
  let n = 0;
  for await (const c of source) { n += c.length; if (n >= cap) break; }
  return n;
}

async function readWholeTar(data: Buffer, chunkSeed: number): Promise<Buffer> {
  const split = new TarSplitWriter();
  let bytes = 0;
  for await (const e of readTar(chunked(data, chunkSeed), { split })) {
    if (e.type === 'file' && e.size > 0) {
      bytes += await drain(e.body(), BYTE_CAP - bytes);
      if (bytes >= BYTE_CAP) return Buffer.alloc(0);
      e.setContentDigest(Buffer.alloc(32));
    }
  }
  return split.finish();
}

// ---- seeds -------------------------------------------------------------------

function filesIn(dir: string): Buffer[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).sort().map((f) => fs.readFileSync(join(dir, f)));
}

async function loadSeeds(target: FuzzTarget, dir: string): Promise<Buffer[]> {
  switch (target) {
    case 'tar': case 'import': return filesIn(join(dir, 'tar'));
    case 'tar-split': {
      const out: Buffer[] = [];
      for (const t of filesIn(join(dir, 'tar'))) {
        try { out.push(gunzipSync(await readWholeTar(t, 1))); } catch { /* hostile seeds need not parse */ }
      }
      return out;
    }
    case 'dump': return filesIn(join(dir, 'dump')).map((b) => (b[0] === 0x1f && b[1] === 0x8b ? gunzipSync(b) : b)).filter((b) => b.length < 200_000);
    case 'erofs': return filesIn(join(dir, 'erofs'));
    case 'oci-json': return filesIn(join(dir, 'json'));
    case 'decompress': return filesIn(join(dir, 'compressed'));
    case 'registry': return [];
    case 'policy': case 'registries-d': case 'pem': case 'payload': return filesIn(join(dir, target));
    case 'chunked-toc': return filesIn(join(dir, 'chunked')).filter((b) => b[0] === 0x7b && b.includes('"entries"'));
    case 'chunked-tar-split': return filesIn(join(dir, 'chunked')).filter((b) => b[0] === 0x7b && !b.includes('"entries"'));
    case 'chunked-footer': return filesIn(join(dir, 'chunked')).filter((b) => b.length === 64);
  }
}

// ---- one execution per target ----------------------------------------------

/** Runs every parser on the input; rethrows the first typed error only when all of them refused it. */
function allOf(parsers: (() => unknown)[]): void {
  let firstTyped: unknown;
  let anyAccepted = false;
  for (const p of parsers) {
    try { p(); anyAccepted = true; } catch (e) {
      if (!isCowshedError(e)) throw e;
      firstTyped ??= e;
    }
  }
  if (!anyAccepted) throw firstTyped;
}

async function execute(target: FuzzTarget, input: Buffer, aux: number): Promise<void> {
  switch (target) {
    case 'tar':
      await readWholeTar(input, aux);
      return;
    case 'tar-split': {
      // `input` is a decompressed record: most runs gzip it so mutations reach the parser; some feed raw bytes.
      const record = aux % 4 === 0 ? input : gzipSync(input);
      await drain(rebuildTar(record, (_d, size) => zeros(size)));
      return;
    }
    case 'dump': {
      // What parses must also write as EROFS, read back, and print as a dump that parses to the same dump.
      let tree: FsNode;
      try { tree = parseDump(input); } catch (e) {
        if (!isCowshedError(e)) throw e;
        tree = parseDump(input, { lenient: true });
      }
      readComposefsImage(writeComposefsImage(tree));
      const printed = printDump(tree);
      if (printDump(parseDump(printed)) !== printed) throw new Error('dump round trip: printDump(parseDump(printDump(tree))) differs');
      return;
    }
    case 'erofs': {
      allOf([() => readComposefsInfo(input)]);
      writeComposefsImage(readComposefsImage(input));
      return;
    }
    case 'oci-json':
      return allOf([() => parseManifest(input), () => parseIndex(input), () => parseConfig(input)]);
    case 'decompress':
      await drain(decompress(chunked(input, aux)));
      return;
    case 'import': {
      const { store, input: file } = importState!;
      realWriteFileSync(file, input);
      await store.importImage(`tar:${file}`, `fuzz:${aux % 4}`);
      return;
    }
    case 'chunked-toc': {
      // What parses must give files whose frames nest, and agree (or disagree in a typed way) with a tar-split of its names.
      const toc = parseToc(input, aux * 1000 + 1, 'fuzz');
      const files = fileFrames(toc, 'fuzz');
      const split = [...files.values()].map((f) => ({ type: 1 as const, name: Buffer.from(f.name), size: f.size }));
      matchTocAndTarSplit(files, split, 'fuzz');
      for (const f of files.values()) for (const c of f.chunks) if (c.end < c.offset || c.offset < 0) throw new Error(`fileFrames gave a range ending before it starts: ${JSON.stringify(c)}`);
      return;
    }
    case 'chunked-tar-split':
      parseTarSplit(input, 'fuzz');
      return;
    case 'chunked-footer': {
      const p = parseFooter(input.length === 64 ? input : Buffer.concat([input, Buffer.alloc(64)]).subarray(0, 64), 'fuzz');
      checkPositions(p, aux * 4096, 'fuzz');
      for (const r of [p.toc, p.tarSplit]) if (r.offset + r.length > aux * 4096 - 72) throw new Error('checkPositions accepted a range past the footer');
      return;
    }
    case 'registry': {
      // A pull from a registry that answers as the input says; what it accepts is removed again, so the next pull fetches.
      registry!.script = JSON.parse(input.toString()) as Script;
      const ref = `127.0.0.1:${registry!.port}/fuzz/img:v1`;
      await pullImage(importState!.store, ref, { tlsVerify: false, client: { maxAttempts: 2, retryDelayMs: 1, idleTimeoutMs: 500 } });
      importState!.store.removeImage(ref);
      return;
    }
    case 'policy':
      return allOf([() => parsePolicy(input.toString('utf8'), 'policy.json')]);
    case 'registries-d':
      return allOf([() => parseRegistriesYaml(input.toString('utf8'), 'fuzz.yaml')]);
    case 'pem': {
      const text = input.toString('utf8');
      return allOf([() => readPublicKeys(text, 'key.pub'), () => decryptPrivateKey(text, Buffer.from(aux % 2 ? 'fuzz' : 'wrong'), 'key.private')]);
    }
    case 'payload':
      return allOf([() => parsePayload(input, SIGSTORE_TYPE, 'payload'), () => parsePayload(input, SIMPLE_SIGNING_TYPE, 'payload'), () => parseSignatureManifest(input, 'manifest')]);
  }
}

/** The import and registry targets' store, in a temp dir the fs guard lets it write to. */
let importState: { dir: string; store: Store; input: string } | undefined;
let registry: HostileRegistry | undefined;

// The classic escapes, combined: names, link targets and types that try to leave the root.
const HOSTILE_NAMES = ['a', 'a/b', 'a/b/c', 'link', 'link/file', 'link/sub/file', '../escape', '/abs', './../x', 'a/../../x', 'dev/null', '.', './', 'a/./b',
  '.wh.a', 'a/.wh..wh..opq', '.wh..wh..opq', '.wh.link', 'etc/passwd', 'hl', 'x'.repeat(99), 'a//b', '..', '/'];
const HOSTILE_TARGETS = ['/tmp', '..', '../..', '/etc/passwd', 'a', 'a/b', 'link', 'link/file', '../outside', 'does-not-exist', '/', '', 'hl', '/proc/self/root'];
const RAW_TYPES: RawType[] = ['file', 'dir', 'symlink', 'hardlink', 'char', 'block', 'fifo'];
const hostileArchiveArb = fc.array(fc.record({ n: fc.nat(HOSTILE_NAMES.length - 1), t: fc.nat(RAW_TYPES.length - 1), l: fc.nat(HOSTILE_TARGETS.length - 1), s: fc.nat(700) }), { minLength: 1, maxLength: 8 })
  .map((es) => tarArchive(es.map(({ n, t, l, s }): RawEntry => {
    const type = RAW_TYPES[t];
    return { name: HOSTILE_NAMES[n] + (type === 'dir' && !HOSTILE_NAMES[n].endsWith('/') ? '/' : ''), type, linkname: HOSTILE_TARGETS[l], body: type === 'file' ? Buffer.alloc(s, 0x41 + (s % 26)) : undefined, devmajor: 1, devminor: 3 };
  })));

/** The JSON document with its k-th value (depth first, modulo the count) replaced by v. */
function replaceDeep(doc: unknown, v: unknown, k: number): unknown {
  const slots: Array<{ holder: Record<string, unknown> | unknown[]; key: string | number }> = [];
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) x.forEach((e, i) => { slots.push({ holder: x, key: i }); walk(e); });
    else if (typeof x === 'object' && x !== null) for (const [key, e] of Object.entries(x)) { slots.push({ holder: x as Record<string, unknown>, key }); walk(e); }
  };
  walk(doc);
  if (slots.length === 0) return v;
  const { holder, key } = slots[k % slots.length]!;
  (holder as Record<string | number, unknown>)[key] = v;
  return doc;
}

function inputArb(target: FuzzTarget, seeds: Buffer[]): fc.Arbitrary<Buffer> {
  const random = fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a));
  const isTar = target === 'tar' || target === 'import';
  const fields = isTar ? TAR_FIELDS : [];
  if (target === 'registry') return scriptArb;
  const mutated = seeds.length === 0 ? random : fc.tuple(fc.nat(seeds.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 6 }), fc.boolean())
    .map(([i, ms, fix]) => {
      const b = mutate(seeds[i], ms, fields);
      return isTar && fix ? fixTarChecksums(b) : b;
    });
  const extra: fc.Arbitrary<Buffer>[] = [];
  if (target === 'oci-json' || target === 'policy' || target === 'payload') {
    // Structured edits: deep nesting, huge numbers and strings, wrong types in the right places.
    extra.push(fc.nat(100_000).map((n) => Buffer.from('['.repeat(n) + ']'.repeat(n))));
    extra.push(fc.nat(100_000).map((n) => Buffer.from('{"schemaVersion":2,"layers":' + '['.repeat(n) + ']'.repeat(n) + '}')));
    if (seeds.length) {
      extra.push(fc.tuple(fc.nat(seeds.length - 1), fc.jsonValue({ maxDepth: 4 }), fc.nat()).map(([i, v, k]) => {
        const doc = JSON.parse(seeds[i].toString()) as Record<string, unknown>;
        const keys = Object.keys(doc);
        const key = keys[k % keys.length];
        doc[key] = v;
        return Buffer.from(JSON.stringify(doc));
      }));
    }
  }
  if ((target === 'policy' || target === 'payload') && seeds.length) {
    // A value anywhere in the document replaced: reaches the checks past the JSON syntax.
    extra.push(fc.tuple(fc.nat(seeds.length - 1), fc.jsonValue({ maxDepth: 3 }), fc.nat()).map(([i, v, k]) => Buffer.from(JSON.stringify(replaceDeep(JSON.parse(seeds[i].toString()), v, k)))));
  }
  if (target === 'pem' && seeds.length) {
    // The PEM body decoded, mutated (DER, or the encrypted key's JSON), encoded again.
    extra.push(fc.tuple(fc.nat(seeds.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([i, ms]) => {
      const m = /^(-----BEGIN ([A-Z ]+)-----\n)([\s\S]*?)(-----END [A-Z ]+-----\n?)$/.exec(seeds[i].toString());
      if (!m) return seeds[i];
      const body = mutate(Buffer.from(m[3].replace(/\s+/g, ''), 'base64'), ms);
      return Buffer.from(`${m[1]}${body.toString('base64')}\n${m[4]}`);
    }));
    extra.push(fc.tuple(fc.nat(seeds.length - 1), fc.jsonValue({ maxDepth: 2 }), fc.nat()).map(([i, v, k]) => {
      const m = /^(-----BEGIN ENCRYPTED [A-Z ]+-----\n)([\s\S]*?)(-----END [A-Z ]+-----\n?)$/.exec(seeds[i].toString());
      if (!m) return seeds[i];
      const doc = replaceDeep(JSON.parse(Buffer.from(m[2].replace(/\s+/g, ''), 'base64').toString()), v, k);
      return Buffer.from(`${m[1]}${Buffer.from(JSON.stringify(doc)).toString('base64')}\n${m[3]}`);
    }));
  }
  if (isTar) extra.push(hostileArchiveArb, hostileArchiveArb);
  if (target === 'dump' && seeds.length) {
    // Line-level edits: a field replaced by an interesting token.
    const tokens = ['', '-', '0', '99999999999999999999', '4294967296', '-1', '/', '/..', '/a/../b', '\\x00', '\\', '=', '@0', 'x'.repeat(5000), '0'.repeat(70), '@120000', '%s%n'];
    extra.push(fc.tuple(fc.nat(seeds.length - 1), fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat(tokens.length - 1)), { minLength: 1, maxLength: 4 })).map(([i, edits]) => {
      const lines = seeds[i].toString('latin1').split('\n');
      for (const [l, f, t] of edits) {
        const li = l % lines.length;
        const parts = lines[li].split(' ');
        parts[f % parts.length] = tokens[t];
        lines[li] = parts.join(' ');
      }
      return Buffer.from(lines.join('\n'), 'latin1');
    }));
    // One numeric field (size, mode, nlink, uid, gid, rdev, mtime) of one line set to a boundary or another file type.
    const numbers = ['0', '1', '4294967295', '4294967296', '18446744073709551615', '9007199254740993', '40755', '100644', '120777', '20644', '60644', '10644', '140755',
      '170000', '0.0', '1.999999999', '-1.5', '4096', '5000', '5001', '65535'];
    extra.push(fc.tuple(fc.nat(seeds.length - 1), fc.nat(), fc.integer({ min: 1, max: 7 }), fc.nat(numbers.length - 1)).map(([i, l, f, n]) => {
      const lines = seeds[i].toString('latin1').split('\n');
      const li = l % Math.max(1, lines.length - 1);
      const parts = lines[li].split(' ');
      if (parts.length > f) parts[f] = numbers[n];
      lines[li] = parts.join(' ');
      return Buffer.from(lines.join('\n'), 'latin1');
    }));
  }
  return fc.oneof({ weight: 1, arbitrary: random }, { weight: 6, arbitrary: mutated }, ...extra.map((arbitrary) => ({ weight: 2, arbitrary })));
}

async function main(): Promise<void> {
  const [target, seedArg, runsArg, seedsDir, progressFile, findingsDir] = process.argv.slice(2) as [FuzzTarget, string, string, string, string, string];
  const seeds = await loadSeeds(target, seedsDir);
  let allowed: string | undefined;
  if (target === 'registry') registry = await startHostileRegistry();
  if (target === 'import' || target === 'registry') {
    // Inside the campaign's work dir (next to the seeds), which the parent removes even if this child dies.
    const dir = fs.mkdtempSync(join(seedsDir, '..', 'import-'));
    importState = { dir, store: await Store.open(join(dir, 'store')), input: join(dir, 'input.tar') };
    allowed = dir;
  }
  guardFs(allowed);
  // The guard must reach modules that imported fs functions by name: probe through cowshed's own atomic write.
  try { writeFileAtomic(join(tmpdir(), `cowshed-fuzz-guard-probe-${process.pid}`), 'x'); } catch { /* refused, as it should be */ }
  const probe = writes.splice(0);
  if (probe.length === 0) throw new Error(`fuzz guard: a write outside the allowed directory went unnoticed (${probe.join(', ')})`);
  const findings: Finding[] = [];
  const seen = new Set<string>();
  let executions = 0;
  let accepted = 0;
  const refused = new Map<string, number>();
  const checkStore = async (input: Buffer): Promise<void> => {
    const r = await fsck(importState!.store);
    if (r.problems.length) record('fsck', `fsck after imports: ${r.problems.map((p) => p.message).join('; ')}`, input);
  };
  const record = (kind: string, message: string, input: Buffer): void => {
    const key = `${kind}:${message.replace(/\d+/g, 'N').slice(0, 120)}`;
    if (seen.has(key)) return;
    seen.add(key);
    const file = join(findingsDir, `${target}-${findings.length}.bin`);
    realWriteFileSync(file, input);
    findings.push({ kind, message: message.split('\n')[0].slice(0, 300), input: file });
  };

  await fc.assert(fc.asyncProperty(inputArb(target, seeds), fc.nat(), async (input, aux) => {
    realWriteFileSync(progressFile, input);
    executions++;
    const rssBefore = process.memoryUsage().rss / 1024;
    const peakBefore = process.resourceUsage().maxRSS;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        execute(target, input, aux),
        new Promise((_r, reject) => { timer = setTimeout(() => reject(new HangError()), PER_INPUT_TIMEOUT_MS); }),
      ]);
      accepted++;
    } catch (e) {
      if (isCowshedError(e)) refused.set(e.code, (refused.get(e.code) ?? 0) + 1);
      if (e instanceof HangError) record('hang', `no result within ${PER_INPUT_TIMEOUT_MS} ms`, input);
      else if (!isCowshedError(e)) record('crash', `${(e as Error)?.name ?? typeof e}: ${(e as Error)?.message ?? String(e)}`, input);
    } finally {
      clearTimeout(timer);
    }
    // Peak RSS reached during this input, above what the process held when it started.
    const peak = process.resourceUsage().maxRSS;
    if (peak > peakBefore && peak - rssBefore > RSS_BUDGET_KB) {
      record('memory', `peak RSS grew by ${Math.round((peak - rssBefore) / 1024)} MB on a ${input.length}-byte input`, input);
    }
    if (writes.length) record('write', `wrote to the file system: ${writes.splice(0).join(', ')}`, input);
    if (importState) {
      // A refused import leaves the store as it was: nothing in tmp/, and fsck clean.
      const left = fs.readdirSync(join(importState.dir, 'store', 'tmp'));
      if (left.length) record('leftover', `tmp/ holds ${left.join(' ')} after an import`, input);
      if (executions % 250 === 0) await checkStore(input);
    }
    return true;
  }), { seed: Number(seedArg), numRuns: Number(runsArg), endOnFailure: true });
  if (importState) {
    await checkStore(Buffer.alloc(0));
    importState.store.close();
    realRmSync(importState.dir, { recursive: true, force: true });
  }
  await registry?.close();
  process.stdout.write(JSON.stringify({ target, executions, accepted, refused: Object.fromEntries(refused), seeds: seeds.length, findings }) + '\n');
}

class HangError extends Error {}

await main();
