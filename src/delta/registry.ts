// Deltas in a registry, next to the image: published as OCI artifacts whose
// `subject` is the target manifest, found through the OCI 1.1 referrers API
// (GET /v2/<repo>/referrers/<digest>) or, on registries without it (Debian's
// docker-registry 2.8), through the referrers tag schema: an image index
// tagged `sha256-<hex>` that lists them. Nothing cowshed-specific runs on
// the server.
import type { Store } from '../store/store.ts';
import { RegistryClient, formatRef, parseRegistryRef, pullScope, pushScope, type RegistryRef } from '../registry/client.ts';
import { pushImage, uploadStream, type PushOptions, type PushResult } from '../registry/push.ts';
import { sha256Digest } from '../oci/digest.ts';
import { OCI_INDEX, OCI_MANIFEST } from '../oci/media-types.ts';
import { MAX_MANIFEST_BYTES, type Descriptor } from '../oci/types.ts';
import { CowshedError, fail, isCowshedError } from '../util/errors.ts';
import { createDelta } from './create.ts';
import { checkIndexAgainst, deltaManifest, parseDeltaManifest, type DeltaReader } from './artifact.ts';
import {
  ANNOTATION_BYTES, ANNOTATION_FROM, ANNOTATION_TO, DELTA_ARTIFACT_TYPE, EMPTY_CONFIG, MAX_INDEX_BYTES, decodeIndex, encodeIndex,
} from './format.ts';
import { parsePolicy, policyBases } from './policy.ts';

/** Most referrers a client looks at for one image (a hostile list cannot make it fetch without end). */
const MAX_REFERRERS = 64;

export const tagSchemaTag = (digest: string): string => digest.replace(':', '-');

