// Deciding whether an image is accepted: the policy's requirements for the
// image's scope, against the signatures found (registry attachments, the
// lookaside, or those kept in the store). Mirrors containers/image's
// policy_eval*.go: every requirement must accept the image; a signature
// requirement accepts it when at least one signature passes it: the
// cryptography first, then the payload, its manifest digest and identity.

import { readFileSync, type PathLike } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { CowshedError } from '../util/errors.ts';
import { parsePayload, SIGSTORE_TYPE, SIMPLE_SIGNING_TYPE, type Payload } from './payload.ts';
import { describeRequirement, identityMatches, requirementsFor, type KeySource, type Policy, type Requirement, type SignedIdentity } from './policy.ts';
import { formatDockerRef, type DockerRef } from './reference.ts';
import { readPublicKeys } from './keys.ts';
import { SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, verifyPayload, type SigstoreAttachment } from './sigstore.ts';
import { GpgVerifier } from './gpg.ts';

export interface GpgSignatureBlob { bytes: Buffer; source: string }

export interface SignatureSet {
  sigstore: SigstoreAttachment[];
  gpg: GpgSignatureBlob[];
  /** Whether registries.d lets cowshed read sigstore attachments for this image (false: they were not looked for). */
  attachmentsEnabled: boolean;
  /** Signatures found in a format cowshed does not read (a cosign v3 bundle referrer). */
  unreadable?: string;
  /** Why none were found, when not from a registry (the store's copies). */
  noneHint?: string;
}

export interface VerifiedSignature {
  kind: 'sigstore' | 'gpg';
  /** The identity the signature claims (docker-reference). */
  identity: string;
  manifestDigest: string;
  composefs?: string;
  /** The key that verified it: a key file / inline key, or the GPG fingerprint. */
  key: string;
  /** What was signed and the signature, as found: sigstore payload + base64 signature; GPG: the OpenPGP message. */
  payload: Buffer;
  signature: string;
  source: string;
}

export interface Decision {
  policyFile: string;
  scope: string;
  requirements: string[];
  /** Signatures that satisfied a signature requirement. */
  accepted: VerifiedSignature[];
}

type Reason = { kind: 'crypto' | 'format' | 'digest' | 'identity'; message: string; signedIdentity?: string };

function loadKeyBytes(src: KeySource, policy: Policy, req: Requirement): Array<{ bytes: Buffer; name: string }> {
  if (src.data) return src.data.map((bytes, i) => ({ bytes, name: `inline key ${i + 1} of ${policy.file}:${req.line}` }));
  return src.paths!.map((p) => {
    try { return { bytes: readFileSync(p as PathLike), name: p }; } catch (e) {
      throw new CowshedError('EINVAL', `${policy.file}:${req.line}: key file ${p}: ${(e as Error).message.replace(/^[A-Z]+: /, '')}`);
    }
  });
}

function describeIdentityRule(r: SignedIdentity): string {
  switch (r.type) {
    case 'exactReference': return `exactReference ${r.dockerReference}`;
    case 'exactRepository': return `exactRepository ${r.dockerRepository}`;
    case 'remapIdentity': return `remapIdentity ${r.prefix} -> ${r.signedPrefix}`;
    default: return r.type;
  }
}

function checkPayload(p: Payload, manifestDigest: string, intended: DockerRef, rule: SignedIdentity): Reason | undefined {
  if (p.manifestDigest !== manifestDigest) {
    return { kind: 'digest', message: `it signs manifest ${p.manifestDigest}, not this image's ${manifestDigest}` };
  }
  if (!identityMatches(rule, intended, p.dockerReference)) {
    return { kind: 'identity', message: `it names ${p.dockerReference}`, signedIdentity: p.dockerReference };
  }
  return undefined;
}

/**
 * Evaluates the policy for the image `ref` (as pulled or named) whose
 * manifest has `manifestDigest`. Returns the decision, or throws ETRUST /
 * EFORMAT with one line saying why it is refused.
 */
export function evaluatePolicy(policy: Policy, ref: DockerRef, manifestDigest: string, sigs: SignatureSet, registriesDir?: string): Decision {
  const { scope, reqs } = requirementsFor(policy, ref);
  const image = formatDockerRef(ref);
  const at = (r: Requirement): string => `${policy.file}:${r.line} (${scope}: ${r.type})`;
  const accepted: VerifiedSignature[] = [];
  for (const req of reqs) {
    switch (req.type) {
      case 'insecureAcceptAnything':
        break;
      case 'reject':
        throw new CowshedError('ETRUST', `${image}: rejected by the signature policy ${at(req)}`);
      case 'sigstoreSigned':
      case 'signedBy': {
        const kind = req.type === 'sigstoreSigned' ? 'sigstore' : 'gpg';
        const found = kind === 'sigstore' ? sigs.sigstore.length : sigs.gpg.length;
        if (found === 0) {
          if (sigs.unreadable) {
            throw new CowshedError('ETRUST', `${image}: signed only in a format cowshed does not read: ${sigs.unreadable}; ${at(req)} needs ${kind === 'sigstore' ? 'a sigstore signature at the sha256-<hex>.sig tag' : 'a GPG simple signing signature in the lookaside'}`);
          }
          const hint = sigs.noneHint ?? (kind === 'sigstore'
            ? (sigs.attachmentsEnabled ? 'no signature at the sha256-<hex>.sig tag' : `sigstore attachments are disabled for this registry in registries.d${registriesDir ? ` (${registriesDir})` : ''}: set use-sigstore-attachments: true`)
            : 'no signature in the lookaside of registries.d');
          throw new CowshedError('ETRUST', `${image}: signatures required by ${at(req)} but none found (${hint})`);
        }
        const reasons: Reason[] = [];
        const ok = req.type === 'sigstoreSigned' ? sigstoreAccept(policy, req, ref, manifestDigest, sigs.sigstore, reasons) : gpgAccept(policy, req, ref, manifestDigest, sigs.gpg, reasons);
        if (ok.length === 0) throw refusal(image, at(req), reasons, req.signedIdentity, ref);
        accepted.push(...ok);
        break;
      }
    }
  }
  return { policyFile: policy.file, scope, requirements: reqs.map(describeRequirement), accepted };
}

