// Sigstore signatures without Fulcio or Rekor, as cosign and containers/image
// store them: an OCI manifest at tag sha256-<hex>.sig in the image's
// repository, one layer per signature (media type
// application/vnd.dev.cosign.simplesigning.v1+json, the payload as the blob,
// the base64 ECDSA P-256/SHA-256 ASN.1 signature in the annotation
// dev.cosignproject.cosign/signature). Writers append to that manifest.

import { sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { CowshedError, isCowshedError } from '../util/errors.ts';
import { sha256Digest, verifyDigest } from '../oci/digest.ts';
import { OCI_CONFIG, OCI_INDEX, OCI_MANIFEST } from '../oci/media-types.ts';
import type { RegistryClient } from '../registry/client.ts';

export const SIMPLESIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
const MAX_SIG_MANIFEST = 4 << 20;
const MAX_SIG_BLOB = 64 << 10;
const MAX_SIGNATURES = 64;

export const attachmentTag = (manifestDigest: string): string => `${manifestDigest.replace(':', '-')}.sig`;

export function signPayload(key: KeyObject, payload: Buffer): string {
  return cryptoSign('sha256', payload, { key, dsaEncoding: 'der' }).toString('base64');
}

/** true when the base64 DER signature verifies over payload with one of the keys. */
export function verifyPayload(keys: KeyObject[], payload: Buffer, signatureB64: string): boolean {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(signatureB64) || signatureB64.length > 1024) return false;
  const sig = Buffer.from(signatureB64, 'base64');
  for (const key of keys) {
    try { if (cryptoVerify('sha256', payload, { key, dsaEncoding: 'der' }, sig)) return true; } catch { /* malformed DER: not this key */ }
  }
  return false;
}

/** One layer of a signature manifest, untrusted until verified. */
export interface SigstoreAttachment {
  mediaType: string;
  payload: Buffer;
  annotations: Record<string, string>;
  /** Where it was found, for messages. */
  source: string;
}

interface Desc { mediaType: string; digest: string; size: number; annotations?: Record<string, string>; artifactType?: string }

/** Parses an (untrusted) signature manifest: its config and one layer per signature. */
export function parseSignatureManifest(bytes: Buffer, what: string): { config: Desc; layers: Desc[] } {
  const bad = (why: string): never => { throw new CowshedError('EFORMAT', `${what}: invalid signature manifest: ${why}`); };
  let v: unknown;
  try { v = JSON.parse(bytes.toString('utf8')); } catch { return bad('not JSON'); }
  const m = v as { schemaVersion?: unknown; mediaType?: unknown; config?: unknown; layers?: unknown };
  if (typeof m !== 'object' || m === null || m.schemaVersion !== 2) bad('schemaVersion is not 2');
  if (m.mediaType !== undefined && m.mediaType !== OCI_MANIFEST) bad(`media type ${JSON.stringify(m.mediaType)} (an OCI image manifest expected)`);
  const desc = (d: unknown, where: string): Desc => {
    const o = d as Desc;
    if (typeof o !== 'object' || o === null || typeof o.mediaType !== 'string' || typeof o.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(o.digest)
      || !Number.isSafeInteger(o.size) || o.size < 0) bad(`${where} is not a valid descriptor`);
    if (o.annotations !== undefined && (typeof o.annotations !== 'object' || o.annotations === null || Object.values(o.annotations).some((x) => typeof x !== 'string'))) bad(`${where}: annotations are not strings`);
    return o;
  };
  if (!Array.isArray(m.layers)) bad('no layers list');
  const layers = (m.layers as unknown[]).map((l, i) => desc(l, `layer ${i + 1}`));
  if (layers.length > MAX_SIGNATURES) bad(`${layers.length} signatures (at most ${MAX_SIGNATURES} are read)`);
  return { config: desc(m.config, 'config'), layers };
}

async function fetchSmallBlob(client: RegistryClient, repo: string, d: Desc, what: string, max: number): Promise<Buffer> {
  if (d.size > max) throw new CowshedError('EFORMAT', `${what}: ${d.size} bytes, too big for a signature`);
  const chunks: Uint8Array[] = [];
  for await (const c of verifyDigest(client.blob(repo, d.digest, d.size), d.digest, what, d.size)) chunks.push(c);
  return Buffer.concat(chunks);
}

/** The signature manifest of an image, or undefined when the registry has none. */
export async function getAttachmentManifest(client: RegistryClient, repo: string, manifestDigest: string): Promise<{ bytes: Buffer; config: Desc; layers: Desc[] } | undefined> {
  const tag = attachmentTag(manifestDigest);
  const head = await client.headManifest(repo, tag);
  if (!head) return undefined;
  const got = await client.getManifest(repo, tag, MAX_SIG_MANIFEST);
  const what = `${client.registry}/${repo}:${tag}`;
  if (got.mediaType && got.mediaType !== OCI_MANIFEST && !(got.mediaType === 'application/json' || got.mediaType === 'text/plain')) {
    throw new CowshedError('EFORMAT', `${what}: the signature manifest has media type ${got.mediaType}, not an OCI image manifest`);
  }
  return { bytes: got.bytes, ...parseSignatureManifest(got.bytes, what) };
}

