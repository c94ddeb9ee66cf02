// GPG "simple signing" (containers/image signature/simple.go and
// mechanism_gpgme.go): the payload is signed as an OpenPGP message (gpg
// --sign, binary) and kept in a lookaside directory beside the registry:
// <base>/<repository path>@sha256=<hex>/signature-N. Debian's gpg does the
// cryptography, as gpgme does for podman; verification runs in a throwaway
// GNUPGHOME holding only the policy's keys.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CowshedError, errno } from '../util/errors.ts';
import { lookasideUrl } from './registries-d.ts';

const MAX_SIGNATURE = 64 << 10;
const MAX_SIGNATURES = 64;

function gpg(args: string[], input: Buffer | undefined, env: NodeJS.ProcessEnv = process.env): { status: number; stdout: Buffer; stderr: string } {
  const r = spawnSync('gpg', ['--batch', '--no-tty', ...args], { input, env, maxBuffer: 16 << 20 });
  if (r.error) {
    if (errno(r.error) === 'ENOENT') throw new CowshedError('ETOOL', 'gpg is not installed (apt-get install gpg): GPG simple signing needs it');
    throw new CowshedError('ETOOL', `gpg: ${r.error.message}`);
  }
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
}

/** Signs a payload with the secret key FINGERPRINT of $GNUPGHOME (or ~/.gnupg). */
export function gpgSign(payload: Buffer, fingerprint: string, passphraseFile?: string): Buffer {
  const args = ['--local-user', fingerprint];
  if (passphraseFile !== undefined) args.push('--pinentry-mode', 'loopback', '--passphrase-file', passphraseFile);
  const r = gpg([...args, '--sign', '--output', '-'], payload);
  if (r.status !== 0 || r.stdout.length === 0) {
    const why = r.stderr.trim().split('\n').filter((l) => l.startsWith('gpg:')).pop() ?? `exit ${r.status}`;
    if (/bad passphrase|no passphrase/i.test(r.stderr)) throw new CowshedError('EINVAL', `signing with GPG key ${fingerprint}: wrong passphrase`, { exitCode: 1 });
    throw new CowshedError('ETOOL', `signing with GPG key ${fingerprint} failed: ${why.replace(/^gpg: /, '')}`);
  }
  return r.stdout;
}

/** A verifier holding a set of trusted keys (keyrings, binary or armored). Close it when done. */
export class GpgVerifier {
  private readonly home: string;
  readonly fingerprints: string[];

  constructor(keyrings: Buffer[], what: string) {
    this.home = mkdtempSync(join(tmpdir(), 'cowshed-gpg-'));
    const env = { ...process.env, GNUPGHOME: this.home };
    try {
      for (const k of keyrings) {
        const r = gpg(['--import'], k, env);
        if (r.status !== 0 && !/imported|unchanged/.test(r.stderr)) throw new CowshedError('EFORMAT', `${what}: no OpenPGP public key could be imported`);
      }
      const list = gpg(['--with-colons', '--fingerprint', '--list-keys'], undefined, env).stdout.toString('utf8');
      this.fingerprints = [];
      let primary = false;
      for (const line of list.split('\n')) {
        const f = line.split(':');
        if (f[0] === 'pub') primary = true;
        else if (f[0] === 'sub') primary = false;
        else if (f[0] === 'fpr' && primary) this.fingerprints.push(f[9]!.toUpperCase());
      }
      if (this.fingerprints.length === 0) throw new CowshedError('EFORMAT', `${what}: contains no OpenPGP public key`);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The signed content and the signer's primary key fingerprint, or the reason it does not verify. */
  verify(signature: Buffer): { ok: true; content: Buffer; fingerprint: string } | { ok: false; why: string } {
    const r = gpg(['--trust-model', 'always', '--status-fd', '2', '--decrypt'], signature, { ...process.env, GNUPGHOME: this.home });
    const status = r.stderr.split('\n').filter((l) => l.startsWith('[GNUPG:] ')).map((l) => l.slice(9).split(' '));
    const sigs = status.filter((s) => s[0] === 'NEWSIG').length;
    const valid = status.filter((s) => s[0] === 'VALIDSIG');
    if (status.some((s) => s[0] === 'NO_PUBKEY' || s[0] === 'ERRSIG')) return { ok: false, why: 'signed by a key the policy does not trust' };
    if (status.some((s) => s[0] === 'BADSIG')) return { ok: false, why: 'the OpenPGP signature is bad (content changed)' };
    if (r.status !== 0 || valid.length !== 1 || sigs > 1) return { ok: false, why: status.length === 0 ? 'not an OpenPGP signed message' : 'not exactly one valid OpenPGP signature' };
    const v = valid[0]!;
    const primary = (v[10] ?? v[1] ?? '').toUpperCase();
    if (!this.fingerprints.includes(primary)) return { ok: false, why: `signed by key ${primary}, which the policy does not trust` };
    return { ok: true, content: r.stdout, fingerprint: primary };
  }

  close(): void {
    rmSync(this.home, { recursive: true, force: true });
  }
}

/** Reads signature-1, signature-2, … from a lookaside base (file:, http:, https:) until one is missing. */
export async function readLookaside(base: URL, manifestDigest: string): Promise<Array<{ bytes: Buffer; source: string }>> {
  const out: Array<{ bytes: Buffer; source: string }> = [];
  for (let n = 1; n <= MAX_SIGNATURES; n++) {
    const u = lookasideUrl(base, manifestDigest, n);
    if (u.protocol === 'file:') {
      let bytes: Buffer;
      try { bytes = readFileSync(fileURLToPath(u)); } catch (e) {
        if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') break;
        throw new CowshedError('EINVAL', `lookaside ${u.pathname}: ${(e as Error).message}`);
      }
      if (bytes.length > MAX_SIGNATURE) throw new CowshedError('EFORMAT', `${u.pathname}: too big for a signature`);
      out.push({ bytes, source: u.pathname });
    } else if (u.protocol === 'http:' || u.protocol === 'https:') {
      const res = await fetch(u, { signal: AbortSignal.timeout(60_000) });
      if (res.status === 404) { await res.body?.cancel(); break; }
      if (!res.ok) throw new CowshedError('ETOOL', `lookaside ${u}: HTTP ${res.status}`);
      const bytes = Buffer.from(await res.arrayBuffer());
      if (bytes.length > MAX_SIGNATURE) throw new CowshedError('EFORMAT', `${u}: too big for a signature`);
      out.push({ bytes, source: u.toString() });
    } else {
      throw new CowshedError('EUNSUPPORTED', `lookaside ${u}: only file:, http: and https: URLs are read`);
    }
  }
  return out;
}

/** Writes a signature as the next free signature-N under a file: lookaside (staging) base; returns its path. */
export function writeLookaside(base: URL, manifestDigest: string, signature: Buffer): string {
  if (base.protocol !== 'file:') throw new CowshedError('EUNSUPPORTED', `cannot write signatures to ${base}: set lookaside-staging to a file:// URL in registries.d`);
  for (let n = 1; n <= MAX_SIGNATURES; n++) {
    const path = fileURLToPath(lookasideUrl(base, manifestDigest, n));
    mkdirSync(dirname(path), { recursive: true });
    try { writeFileSync(path, signature, { flag: 'wx', mode: 0o644 }); return path; } catch (e) { if (errno(e) !== 'EEXIST') throw e; }
  }
  throw new CowshedError('EINVAL', `${fileURLToPath(base)}: already ${MAX_SIGNATURES} signatures for ${manifestDigest}`);
}
