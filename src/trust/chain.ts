// mount --verify / run --verify: the whole chain of an image in the store,
// under the current policy, each link checked against the one before it:
//   signature (kept at pull, verified again with the policy's keys)
//   → manifest digest (the bytes in blobs/ hash to the signed digest)
//   → config (the manifest names it; its bytes hash to that digest)
//   → diff IDs (the config's rootfs.diff_ids are the layers recorded)
//   → tar-split (each record hashes to its digest; each layer rebuilt from it
//     and the objects hashes to its diff ID)
//   → every object's fs-verity digest (hashed while the layers are rebuilt)
//   → the composefs image's fs-verity digest (the recorded one, and the one
//     in the signed payload when the signer put it there).
// This kernel has no fs-verity, so every digest is computed in userspace.

import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { CowshedError } from '../util/errors.ts';
import type { Store } from '../store/store.ts';
import { digestOfStream } from '../oci/digest.ts';
import { FsVerityHasher, fsverityDigest, toHex } from '../composefs/fsverity.ts';
import { currentPolicy, storedSignatureSet, type TrustOptions } from './trust.ts';
import { evaluatePolicy, type Decision } from './evaluate.ts';
import { parseDockerRef, type DockerRef } from './reference.ts';

export interface ChainReport {
  image: string;
  name?: string;
  policy?: Decision;
  /** Signed composefs digests checked against the image. */
  signedComposefs: number;
  layers: number;
  objects: number;
  composefs: string;
  /** How digests were enforced: the kernel (fs-verity) or userspace. */
  enforcement: string;
}

/** Whether the running kernel offers fs-verity (ext4's feature flag as the probe). */
export function kernelHasFsVerity(): boolean {
  return existsSync('/sys/fs/ext4/features/verity') || existsSync('/sys/fs/btrfs/features/verity');
}

/** The docker identity of a stored image: the name asked for if it is one of its names, else its first name. */
function identityOf(names: string[], asked: string): DockerRef | undefined {
  const candidates = [...names.filter((n) => n === asked || n === `${asked}:latest`), ...names];
  for (const n of candidates) {
    try {
      const r = parseDockerRef(n);
      // A digest pull is stored as repo:sha256-<hex>.
      const m = r.tag !== undefined ? /^sha256-([0-9a-f]{64})$/.exec(r.tag) : null;
      return m ? { ...r, tag: undefined, digest: `sha256:${m[1]}` } : r;
    } catch { /* not a registry name */ }
  }
  return undefined;
}

