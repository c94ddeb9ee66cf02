// The trust front door: where the policy and registries.d come from, the
// pull admission (signatures fetched and checked before anything is
// stored), signing after a push, and the signatures kept with an image.

import { readFileSync } from 'node:fs';
import { CowshedError, errno } from '../util/errors.ts';
import type { Db } from '../store/db.ts';
import type { Store } from '../store/store.ts';
import type { RegistryClient, TransportOptions } from '../registry/client.ts';
import type { RegistrySource } from '../registry/pull.ts';
import { loadPolicy, policyPath, type Policy } from './policy.ts';
import { loadRegistriesD, lookasideBase, SYSTEM_REGISTRIES_D, useSigstoreAttachments, type RegistriesD } from './registries-d.ts';
import { parseDockerRef, formatDockerRef, type DockerRef } from './reference.ts';
import { evaluatePolicy, signatureKindsNeeded, type Decision, type SignatureSet, type VerifiedSignature } from './evaluate.ts';
import { readAttachments, unreadableReferrers, signPayload, writeAttachment, SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE } from './sigstore.ts';
import { gpgSign, readLookaside, writeLookaside } from './gpg.ts';
import { decryptPrivateKey, readPassphrase } from './keys.ts';
import { makePayload, SIGSTORE_TYPE, SIMPLE_SIGNING_TYPE } from './payload.ts';

export interface TrustOptions {
  /** --signature-policy FILE */
  signaturePolicy?: string;
  /** --registries.d DIR */
  registriesD?: string;
}

/** The policy in force: --signature-policy, else the user's, else the system's; undefined when there is none at all. */
export function currentPolicy(opts: TrustOptions): Policy | undefined {
  const file = policyPath(opts.signaturePolicy);
  return file === undefined ? undefined : loadPolicy(file);
}

export function currentRegistriesD(opts: TrustOptions): RegistriesD {
  return loadRegistriesD(opts.registriesD ?? SYSTEM_REGISTRIES_D);
}

// ---------------------------------------------------------------- stored signatures

const TABLE = `CREATE TABLE IF NOT EXISTS signatures (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  kind TEXT NOT NULL,          -- sigstore | gpg
  identity TEXT NOT NULL,      -- the docker-reference it claims
  key TEXT NOT NULL,           -- key file or GPG fingerprint that verified it at pull
  payload BLOB NOT NULL,       -- sigstore: the payload blob; gpg: the signed content
  signature TEXT NOT NULL,     -- sigstore: base64 signature; gpg: base64 OpenPGP message
  source TEXT NOT NULL,        -- where it was found
  composefs TEXT,              -- the composefs digest it signs, if any
  verified INTEGER NOT NULL,   -- unix ms
  PRIMARY KEY (image_id, kind, signature)
)`;

function hasTable(db: Db): boolean {
  return db.get("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'signatures'") !== undefined;
}

/** Inside the import's transaction: keep the verified signatures with the image. */
export function recordSignatures(db: Db, imageId: string, sigs: VerifiedSignature[]): void {
  if (sigs.length === 0) return;
  db.sql.exec(TABLE);
  for (const s of sigs) {
    db.run(
      'INSERT OR IGNORE INTO signatures (image_id, kind, identity, key, payload, signature, source, composefs, verified) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      imageId, s.kind, s.identity, s.key, s.payload, s.signature, s.source, s.composefs ?? null, Date.now(),
    );
  }
}

export interface StoredSignature { kind: 'sigstore' | 'gpg'; identity: string; key: string; source: string; composefs?: string; verified: string; payload: Buffer; signature: string }

export function storedSignatures(db: Db, imageId: string): StoredSignature[] {
  if (!hasTable(db)) return [];
  return db.all<{ kind: 'sigstore' | 'gpg'; identity: string; key: string; source: string; composefs: string | null; verified: number; payload: Uint8Array; signature: string }>(
    'SELECT kind, identity, key, source, composefs, verified, payload, signature FROM signatures WHERE image_id = ? ORDER BY rowid', imageId,
  ).map((r) => ({
    kind: r.kind, identity: r.identity, key: r.key, source: r.source, ...(r.composefs ? { composefs: r.composefs } : {}),
    verified: new Date(r.verified).toISOString(), payload: Buffer.from(r.payload), signature: r.signature,
  }));
}

/** What `inspect` shows: the signatures without their bytes. */
export function signaturesForInspect(db: Db, imageId: string): Array<Omit<StoredSignature, 'payload' | 'signature'>> {
  return storedSignatures(db, imageId).map(({ payload: _p, signature: _s, ...rest }) => rest);
}