function refusal(image: string, at: string, reasons: Reason[], rule: SignedIdentity, ref: DockerRef): CowshedError {
  const count = reasons.length === 1 ? 'the signature' : `none of the ${reasons.length} signatures`;
  const id = reasons.find((r) => r.kind === 'identity');
  if (id) {
    return new CowshedError('ETRUST', `${image}: signature identity does not match: the signature names ${id.signedIdentity}, the image is ${formatDockerRef(ref)} (signedIdentity ${describeIdentityRule(rule)}, ${at})`);
  }
  const digest = reasons.find((r) => r.kind === 'digest');
  if (digest) return new CowshedError('ETRUST', `${image}: ${count} is for another image: ${digest.message} (${at})`);
  const format = reasons.find((r) => r.kind === 'format');
  if (format && reasons.every((r) => r.kind === 'format')) return new CowshedError('ETRUST', `${image}: ${count} is in a format cowshed does not read: ${format.message} (${at})`);
  return new CowshedError('ETRUST', `${image}: ${count} does not verify: ${reasons.find((r) => r.kind === 'crypto')?.message ?? reasons[0]?.message} (${at})`);
}

function sigstoreAccept(policy: Policy, req: Requirement & { type: 'sigstoreSigned' }, ref: DockerRef, manifestDigest: string, sigs: SigstoreAttachment[], reasons: Reason[]): VerifiedSignature[] {
  const keys: Array<{ key: KeyObject; name: string }> = [];
  for (const k of loadKeyBytes(req.keys, policy, req)) {
    for (const key of readPublicKeys(k.bytes.toString('utf8'), `${policy.file}:${req.line}: ${k.name}`)) keys.push({ key, name: k.name });
  }
  const out: VerifiedSignature[] = [];
  for (const s of sigs) {
    if (s.mediaType !== SIMPLESIGNING_MEDIA_TYPE) { reasons.push({ kind: 'format', message: `${s.source} has media type ${s.mediaType}` }); continue; }
    const b64 = s.annotations[SIGNATURE_ANNOTATION];
    if (b64 === undefined) { reasons.push({ kind: 'format', message: `${s.source} has no ${SIGNATURE_ANNOTATION} annotation` }); continue; }
    const key = keys.find((k) => verifyPayload([k.key], s.payload, b64));
    if (!key) { reasons.push({ kind: 'crypto', message: `${s.source} is not signed by the policy's key${keys.length > 1 ? 's' : ''} (${[...new Set(keys.map((k) => k.name))].join(', ')})` }); continue; }
    let p: Payload;
    try { p = parsePayload(s.payload, SIGSTORE_TYPE, s.source); } catch (e) { reasons.push({ kind: 'format', message: (e as Error).message }); continue; }
    const why = checkPayload(p, manifestDigest, ref, req.signedIdentity);
    if (why) { reasons.push(why); continue; }
    out.push({ kind: 'sigstore', identity: p.dockerReference, manifestDigest, composefs: p.composefs, key: key.name, payload: s.payload, signature: b64, source: s.source });
  }
  return out;
}

function gpgAccept(policy: Policy, req: Requirement & { type: 'signedBy' }, ref: DockerRef, manifestDigest: string, sigs: GpgSignatureBlob[], reasons: Reason[]): VerifiedSignature[] {
  const rings = loadKeyBytes(req.keys, policy, req);
  const v = new GpgVerifier(rings.map((r) => r.bytes), `${policy.file}:${req.line}: ${rings.map((r) => r.name).join(', ')}`);
  try {
    const out: VerifiedSignature[] = [];
    for (const s of sigs) {
      const r = v.verify(s.bytes);
      if (!r.ok) { reasons.push({ kind: 'crypto', message: `${s.source}: ${r.why}` }); continue; }
      let p: Payload;
      try { p = parsePayload(r.content, SIMPLE_SIGNING_TYPE, s.source); } catch (e) { reasons.push({ kind: 'format', message: (e as Error).message }); continue; }
      const why = checkPayload(p, manifestDigest, ref, req.signedIdentity);
      if (why) { reasons.push(why); continue; }
      out.push({ kind: 'gpg', identity: p.dockerReference, manifestDigest, composefs: p.composefs, key: r.fingerprint, payload: r.content, signature: s.bytes.toString('base64'), source: s.source });
    }
    return out;
  } finally {
    v.close();
  }
}

/** The kinds of signatures the policy's requirements for ref need (to fetch only those). */
export function signatureKindsNeeded(policy: Policy, ref: DockerRef): { sigstore: boolean; gpg: boolean } {
  const { reqs } = requirementsFor(policy, ref);
  if (reqs.some((r) => r.type === 'reject')) return { sigstore: false, gpg: false };
  return { sigstore: reqs.some((r) => r.type === 'sigstoreSigned'), gpg: reqs.some((r) => r.type === 'signedBy') };
}