export async function verifyChain(store: Store, name: string, opts: TrustOptions): Promise<ChainReport> {
  // A stacked image is checked as its single composefs image (the one signatures name).
  await store.flatComposefs(name);
  const info = store.resolveImage(name);
  const id = info.id;
  const fail = (link: string, why: string): never => { throw new CowshedError('EDIGEST', `image ${id}: ${link}: ${why}; refused`); };
  const report: ChainReport = { image: id, signedComposefs: 0, layers: 0, objects: 0, composefs: info.composefs, enforcement: '' };

  // 1. signature under the current policy
  const policy = currentPolicy(opts);
  if (policy) {
    const ref = identityOf(info.names, name);
    if (ref) {
      report.name = `${ref.name}${ref.tag ? `:${ref.tag}` : `@${ref.digest}`}`;
      report.policy = evaluatePolicy(policy, ref, id, storedSignatureSet(store.db, id));
    } else if (policy.default.some((r) => r.type !== 'insecureAcceptAnything')) {
      report.policy = evaluatePolicy(policy, { name: info.names[0] ?? id, host: '', path: '' }, id, storedSignatureSet(store.db, id));
    }
  }

  // 2. manifest
  const blob = async (digest: string, what: string): Promise<Buffer> => {
    let real: string;
    try { real = (await digestOfStream(createReadStream(store.blobs.path(digest)))).digest; } catch { return fail(what, `${digest} is missing from the store`); }
    if (real !== digest) fail(what, `${digest} is corrupt: changed on disk (its bytes hash to ${real})`);
    return readFileSync(store.blobs.path(digest));
  };
  const manifestBytes = await blob(id, 'manifest');
  let manifest: { config?: { digest?: string }; layers?: unknown[] };
  try { manifest = JSON.parse(manifestBytes.toString('utf8')) as typeof manifest; } catch { return fail('manifest', 'not JSON'); }

  // 3. config
  const row = store.db.get<{ config_digest: string }>('SELECT config_digest FROM images WHERE id = ?', id)!;
  if (manifest.config?.digest !== row.config_digest) fail('config', `the manifest names ${manifest.config?.digest}, the store recorded ${row.config_digest}`);
  const configBytes = await blob(row.config_digest, 'config');
  let diffIds: unknown;
  try { diffIds = (JSON.parse(configBytes.toString('utf8')) as { rootfs?: { diff_ids?: unknown } }).rootfs?.diff_ids; } catch { return fail('config', 'not JSON'); }

  // 4. diff IDs
  const layers = store.db.all<{ idx: number; diff_id: string; split_digest: string }>('SELECT idx, diff_id, split_digest FROM layers WHERE image_id = ? ORDER BY idx', id);
  if (!Array.isArray(diffIds) || diffIds.length !== layers.length || layers.some((l, i) => l.diff_id !== diffIds[i])) {
    fail('diff IDs', `the config's rootfs.diff_ids do not match the ${layers.length} layers recorded`);
  }

  // 5. tar-split records
  for (const l of layers) await blob(l.split_digest, `tar-split record of layer ${l.idx + 1}`);

  // 6. every layer rebuilt from its tar-split record and the objects must hash to its diff ID;
  //    each object read on the way is fs-verity-hashed against its name (one read for both links).
  const { rebuildTar } = await import('../tar/split.ts');
  const { verifyDigest } = await import('../oci/digest.ts');
  const checked = new Set<string>();
  const openChecked = (digest: Buffer): AsyncIterable<Uint8Array> => {
    const hex = toHex(digest);
    if (checked.has(hex)) return store.objects.open(hex);
    return (async function* () {
      const h = new FsVerityHasher();
      try {
        for await (const c of store.objects.open(hex)) { h.update(c as Uint8Array); yield c as Uint8Array; }
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') fail('objects', `object ${hex} is missing`);
        throw e;
      }
      const real = toHex(h.digest());
      if (real !== hex) fail('objects', `object ${hex} is corrupt: changed on disk (its fs-verity digest is ${real})`);
      checked.add(hex);
    })();
  };
  for (const l of layers) {
    try {
      const tar = verifyDigest(rebuildTar(readFileSync(store.blobs.path(l.split_digest)), openChecked), l.diff_id, `layer ${l.idx + 1}`);
      while (!(await tar.next()).done) { /* the diff ID is checked at the end */ }
    } catch (e) {
      if (e instanceof CowshedError && e.message.startsWith(`image ${id}: `)) throw e;
      fail(`layer ${l.idx + 1} (tar-split + objects)`, `is corrupt: does not rebuild to diff ID ${l.diff_id}: ${(e as Error).message}`);
    }
  }
  report.layers = layers.length;
  // Objects no layer holds (none, normally) are hashed on their own.
  const objects = store.db.all<{ digest: string }>('SELECT digest FROM image_objects WHERE image_id = ?', id);
  for (const { digest } of objects) {
    if (checked.has(digest)) continue;
    const real = await store.objects.verify(digest);
    if (real === undefined) fail('objects', `object ${digest} is missing`);
    if (real !== digest) fail('objects', `object ${digest} is corrupt: changed on disk (its fs-verity digest is ${real})`);
  }
  report.objects = objects.length;

  // 7. composefs image
  let image: Buffer;
  try { image = readFileSync(store.imagePath(info.composefs)); } catch { return fail('composefs image', `${info.composefs} is missing`); }
  const got = toHex(fsverityDigest(image));
  if (got !== info.composefs) fail('composefs image', `${info.composefs} is corrupt: changed on disk (its fs-verity digest is ${got})`);
  for (const s of report.policy?.accepted ?? []) {
    if (s.composefs === undefined) continue;
    if (s.composefs !== got) fail('composefs image', `the signature names ${s.composefs}, the image is ${got}`);
    report.signedComposefs++;
  }
  report.enforcement = kernelHasFsVerity()
    ? 'fs-verity is available, but the object store does not enable it yet: digests verified in userspace'
    : 'this kernel has no fs-verity: every digest verified in userspace';
  return report;
}