async function readBody(client: RegistryClient, res: Response, max: number, what: string): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of client.bodyChunks(res, what)) {
    n += c.length;
    if (n > max) throw new CowshedError('EFORMAT', `${what}: more than ${max} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** Delta descriptors among the referrers of `digest` (referrers API, else the tag schema). */
export async function listDeltas(client: RegistryClient, repo: string, digest: string): Promise<{ deltas: Descriptor[]; via: 'referrers' | 'tag-schema' | 'none' }> {
  const what = `referrers of ${repo}@${digest}`;
  const res = await client.request('GET', `/v2/${repo}/referrers/${digest}?artifactType=${encodeURIComponent(DELTA_ARTIFACT_TYPE)}`, {
    headers: { accept: OCI_INDEX }, scopes: [pullScope(repo)], ok: (s) => s === 200 || s === 404 || s === 400 || s === 405, what,
  });
  let list: unknown;
  let via: 'referrers' | 'tag-schema' | 'none' = 'referrers';
  const type = res.headers.get('content-type')?.split(';')[0].trim();
  if (res.status === 200 && type === OCI_INDEX) {
    list = JSON.parse((await readBody(client, res, MAX_MANIFEST_BYTES, what)).toString('utf8'));
  } else {
    await res.body?.cancel().catch(() => {});
    via = 'tag-schema';
    try {
      const got = await client.getManifest(repo, tagSchemaTag(digest), MAX_MANIFEST_BYTES);
      list = JSON.parse(got.bytes.toString('utf8'));
    } catch (e) {
      if (isCowshedError(e) && e.code === 'ENOENT') return { deltas: [], via: 'none' };
      if (e instanceof SyntaxError) return { deltas: [], via: 'none' };
      throw e;
    }
  }
  const manifests = (list as { manifests?: unknown }).manifests;
  if (!Array.isArray(manifests)) return { deltas: [], via };
  const deltas = (manifests as Descriptor[]).filter((d) => typeof d === 'object' && d !== null && d.artifactType === DELTA_ARTIFACT_TYPE
    && typeof d.digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(d.digest)).slice(0, MAX_REFERRERS);
  return { deltas, via };
}

/** A delta in a registry: manifest and index fetched and verified now, pack entries by Range on demand. */
export async function openRegistryDelta(client: RegistryClient, repo: string, digest: string): Promise<DeltaReader> {
  const where = `${client.registry}/${repo}@${digest}`;
  const got = await client.getManifest(repo, digest, 1 << 20);
  if (sha256Digest(got.bytes) !== digest) fail('EDIGEST', `${where}: delta manifest does not match its digest`);
  const manifest = parseDeltaManifest(got.bytes, where);
  const res = await client.request('GET', `/v2/${repo}/blobs/${manifest.index.digest}`, { scopes: [pullScope(repo)], what: `${where}: delta index` });
  const ixBlob = await readBody(client, res, MAX_INDEX_BYTES, `${where}: delta index`);
  if (sha256Digest(ixBlob) !== manifest.index.digest) fail('EDIGEST', `${where}: delta index does not match its digest`);
  const index = decodeIndex(ixBlob);
  checkIndexAgainst(manifest, index, where);
  const reader: DeltaReader = {
    where,
    manifest,
    index,
    bytesRead: got.bytes.length + ixBlob.length,
    async readRange(pack, offset, length) {
      const p = index.packs[pack];
      if (p === undefined || offset + length > p.size) fail('EFORMAT', `${where}: range outside pack ${pack}`);
      if (length === 0) return Buffer.alloc(0);
      const what = `${where}: pack ${pack} bytes ${offset}+${length}`;
      const r = await client.request('GET', `/v2/${repo}/blobs/${p.digest}`, { headers: { range: `bytes=${offset}-${offset + length - 1}` }, scopes: [pullScope(repo)], what });
      let body = await readBody(client, r, r.status === 206 ? length : p.size, what);
      reader.bytesRead += body.length;
      if (r.status === 200) body = body.subarray(offset, offset + length); // Range ignored: the whole pack came
      if (body.length !== length) fail('EFORMAT', `${what}: got ${body.length} bytes (pack cut short?)`);
      return body;
    },
    async close() { /* nothing held between requests */ },
  };
  return reader;
}

// ---- publishing

export interface PublishOptions extends PushOptions {
  /** Planning policy (src/delta/policy.ts); default log distances. */
  policy?: string;
  onDelta?: (e: { from: string; to: string; bytes: number; digest: string; via: 'referrers' | 'tag-schema' }) => void;
}

export interface PublishResult extends PushResult {
  deltas: Array<{ fromTag: string; digest: string; bytes: number }>;
  referrers: 'referrers' | 'tag-schema' | 'none';
}

interface Version { tag: string; manifest: string; created: string; imageId: string }

/** Older versions of the repository that the store holds (matched by config digest), oldest first. */
async function repositoryVersions(store: Store, client: RegistryClient, repo: string, skipConfig: string): Promise<Version[]> {
  const res = await client.request('GET', `/v2/${repo}/tags/list?n=1000`, { scopes: [pullScope(repo)], ok: (s) => s === 200 || s === 404, what: `tags of ${repo}` });
  if (res.status === 404) { await res.body?.cancel().catch(() => {}); return []; }
  const tags = ((JSON.parse((await readBody(client, res, 4 << 20, `tags of ${repo}`)).toString('utf8')) as { tags?: unknown }).tags ?? []) as unknown[];
  const out: Version[] = [];
  for (const tag of tags) {
    if (typeof tag !== 'string' || /^sha256-[0-9a-f]{64}/.test(tag)) continue;
    let m: { bytes: Buffer; mediaType: string };
    try { m = await client.getManifest(repo, tag, MAX_MANIFEST_BYTES); } catch { continue; }
    let parsed: { config?: { digest?: unknown }; artifactType?: unknown };
    try { parsed = JSON.parse(m.bytes.toString('utf8')) as typeof parsed; } catch { continue; }
    const cd = parsed.config?.digest;
    if (typeof cd !== 'string' || cd === skipConfig || parsed.artifactType !== undefined) continue;
    const row = store.db.get<{ id: string }>('SELECT id FROM images WHERE config_digest = ? LIMIT 1', cd);
    if (!row) continue;
    let created = '';
    try { created = String((JSON.parse(store.blobs.get(cd).toString('utf8')) as { created?: unknown }).created ?? ''); } catch { /* undated */ }
    out.push({ tag, manifest: sha256Digest(m.bytes), created, imageId: row.id });
  }
  return out.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
}

/**
 * push --deltas: pushes the image, then deltas to it from the earlier
 * versions of the repository the policy picks (versions ordered by their
 * config's creation date; only versions the store holds can be bases).
 */
export async function pushWithDeltas(store: Store, imageRef: string, destRef: string, opts: PublishOptions = {}): Promise<PublishResult> {
  const policy = parsePolicy(opts.policy);
  const pushed = await pushImage(store, imageRef, destRef, opts);
  const r: RegistryRef = parseRegistryRef(destRef);
  const repo = r.repository;
  const client = RegistryClient.forRef(r, { tlsVerify: opts.tlsVerify, creds: opts.creds, ...opts.client });
  const target = store.imageRecord(imageRef);
  const targetManifest = await client.getManifest(repo, pushed.digest, MAX_MANIFEST_BYTES);
  const older = (await repositoryVersions(store, client, repo, target.configDigest))
    .filter((v) => v.created === '' || String(target.config.created ?? '') === '' || v.created < String(target.config.created));
  const n = older.length + 1;
  const bases = policyBases(policy, n).map((b) => older[b - 1]);
  const result: PublishResult = { ...pushed, deltas: [], referrers: 'none' };
  const added: Descriptor[] = [];
  for (const base of bases) {
    const delta = await createDelta(store, base.imageId, target.id, undefined, {
      toManifest: { bytes: targetManifest.bytes, mediaType: targetManifest.mediaType || OCI_MANIFEST }, fromManifest: base.manifest,
    });
    const indexBlob = encodeIndex(delta.index);
    for (const blob of [EMPTY_CONFIG, indexBlob, ...delta.packs]) {
      if ((await client.headBlob(repo, sha256Digest(blob), [pushScope(repo)])) === undefined) {
        await uploadStream(client, repo, (async function* () { yield blob; })(), opts.chunkSize);
      }
    }
    const mbytes = deltaManifest(delta, indexBlob);
    const digest = sha256Digest(mbytes);
    const res = await client.request('PUT', `/v2/${repo}/manifests/${digest}`, {
      headers: { 'content-type': OCI_MANIFEST }, body: mbytes, scopes: [pushScope(repo)], ok: (s) => s === 201 || s === 200, what: `delta manifest ${digest}`,
    });
    await res.body?.cancel().catch(() => {});
    const via = res.headers.get('oci-subject') ? 'referrers' : 'tag-schema';
    result.referrers = via;
    const bytes = indexBlob.length + delta.packs.reduce((a, p) => a + p.length, 0);
    added.push({
      mediaType: OCI_MANIFEST, digest, size: mbytes.length, artifactType: DELTA_ARTIFACT_TYPE,
      annotations: { [ANNOTATION_FROM]: base.manifest, [ANNOTATION_TO]: pushed.digest, [ANNOTATION_BYTES]: String(bytes) },
    });
    result.deltas.push({ fromTag: base.tag, digest, bytes });
    opts.onDelta?.({ from: base.tag, to: formatRef(r), bytes, digest, via });
  }
  if (added.length > 0 && result.referrers === 'tag-schema') await addToTagSchemaIndex(client, repo, pushed.digest, added);
  return result;
}

/** The referrers tag schema: the index at `sha256-<hex>` lists the target's referrers; add ours to it. */
async function addToTagSchemaIndex(client: RegistryClient, repo: string, subject: string, add: Descriptor[]): Promise<void> {
  const tag = tagSchemaTag(subject);
  let manifests: Descriptor[] = [];
  try {
    const got = await client.getManifest(repo, tag, MAX_MANIFEST_BYTES);
    const v = JSON.parse(got.bytes.toString('utf8')) as { manifests?: unknown };
    if (Array.isArray(v.manifests)) manifests = v.manifests as Descriptor[];
  } catch (e) {
    if (!(isCowshedError(e) && e.code === 'ENOENT') && !(e instanceof SyntaxError)) throw e;
  }
  const kept = manifests.filter((m) => !add.some((a) => a.digest === m.digest));
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...kept, ...add] }));
  await client.putManifest(repo, tag, index, OCI_INDEX);
}