/** The stored signatures as a set to evaluate a policy against (mount --verify, run --verify). */
export function storedSignatureSet(db: Db, imageId: string): SignatureSet {
  const rows = storedSignatures(db, imageId);
  return {
    sigstore: rows.filter((r) => r.kind === 'sigstore').map((r) => ({
      mediaType: SIMPLESIGNING_MEDIA_TYPE, payload: r.payload, annotations: { [SIGNATURE_ANNOTATION]: r.signature }, source: `the store's copy of ${r.source}`,
    })),
    gpg: rows.filter((r) => r.kind === 'gpg').map((r) => ({ bytes: Buffer.from(r.signature, 'base64'), source: `the store's copy of ${r.source}` })),
    attachmentsEnabled: true,
    noneHint: 'the store kept no signature for this image: pull it again under a policy that verifies signatures',
  };
}

// ---------------------------------------------------------------- pull

/** Collects the signatures the policy needs for an image in a registry. */
export async function registrySignatures(
  client: RegistryClient, ref: DockerRef, manifestDigest: string, regd: RegistriesD, need: { sigstore: boolean; gpg: boolean },
): Promise<SignatureSet> {
  const enabled = useSigstoreAttachments(regd, ref);
  const set: SignatureSet = { sigstore: [], gpg: [], attachmentsEnabled: enabled };
  if (need.sigstore && enabled) set.sigstore = await readAttachments(client, ref.path, manifestDigest);
  if (need.gpg) set.gpg = (await readLookaside(lookasideBase(regd, ref, false), manifestDigest));
  if ((need.sigstore && set.sigstore.length === 0) || (need.gpg && set.gpg.length === 0)) {
    set.unreadable = await unreadableReferrers(client, ref.path, manifestDigest);
  }
  return set;
}

export interface Admission {
  decision?: Decision;
  /** For the import: refuse a composefs image other than the one signed; keep the signatures in the same transaction. */
  beforeCommit: (composefs: string) => void;
  inTransaction: (db: Db, imageId: string) => void;
  /** A signature names the composefs digest: the image is built as one flat composefs image (never stacked). */
  singleImage?: boolean;
}

/**
 * The policy check of a pull, once the manifest and config are verified and
 * before any layer is read or anything stored. Throws (one line) when the
 * policy refuses the image.
 */
export async function admitPull(src: RegistrySource, opts: TrustOptions): Promise<Admission> {
  const policy = currentPolicy(opts);
  const none: Admission = { beforeCommit() {}, inTransaction() {} };
  if (!policy) return none;
  const r = src.registryRef;
  // The image's identity as the user named it: by tag, or by digest.
  const ref: DockerRef = { name: `${r.registry}/${r.repository}`, host: r.registry, path: r.repository, ...(r.tag !== undefined ? { tag: r.tag } : {}), ...(r.digest !== undefined ? { digest: r.digest } : {}) };
  const need = signatureKindsNeeded(policy, ref);
  const regd = currentRegistriesD(opts);
  const sigs = need.sigstore || need.gpg ? await registrySignatures(src.client, ref, src.manifest.digest, regd, need) : { sigstore: [], gpg: [], attachmentsEnabled: useSigstoreAttachments(regd, ref) };
  const decision = evaluatePolicy(policy, ref, src.manifest.digest, sigs, opts.registriesD ?? SYSTEM_REGISTRIES_D);
  const signed = decision.accepted.filter((s) => s.composefs !== undefined);
  return {
    decision,
    singleImage: signed.length > 0,
    beforeCommit(composefs) {
      for (const s of signed) {
        if (s.composefs !== composefs) {
          throw new CowshedError('ETRUST', `${formatDockerRef(ref)}: the signature (${s.source}) names composefs image ${s.composefs}, but the layers build ${composefs}: refused, nothing stored`);
        }
      }
    },
    inTransaction(db, imageId) { recordSignatures(db, imageId, decision.accepted); },
  };
}

// ---------------------------------------------------------------- signing

export interface SignOptions extends TrustOptions {
  /** --sign-by-sigstore-private-key */
  sigstoreKey?: string;
  /** --sign-passphrase-file */
  passphraseFile?: string;
  /** --sign-by (GPG fingerprint) */
  gpgFingerprint?: string;
  /** --sign-identity: the docker-reference to sign (default: the pushed reference). */
  identity?: string;
}

export interface SignResult { kind: 'sigstore' | 'gpg'; where: string; identity: string }

export function wantsSignature(o: SignOptions): boolean {
  return o.sigstoreKey !== undefined || o.gpgFingerprint !== undefined;
}

function readPassphraseFile(file: string | undefined, key: string): Buffer {
  if (file === undefined) {
    const env = process.env.COSIGN_PASSWORD;
    if (env !== undefined) return Buffer.from(env);
    throw new CowshedError('EINVAL', `${key} is encrypted: give its passphrase with --sign-passphrase-file FILE`);
  }
  try { return readPassphrase(readFileSync(file)); } catch (e) {
    throw new CowshedError(errno(e) === 'ENOENT' ? 'ENOENT' : 'EINVAL', `passphrase file ${file}: ${(e as Error).message.replace(/^[A-Z]+: /, '')}`);
  }
}