/** Reads every signature attached to manifestDigest (payload blobs verified against their digests). */
export async function readAttachments(client: RegistryClient, repo: string, manifestDigest: string): Promise<SigstoreAttachment[]> {
  const m = await getAttachmentManifest(client, repo, manifestDigest);
  if (!m) return [];
  const where = `${client.registry}/${repo}:${attachmentTag(manifestDigest)}`;
  const out: SigstoreAttachment[] = [];
  for (const [i, l] of m.layers.entries()) {
    const what = `${where} signature ${i + 1}`;
    let payload: Buffer;
    try { payload = await fetchSmallBlob(client, repo, l, what, MAX_SIG_BLOB); } catch (e) {
      if (!isCowshedError(e)) throw e;
      throw new CowshedError('ETRUST', `${what}: cannot be read: ${e.message.replace(/^[^ ]+: /, '')}; refused`, { cause: e });
    }
    out.push({ mediaType: l.mediaType, payload, annotations: { ...l.annotations }, source: what });
  }
  return out;
}

/**
 * Signatures in formats cowshed does not read, found as OCI referrers of the
 * image (cosign v3 stores a sigstore bundle there: the referrers API, or the
 * fallback tag sha256-<hex> holding an index). A description, or undefined.
 */
export async function unreadableReferrers(client: RegistryClient, repo: string, manifestDigest: string): Promise<string | undefined> {
  const describe = (ds: Desc[]): string | undefined => {
    const kinds = [...new Set(ds.map((d) => d.artifactType ?? d.mediaType).filter((t) => /sigstore|cosign|signature/i.test(t)))];
    return kinds.length ? kinds.join(', ') : undefined;
  };
  try {
    const res = await client.request('GET', `/v2/${repo}/referrers/${manifestDigest}`, {
      headers: { accept: OCI_INDEX }, scopes: [`repository:${repo}:pull`], ok: (s) => s === 200 || s === 404 || s === 400 || s === 405, what: `referrers of ${manifestDigest}`,
    });
    if (res.status === 200 && (res.headers.get('content-type') ?? '').startsWith(OCI_INDEX)) {
      const text = Buffer.from(await res.arrayBuffer()).subarray(0, MAX_SIG_MANIFEST).toString('utf8');
      const k = describe(((JSON.parse(text) as { manifests?: Desc[] }).manifests ?? []));
      if (k) return `${k} (OCI referrer of ${manifestDigest})`;
    } else await res.body?.cancel().catch(() => {});
  } catch (e) { if (!isCowshedError(e)) throw e; }
  const tag = manifestDigest.replace(':', '-');
  if (!(await client.headManifest(repo, tag))) return undefined;
  try {
    const got = await client.getManifest(repo, tag, MAX_SIG_MANIFEST);
    const v = JSON.parse(got.bytes.toString('utf8')) as { manifests?: Desc[] };
    const k = describe(Array.isArray(v.manifests) ? v.manifests : []);
    return k ? `${k} (OCI referrer at tag ${tag})` : undefined;
  } catch { return undefined; }
}

async function putBlob(client: RegistryClient, repo: string, bytes: Buffer): Promise<string> {
  const digest = sha256Digest(bytes);
  if ((await client.headBlob(repo, digest, [`repository:${repo}:pull,push`])) === undefined) {
    await client.finishUpload(repo, await client.startUpload(repo), digest, bytes);
  }
  return digest;
}

/** Appends a signature to the image's signature manifest (creating it), as containers/image does. Returns the manifest's tag. */
export async function writeAttachment(client: RegistryClient, repo: string, manifestDigest: string, payload: Buffer, signatureB64: string): Promise<string> {
  const existing = await getAttachmentManifest(client, repo, manifestDigest);
  const layers: Desc[] = existing ? [...existing.layers] : [];
  let diffIds: string[] = [];
  if (existing) {
    const cfg = await fetchSmallBlob(client, repo, existing.config, `${repo}: signature config`, 1 << 20);
    try {
      const d = (JSON.parse(cfg.toString('utf8')) as { rootfs?: { diff_ids?: unknown } }).rootfs?.diff_ids;
      if (Array.isArray(d)) diffIds = d.filter((x): x is string => typeof x === 'string');
    } catch { diffIds = layers.map((l) => l.digest); }
  }
  const annotations = { [SIGNATURE_ANNOTATION]: signatureB64 };
  const digest = sha256Digest(payload);
  const dup = layers.some((l) => l.mediaType === SIMPLESIGNING_MEDIA_TYPE && l.digest === digest && l.annotations?.[SIGNATURE_ANNOTATION] === signatureB64);
  if (!dup) {
    await putBlob(client, repo, payload);
    layers.push({ mediaType: SIMPLESIGNING_MEDIA_TYPE, digest, size: payload.length, annotations });
    diffIds.push(digest);
  }
  const config = Buffer.from(JSON.stringify({ architecture: '', os: '', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }));
  const configDigest = await putBlob(client, repo, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
    layers,
  }));
  const tag = attachmentTag(manifestDigest);
  await client.putManifest(repo, tag, manifest, OCI_MANIFEST);
  return tag;
}
