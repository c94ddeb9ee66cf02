// Shared set-up for the trust tests: small images made from directories
// (quick to push and pull), a loopback registry, keys, policies and
// registries.d directories written to a temp dir.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshedOk } from '../helpers/cli.ts';

/** A small image `name` in `store` from a directory with a few files (some stored as objects). */
export function smallImage(store: string, dir: string, name: string, seed: string): string {
  const root = join(dir, `root-${seed}`);
  mkdirSync(join(root, 'etc'), { recursive: true });
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  writeFileSync(join(root, 'etc/motd'), `image ${seed}\n`);
  writeFileSync(join(root, 'usr/bin/tool'), Buffer.alloc(20_000, seed.charCodeAt(0)));
  writeFileSync(join(root, 'etc/data'), `${seed}\n`.repeat(500));
  cowshedOk(store, 'import', `dir:${root}`, name);
  return root;
}

export function writePolicy(file: string, policy: object): string {
  writeFileSync(file, `${JSON.stringify(policy, null, 2)}\n`);
  return file;
}

/** A registries.d directory whose default-docker section is `yaml` (lines, already indented by two). */
export function writeRegistriesD(dir: string, yaml: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'default.yaml'), `default-docker:\n${yaml}`);
  return dir;
}

export interface GpgKey { home: string; fingerprint: string; publicKeyring: string }

/** A GPG key without a passphrase in its own GNUPGHOME; the public key exported to a file. */
export function makeGpgKey(dir: string, name: string): GpgKey {
  const home = join(dir, `gnupg-${name}`);
  mkdirSync(home, { mode: 0o700, recursive: true });
  const env = { ...process.env, GNUPGHOME: home };
  execFileSync('gpg', ['--batch', '--passphrase', '', '--quick-gen-key', `${name} <${name}@example.test>`, 'ed25519', 'sign', 'never'], { env, stdio: 'ignore' });
  const colons = execFileSync('gpg', ['--batch', '--with-colons', '--fingerprint', '--list-secret-keys'], { env, encoding: 'utf8' });
  const fingerprint = colons.split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
  const publicKeyring = join(dir, `${name}.gpg`);
  writeFileSync(publicKeyring, execFileSync('gpg', ['--batch', '--export', fingerprint], { env }));
  return { home, fingerprint, publicKeyring };
}

import { spawnSync } from 'node:child_process';
import { REPO } from '../helpers/cli.ts';

export interface Run { status: number; stdout: string; stderr: string }

/** The CLI with extra environment (GNUPGHOME). */
export function cli(store: string, args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(process.execPath, [join(REPO, 'bin', 'cowshed.js'), '--store', store, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function cliOk(store: string, args: string[], env: Record<string, string> = {}): string {
  const r = cli(store, args, env);
  if (r.status !== 0) throw new Error(`cowshed ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** A failed command: non-zero, and exactly one line on stderr. */
export function oneLineFailure(r: Run): string {
  if (r.status === 0) throw new Error(`expected a failure, got success: ${r.stdout}`);
  const lines = r.stderr.trim().split('\n');
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got ${lines.length}:\n${r.stderr}`);
  return lines[0]!;
}