/** Loads the signing key before anything is pushed: a wrong passphrase fails early. */
export function prepareSigning(o: SignOptions): { sigstore?: import('node:crypto').KeyObject } {
  if (o.sigstoreKey !== undefined && o.gpgFingerprint !== undefined) throw new CowshedError('EINVAL', 'sign with --sign-by-sigstore-private-key or --sign-by, not both');
  if (o.sigstoreKey === undefined) return {};
  let text: string;
  try { text = readFileSync(o.sigstoreKey, 'utf8'); } catch (e) {
    throw new CowshedError(errno(e) === 'ENOENT' ? 'ENOENT' : 'EINVAL', `private key ${o.sigstoreKey}: ${(e as Error).message.replace(/^[A-Z]+: /, '')}`);
  }
  return { sigstore: decryptPrivateKey(text, readPassphraseFile(o.passphraseFile, o.sigstoreKey), o.sigstoreKey) };
}

/**
 * Signs the manifest `manifestDigest` pushed to `pushedRef`: sigstore into
 * the registry (sha256-<hex>.sig), GPG into the lookaside staging directory.
 * `composefs` (the image's composefs digest) goes into the payload's optional part.
 */
export async function signManifest(
  client: RegistryClient, pushedRef: string, manifestDigest: string, composefs: string | undefined, o: SignOptions,
  prepared: ReturnType<typeof prepareSigning> = prepareSigning(o),
): Promise<SignResult> {
  const ref = parseDockerRef(pushedRef);
  let identity = o.identity ?? formatDockerRef({ ...ref, digest: undefined });
  if (o.identity !== undefined) {
    let ok = false;
    try { ok = parseDockerRef(o.identity).tag !== undefined || parseDockerRef(o.identity).digest !== undefined; } catch { ok = false; }
    if (!ok) throw new CowshedError('EINVAL', `--sign-identity ${JSON.stringify(o.identity)} is not a reference with a tag or digest`);
    identity = formatDockerRef(parseDockerRef(o.identity));
  } else if (ref.tag === undefined) {
    throw new CowshedError('EINVAL', `${pushedRef}: pushed by digest; give the identity to sign with --sign-identity REF:TAG`);
  }
  if (prepared.sigstore) {
    const payload = makePayload(SIGSTORE_TYPE, identity, manifestDigest, composefs);
    const tag = await writeAttachment(client, ref.path, manifestDigest, payload, signPayload(prepared.sigstore, payload));
    return { kind: 'sigstore', where: `${ref.name}:${tag}`, identity };
  }
  const payload = makePayload(SIMPLE_SIGNING_TYPE, identity, manifestDigest, composefs);
  const sig = gpgSign(payload, o.gpgFingerprint!, o.passphraseFile);
  const path = writeLookaside(lookasideBase(currentRegistriesD(o), ref, true), manifestDigest, sig);
  return { kind: 'gpg', where: path, identity };
}

/** `sign IMAGE REF`: sign an image already in a registry (its manifest digest read from there). */
export async function signPushed(store: Store | undefined, image: string | undefined, ref: string, o: SignOptions & TransportOptions & { creds?: string }): Promise<SignResult & { digest: string }> {
  const prepared = prepareSigning(o);
  const { RegistryClient, parseRegistryRef } = await import('../registry/client.ts');
  const r = parseRegistryRef(ref);
  const client = RegistryClient.forRef(r, { tlsVerify: o.tlsVerify, certDir: o.certDir, registriesConf: o.registriesConf, creds: o.creds });
  const head = await client.headManifest(r.repository, r.digest ?? r.tag!);
  if (!head) throw new CowshedError('ENOENT', `${ref}: no such image in the registry`);
  const { sha256Digest } = await import('../oci/digest.ts');
  const got = await client.getManifest(r.repository, r.digest ?? r.tag!, 4 << 20);
  const digest = sha256Digest(got.bytes);
  if (r.digest !== undefined && digest !== r.digest) throw new CowshedError('EDIGEST', `${ref}: the registry served manifest ${digest}`);
  let composefs: string | undefined;
  if (store && image !== undefined) {
    const pushed = store.inspectImage(image);
    // The composefs digest is only claimed for the image the registry holds: same config, same diff IDs.
    const m = JSON.parse(got.bytes.toString('utf8')) as { config?: { digest?: string } };
    if (m.config?.digest !== pushed.configDigest) throw new CowshedError('EINVAL', `${ref} is not ${image}: the registry's manifest ${digest} has config ${m.config?.digest}, the image ${pushed.configDigest}`);
    composefs = await store.flatComposefs(image);
  }
  const res = await signManifest(client, ref, digest, composefs, o, prepared);
  return { ...res, digest };
}
