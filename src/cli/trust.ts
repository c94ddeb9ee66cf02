// Signatures and the trust policy: generate-sigstore-key, sign, image trust
// show|set, and the signing / verifying options of push, pull, mount, run
// (names as skopeo and podman have them). The work is in src/trust/.
import { Option, type Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import type { Store } from '../store/store.ts';
import { CowshedError, errno } from '../util/errors.ts';
import type { TrustOptions, SignOptions } from '../trust/trust.ts';
import type { RegistrySource } from '../registry/pull.ts';
import type { TransportOptions } from '../registry/client.ts';
import { tlsVerifyOption } from './registry.ts';
import { policyOption, registriesDOption } from './global-options.ts';
import type { ImportOptions } from '../store/import.ts';

type WithStore = <T>(fn: (s: Store) => Promise<T> | T) => Promise<T>;

const trustLib = () => import('../trust/trust.ts');

interface TrustFlags { signaturePolicy?: string; 'registries.d'?: string; registriesD?: string }

/** The policy and registries.d of a command: its own options first, then the global ones. */
export function trustOptions(program: Command, o: object): TrustOptions {
  const g = program.opts<TrustFlags>();
  const c = o as TrustFlags;
  return {
    signaturePolicy: c.signaturePolicy ?? g.signaturePolicy,
    registriesD: c['registries.d'] ?? c.registriesD ?? g['registries.d'] ?? g.registriesD,
  };
}

function addSigningOptions(cmd: Command): Command {
  return cmd
    .option('--sign-by-sigstore-private-key <file>', 'sign with this sigstore (cosign) private key: signature at the sha256-<hex>.sig tag')
    .option('--sign-passphrase-file <file>', 'passphrase of the signing key')
    .option('--sign-by <fingerprint>', 'sign with this GPG key (simple signing into the lookaside of registries.d)')
    .option('--sign-identity <ref>', 'the identity to sign (default: the reference pushed to)');
}

interface SignFlags { signBySigstorePrivateKey?: string; signPassphraseFile?: string; signBy?: string; signIdentity?: string }

function signOptions(program: Command, o: object): SignOptions {
  const f = o as SignFlags;
  return {
    ...trustOptions(program, o),
    sigstoreKey: f.signBySigstorePrivateKey, passphraseFile: f.signPassphraseFile, gpgFingerprint: f.signBy, identity: f.signIdentity,
  };
}

/** pull: the admission hook for src/registry/pull.ts (policy enforced before anything is stored). */
export function pullAdmission(program: Command, o: object): (src: RegistrySource) => Promise<Pick<ImportOptions, 'beforeCommit' | 'inTransaction' | 'singleImage'>> {
  const t = trustOptions(program, o);
  return async (src) => {
    const a = await (await trustLib()).admitPull(src, t);
    return { beforeCommit: a.beforeCommit, inTransaction: a.inTransaction, singleImage: a.singleImage };
  };
}

/**
 * push: when asked to sign, the key is opened now (a wrong passphrase fails
 * before anything is uploaded); the returned function signs the pushed manifest.
 */
export async function pushSigner(
  program: Command, o: object, ref: string, client: TransportOptions & { creds?: string },
): Promise<((store: Store, image: string, digest: string) => Promise<string>) | undefined> {
  const so = signOptions(program, o);
  // No signing flag (the usual push): the trust library (a dozen modules) is not loaded at all.
  if (so.sigstoreKey === undefined && so.gpgFingerprint === undefined) return undefined;
  const lib = await trustLib();
  if (!lib.wantsSignature(so)) return undefined;
  const prepared = lib.prepareSigning(so);
  return async (store, image, digest) => {
    const { RegistryClient, parseRegistryRef } = await import('../registry/client.ts');
    const c = RegistryClient.forRef(parseRegistryRef(ref), client);
    const r = await lib.signManifest(c, ref, digest, await store.flatComposefs(image), so, prepared);
    return `signed ${r.identity} (${r.kind}): ${r.where}`;
  };
}

/**
 * mount --verify, run --verify: the whole chain under the current policy.
 * Returns the id verified (use it, not the name, which another process may
 * move meanwhile, for what follows) and the line that says what was checked
 * (empty under --quiet). The caller prints that line once its own step has
 * worked too, so that a failure after the check is still one line.
 */
export async function verifyForUse(program: Command, s: Store, image: string, o: object): Promise<{ image: string; summary: string }> {
  const { verifyChain } = await import('../trust/chain.ts');
  const r = await verifyChain(s, image, trustOptions(program, o));
  if (program.opts<{ quiet?: boolean }>().quiet) return { image: r.image, summary: '' };
  const sig = r.policy
    ? `${r.policy.accepted.length ? `${r.policy.accepted.length} signature${r.policy.accepted.length > 1 ? 's' : ''} accepted` : 'no signature required'} by ${r.policy.policyFile} (${r.policy.scope})`
    : 'no signature policy';
  const summary = `verified ${r.name ?? image}: ${sig}; manifest, config, ${r.layers} layer${r.layers === 1 ? '' : 's'}, ${r.objects} objects, composefs ${r.composefs.slice(0, 12)}${r.signedComposefs ? ' (as signed)' : ''}; ${r.enforcement}\n`;
  return { image: r.image, summary };
}

/** inspect: the image, with the signatures verified at its pull (when there are any). */
export async function inspectWithSignatures(s: Store, name: string): Promise<object> {
  const details = s.inspectImage(name);
  const signatures = (await trustLib()).signaturesForInspect(s.db, details.id);
  return signatures.length ? { ...details, signatures } : details;
}

function readPassphraseForNewKey(file: string | undefined): Buffer {
  if (file !== undefined) {
    try {
      const b = readFileSync(file);
      const nl = b.indexOf(10);
      return nl >= 0 ? b.subarray(0, nl) : b;
    } catch (e) {
      throw new CowshedError(errno(e) === 'ENOENT' ? 'ENOENT' : 'EINVAL', `passphrase file ${file}: ${(e as Error).message.replace(/^[A-Z]+: /, '')}`);
    }
  }
  if (process.env.COSIGN_PASSWORD !== undefined) return Buffer.from(process.env.COSIGN_PASSWORD);
  throw new CowshedError('EINVAL', 'give the passphrase that encrypts the private key with --passphrase-file FILE (or COSIGN_PASSWORD)');
}

export function trustCommands(program: Command, withStore: WithStore, say: (s: string) => void): void {
  const find = (name: string): Command | undefined => program.commands.find((c) => c.name() === name);
  for (const name of ['push', 'pull', 'mount', 'run']) {
    const cmd = find(name);
    if (!cmd) continue;
    cmd.addOption(policyOption()).addOption(registriesDOption());
    if (name === 'push') addSigningOptions(cmd);
  }

  program.command('generate-sigstore-key')
    .description('make a sigstore (cosign) key pair: PREFIX.private (encrypted) and PREFIX.pub')
    .requiredOption('--output-prefix <prefix>', 'write PREFIX.private and PREFIX.pub')
    .option('--passphrase-file <file>', 'file whose first line is the passphrase')
    .action(async (o: { outputPrefix: string; passphraseFile?: string }) => {
      const { generateSigstoreKey } = await import('../trust/keys.ts');
      const { writeFileSync } = await import('node:fs');
      const priv = `${o.outputPrefix}.private`;
      const pub = `${o.outputPrefix}.pub`;
      for (const f of [priv, pub]) if (existsSync(f)) throw new CowshedError('EEXIST', `${f} already exists: not overwriting a key`);
      const k = generateSigstoreKey(readPassphraseForNewKey(o.passphraseFile));
      writeFileSync(priv, k.privatePem, { mode: 0o600, flag: 'wx' });
      writeFileSync(pub, k.publicPem, { mode: 0o644, flag: 'wx' });
      say(`Key written to "${priv}" and "${pub}"`);
    });

  addSigningOptions(program.command('sign')
    .description('sign an image already pushed to a registry: IMAGE (in the store) as pushed to REF')
    .argument('<image>', 'the image in the store (its composefs digest goes into the signature)')
    .argument('<ref>', 'REGISTRY/REPO:TAG where it was pushed'))
    .addOption(tlsVerifyOption())
    .option('--cert-dir <dir>', 'certificates for the registry (*.crt CAs, NAME.cert + NAME.key), instead of certs.d')
    .option('--creds <user:password>', 'credentials for the registry')
    .addOption(policyOption()).addOption(registriesDOption())
    .action(async (image: string, ref: string, o: SignFlags & { tlsVerify?: boolean; certDir?: string; creds?: string }) => withStore(async (s) => {
      const so = signOptions(program, o);
      const lib = await trustLib();
      if (!lib.wantsSignature(so)) throw new CowshedError('EINVAL', 'sign needs --sign-by-sigstore-private-key KEY or --sign-by FINGERPRINT');
      const r = await lib.signPushed(s, image, ref, { ...so, tlsVerify: o.tlsVerify, certDir: o.certDir ?? program.opts<{ certDir?: string }>().certDir, registriesConf: program.opts<{ registriesConf?: string }>().registriesConf, creds: o.creds });
      if (!program.opts<{ quiet?: boolean }>().quiet) process.stderr.write(`signed ${r.identity} (${r.kind}): ${r.where}\n`);
      say(r.digest);
    }));

  const image = find('image') ?? program.command('image').description('image subcommands');
  const trust = image.command('trust').description('show or edit the signature policy (containers-policy.json), as podman image trust');
  trust.command('show')
    .description('show the policy: one line per scope')
    .option('--json', 'JSON output')
    .option('--raw', 'print the policy file as it is')
    .addOption(policyOption())
    .action(async (o: { json?: boolean; raw?: boolean; signaturePolicy?: string }) => {
      const { showPolicy } = await import('../trust/trust-edit.ts');
      const t = trustOptions(program, o);
      const r = showPolicy(t.signaturePolicy);
      if (o.raw) return say(readFileSync(r.file, 'utf8'));
      if (o.json) return say(JSON.stringify(r.rows, null, 2));
      const { table } = await import('./output.ts');
      say(table(['TRANSPORT:SCOPE', 'TYPE', 'KEYS', 'IDENTITY'], r.rows.map((x) => [x.scope, x.type, x.keys, x.identity])));
    });
  trust.command('set')
    .description('set the requirement for a scope: REGISTRY[/REPOSITORY], or "default"')
    .argument('<scope>')
    .addOption(new Option('-t, --type <type>', 'accept (insecureAcceptAnything), reject, signedBy (GPG keys) or sigstoreSigned').choices(['accept', 'insecureAcceptAnything', 'reject', 'signedBy', 'sigstoreSigned']).makeOptionMandatory())
    .option('-f, --pubkeysfile <file>', 'a key file (GPG keyring for signedBy, PEM public key for sigstoreSigned); repeat for more', (v: string, prev: string[] = []) => [...prev, v])
    .addOption(policyOption())
    .action(async (scope: string, o: { type: string; pubkeysfile?: string[]; signaturePolicy?: string }) => {
      const { setPolicy } = await import('../trust/trust-edit.ts');
      const t = trustOptions(program, o);
      const file = setPolicy(t.signaturePolicy, scope, o.type, o.pubkeysfile ?? []);
      if (!program.opts<{ quiet?: boolean }>().quiet) process.stderr.write(`${file}: ${scope} set to ${o.type}\n`);
    });
}
