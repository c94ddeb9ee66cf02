// fsck: check the store from the database outwards and from the files
// inwards, naming each problem. --repair removes what is safe to remove
// (leftover temporary files, corrupt objects and unreferenced damaged
// files); it never deletes a committed image, it reports it as broken.
import { readdirSync, readFileSync, rmSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from './store.ts';
import { fsverityDigest, toHex } from '../composefs/fsverity.ts';
import { sha256Digest } from '../oci/digest.ts';
import { pidAlive } from './leases.ts';
import { mountPoints } from '../util/mount.ts';
import { driverFor } from '../drivers/driver.ts';
import { stackOf } from '../composefs/stack.ts';

export interface FsckProblem { kind: string; path: string; message: string; repaired?: boolean }
export interface FsckReport { problems: FsckProblem[]; objectsChecked: number; imagesChecked: number; blobsChecked: number }

export async function fsck(store: Store, opts: { repair?: boolean } = {}): Promise<FsckReport> {
  const problems: FsckProblem[] = [];
  const p = store.paths;
  const report = (kind: string, path: string, message: string, repair?: () => void): void => {
    let repaired = false;
    if (opts.repair && repair) { repair(); repaired = true; }
    problems.push({ kind, path, message, repaired });
  };

  // Structure.
  for (let i = 0; i < 256; i++) {
    const d = join(p.objects, i.toString(16).padStart(2, '0'));
    if (!existsSync(d)) report('structure', d, 'object directory is missing', () => store.objects.init());
  }

  // Temporary files of processes that are gone.
  for (const name of readdirSync(p.tmp)) {
    const m = /^objects-(\d+)-/.exec(name);
    if (m && pidAlive(Number(m[1]))) continue;
    report('tmp', join(p.tmp, name), 'leftover temporary file from an interrupted operation', () => rmSync(join(p.tmp, name), { recursive: true, force: true }));
  }

  // Containers whose create was killed after their row was written: 'creating', their creator gone.
  for (const c of store.db.all<{ id: string; name: string; image_id: string; composefs: string; creator_pid: number | null }>(
    "SELECT id, name, image_id, composefs, creator_pid FROM containers WHERE state = 'creating'")) {
    if (c.creator_pid !== null && pidAlive(c.creator_pid)) continue;
    const dir = join(p.containers, c.id);
    report('container', dir, `container ${c.name} was not completely created (an interrupted create)`, () => {
      driverFor(store).remove(store, { id: c.id, imageId: c.image_id, composefs: c.composefs });
      store.db.tx(() => store.db.run('DELETE FROM containers WHERE id = ?', c.id));
      rmSync(dir, { recursive: true, force: true });
    });
  }

  // Container directories of no container: a create killed between its mkdir and its commit.
  const containerIds = new Set(store.db.all<{ id: string }>('SELECT id FROM containers').map((r) => r.id));
  const mounted = [...mountPoints()];
  for (const name of existsSync(p.containers) ? readdirSync(p.containers) : []) {
    if (containerIds.has(name)) continue;
    const dir = join(p.containers, name);
    // Never rm into a mount; a mount the database does not know is for the admin to look at.
    const busy = mounted.some((m) => m === dir || m.startsWith(dir + '/'));
    report('container', dir, `directory of no container (an interrupted create)${busy ? ', with something mounted below it' : ''}`,
      busy ? undefined : () => rmSync(dir, { recursive: true, force: true }));
  }

  // Every object's content against its name.
  let objectsChecked = 0;
  const corrupt = new Set<string>();
  for (const hex of store.objects.list()) {
    objectsChecked++;
    const path = store.objects.path(hex);
    if (!/^[0-9a-f]{64}$/.test(hex)) { report('object', path, 'stray file in the object store', () => rmSync(path, { force: true })); continue; }
    const real = await store.objects.verify(hex);
    if (real !== hex) {
      corrupt.add(hex);
      report('object', path, `object content does not match its digest (content digest ${real})`, () => rmSync(path, { force: true }));
    }
  }

  // The database against the files.
  const images = store.db.all<{ id: string; composefs: string; config_digest: string }>('SELECT id, composefs, config_digest FROM images');
  const checkedImages = new Map<string, boolean>();
  for (const img of images) {
    // A stacked image: every composefs image of its stack (composefs/stack.ts).
    for (const cfs of stackOf(store, img.composefs)) {
      const file = store.imagePath(cfs);
      if (!checkedImages.has(cfs)) {
        let ok = false;
        try { ok = toHex(fsverityDigest(readFileSync(file))) === cfs; } catch { ok = false; }
        checkedImages.set(cfs, ok);
      }
      if (!checkedImages.get(cfs)) {
        report('image', file, `composefs image of ${img.id} is ${existsSync(file) ? 'corrupt' : 'missing'}`);
      }
    }
    checkBlob(store, img.id, `manifest of ${img.id}`, report);
    checkBlob(store, img.config_digest, `config of ${img.id}`, report);
    for (const l of store.db.all<{ idx: number; split_digest: string }>('SELECT idx, split_digest FROM layers WHERE image_id = ?', img.id)) {
      checkBlob(store, l.split_digest, `tar-split of layer ${l.idx + 1} of ${img.id}`, report);
    }
    const rows = store.db.all<{ digest: string; size: number }>(
      'SELECT io.digest, o.size FROM image_objects io LEFT JOIN objects o ON o.digest = io.digest WHERE io.image_id = ?', img.id,
    );
    for (const o of rows) {
      if (corrupt.has(o.digest)) {
        report('image', store.objects.path(o.digest), `image ${img.id} needs object ${o.digest}, which is corrupt; import the image again to restore it`);
        continue;
      }
      const size = store.objects.size(o.digest);
      if (size === undefined) report('image', store.objects.path(o.digest), `image ${img.id} needs object ${o.digest}, which is missing; import the image again to restore it`);
      else if (o.size !== null && size !== o.size) report('object', store.objects.path(o.digest), `object has ${size} bytes, the database says ${o.size}`);
    }
  }
  const blobsChecked = [...store.blobs.list()].length;
  return { problems, objectsChecked, imagesChecked: images.length, blobsChecked };
}

function checkBlob(store: Store, digest: string, what: string, report: (k: string, p: string, m: string) => void): void {
  const path = store.blobs.path(digest);
  if (!existsSync(path)) { report('blob', path, `${what} (${digest}) is missing`); return; }
  if (statSync(path).size > 64 << 20) return; // far beyond any manifest; a tar-split this large is checked by export
  if (sha256Digest(readFileSync(path)) !== digest) report('blob', path, `${what} (${digest}) is corrupt`);
}
