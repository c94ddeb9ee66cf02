// overlay: overlay2-style. Each layer is extracted once into its own
// directory (overlay/<diff ID>/diff: whiteouts as char 0:0 devices, opaque
// directories marked trusted.overlay.opaque=y), shared by every image with
// that layer; a container is an overlay of its image's layer directories with
// its own upper/work. Long stacks stay under the mount option size limit the
// way overlay2 does: short symlinks (overlay/l/<id>) and a relative lowerdir
// list, mounted from inside overlay/.
import {
  createWriteStream, existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, linkSync, copyFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { Store } from '../store/store.ts';
import { registerDriver, type StorageDriver } from './driver.ts';
import { containerPaths, withMountLock, ensureLower, releaseLower } from './composefs.ts';
import { applyMetadata, makeSpecial, setXattrs, type Meta } from './materialize.ts';
import { escapeName, fromHost, fsPath } from '../util/names.ts';
import { readTar } from '../tar/reader.ts';
import { splitArchivePath } from '../tree/layers.ts';
import { diffUpper } from '../containers/diff.ts';
import { mountPoints, unmount, run } from '../util/mount.ts';
import { CowshedError } from '../util/errors.ts';
import { S_IFDIR } from '../tree/node.ts';
import { tmpOfLiveProcess } from '../store/leases.ts';

const layersDir = (store: Store): string => join(store.paths.root, 'overlay');
const layerDir = (store: Store, diffId: string): string => join(layersDir(store), diffId.replace(/^sha256:/, ''));
/** overlay2's short link name for a layer: 26 characters derived from its diff ID. */
const shortName = (diffId: string): string => createHash('sha256').update(diffId).digest('base64url').slice(0, 26);

/**
 * Extract one layer into a directory of its own, atomically (temp dir, then
 * rename). Names are binary strings (util/names.ts), written as their bytes;
 * a name repeated in the layer is replaced by its later entry, as on import.
 */
async function extractLayer(store: Store, imageId: string, index: number, diffId: string, lowerDirs: string[]): Promise<void> {
  const final = layerDir(store, diffId);
  if (existsSync(final)) return;
  const tmp = join(layersDir(store), `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const root = fromHost(join(tmp, 'diff'));
  mkdirSync(fsPath(root), { recursive: true, mode: 0o755 });
  // By path: a later entry of the same name replaces the earlier one's metadata.
  const entries = new Map<string, Meta>();
  const dirs = new Map<string, Meta>();
  const opaque: Array<[string, Map<string, Uint8Array>]> = [];
  const noMeta = new Map<string, Uint8Array>();
  /** Clears the way for a new entry at `path`, as GNU tar does (a directory again is kept). */
  const makeRoom = (path: string, keepDir: boolean): boolean => {
    const st = lstatOrNull(path);
    if (!st) return false;
    if (st.isDirectory()) {
      if (keepDir) return true;
      rmSync(fsPath(path), { recursive: true, force: true });
      dirs.delete(path);
    } else {
      rmSync(fsPath(path), { force: true });
      entries.delete(path);
    }
    return false;
  };
  try {
    for await (const e of readTar(store.layerTar(imageId, index))) {
      const parts = splitArchivePath(e.path);
      const meta: Meta = { mode: e.mode, uid: e.uid, gid: e.gid, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec, xattrs: e.xattrs };
      if (parts.length === 0) { dirs.set(root, { ...meta, mode: S_IFDIR | e.mode }); continue; }
      let parent = root;
      for (const p of parts.slice(0, -1)) {
        parent = join(parent, p);
        const st = lstatOrNull(parent);
        if (!st) mkdirSync(fsPath(parent), { mode: 0o755 });
        else if (!st.isDirectory()) throw new CowshedError('EHOSTILE', `${escapeName(e.path)}: goes through a non-directory`);
      }
      const name = parts[parts.length - 1]!;
      const path = join(parent, name);
      if (name === '.wh..wh..opq') {
        opaque.push([parent, new Map([['trusted.overlay.opaque', Buffer.from('y')]])]);
        continue;
      }
      if (name.startsWith('.wh.')) {
        makeRoom(join(parent, name.slice(4)), false);
        makeSpecial(join(parent, name.slice(4)), ['c', '0', '0']);
        continue;
      }
      if (e.type === 'dir') {
        if (!makeRoom(path, true)) mkdirSync(fsPath(path), { mode: 0o755 });
        dirs.set(path, { ...meta, mode: S_IFDIR | e.mode });
        continue;
      }
      if (e.type === 'hardlink') {
        const inLayer = join(root, ...splitArchivePath(e.linkname));
        if (inLayer === path) continue; // a link to itself: nothing changes
        makeRoom(path, false);
        if (lstatOrNull(inLayer)) { linkSync(fsPath(inLayer), fsPath(path)); continue; }
        // A link to a file of a lower layer: overlay layers cannot share an
        // inode across layers, so this layer gets a copy (as overlay2 does).
        const below = lowerDirs.map((d) => join(fromHost(d), ...splitArchivePath(e.linkname))).find((p) => lstatOrNull(p));
        if (!below) throw new CowshedError('EFORMAT', `${escapeName(e.path)}: hardlink to missing ${escapeName(e.linkname)}`);
        copyFileSync(fsPath(below), fsPath(path));
        const st = lstatSync(fsPath(below), { bigint: true });
        entries.set(path, {
          mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid),
          mtimeSec: Number(st.mtimeNs / 1_000_000_000n), mtimeNsec: Number(st.mtimeNs % 1_000_000_000n), xattrs: e.xattrs,
        });
        continue;
      }
      makeRoom(path, false);
      if (e.type === 'file') {
        await pipeline(Readable.from(e.body()), createWriteStream(fsPath(path), { mode: 0o600 }));
        e.setContentDigest(new Uint8Array(32)); // no tar-split is recorded here
      } else if (e.type === 'symlink') {
        symlinkSync(fsPath(e.linkname), fsPath(path));
      } else if (e.type === 'char' || e.type === 'block') {
        makeSpecial(path, [e.type === 'char' ? 'c' : 'b', String(e.devmajor), String(e.devminor)]);
      } else if (e.type === 'fifo') {
        makeSpecial(path, ['p']);
      }
      entries.set(path, e.type === 'symlink' ? { ...meta, mode: 0o120000, xattrs: meta.xattrs.size ? meta.xattrs : noMeta } : meta);
    }
    applyMetadata([...entries], [...dirs]);
    setXattrs(opaque);
    const link = join(layersDir(store), 'l', shortName(diffId));
    rmSync(link, { force: true });
    symlinkSync(`../${diffId.replace(/^sha256:/, '')}/diff`, link);
    renameSync(tmp, final);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

function lstatOrNull(p: string) {
  try { return lstatSync(fsPath(p)); } catch { return undefined; }
}

function layerIds(store: Store, imageId: string): string[] {
  return store.db.all<{ diff_id: string }>('SELECT diff_id FROM layers WHERE image_id = ? ORDER BY idx', imageId).map((r) => r.diff_id);
}

export const overlayDriver: StorageDriver = {
  check() { /* overlay is checked by mounting */ },
  async create(store, c, opts) {
    mkdirSync(join(layersDir(store), 'l'), { recursive: true, mode: 0o700 });
    const ids = layerIds(store, c.imageId);
    for (let i = 0; i < ids.length; i++) {
      await extractLayer(store, c.imageId, i, ids[i]!, ids.slice(0, i).reverse().map((d) => join(layerDir(store, d), 'diff')));
    }
    const p = containerPaths(store, c.id);
    mkdirSync(p.upper, { mode: 0o755 });
    mkdirSync(p.work, { mode: 0o700 });
    mkdirSync(p.merged, { mode: 0o755 });
    if (opts?.mount !== false) overlayDriver.mount(store, c);
  },
  mount(store, c) {
    const p = containerPaths(store, c.id);
    return withMountLock(store, () => {
      const row = store.db.get<{ mounted: number }>('SELECT mounted FROM containers WHERE id = ?', c.id);
      if (row?.mounted) return p.merged;
      // The container row is written before the driver runs: a create killed before its
      // directories were made leaves them to make here; a layer not extracted yet cannot be.
      const missing = layerIds(store, c.imageId).find((d) => !existsSync(layerDir(store, d)));
      if (missing) {
        throw new CowshedError('ECORRUPT', `container ${c.id.slice(0, 12)} was not completely created (layer ${missing.slice(0, 19)} was never extracted); remove it with cowshed rm -f ${c.id.slice(0, 12)} and create it again`);
      }
      mkdirSync(p.upper, { recursive: true, mode: 0o755 });
      mkdirSync(p.work, { recursive: true, mode: 0o700 });
      mkdirSync(p.merged, { recursive: true, mode: 0o755 });
      // The image's EROFS mount answers "did the image have this path?" for diff.
      ensureLower(store, c.composefs);
      const lowers = layerIds(store, c.imageId).reverse().map((d) => `l/${shortName(d)}`);
      const opts = `lowerdir=${lowers.join(':')},upperdir=${p.upper},workdir=${p.work},redirect_dir=on`;
      try {
        run('mount', ['-t', 'overlay', 'overlay', '-o', opts, p.merged], `mounting container ${c.id.slice(0, 12)}`, layersDir(store));
      } catch (e) {
        releaseLower(store, c.composefs);
        throw e;
      }
      store.db.run('UPDATE containers SET mounted = 1 WHERE id = ?', c.id);
      return p.merged;
    });
  },
  unmount(store, c) {
    withMountLock(store, () => {
      const row = store.db.get<{ mounted: number }>('SELECT mounted FROM containers WHERE id = ?', c.id);
      if (!row?.mounted) return;
      if (mountPoints().has(containerPaths(store, c.id).merged)) unmount(containerPaths(store, c.id).merged);
      store.db.run('UPDATE containers SET mounted = 0 WHERE id = ?', c.id);
      releaseLower(store, c.composefs);
    });
  },
  remove(store, c) {
    overlayDriver.unmount(store, c);
  },
  rootfs: (store, c) => containerPaths(store, c.id).merged,
  diff(store, c) {
    const lower = overlayDriver.mount(store, c) && withMountLock(store, () => ensureLower(store, c.composefs));
    return diffUpper(containerPaths(store, c.id).upper, lower);
  },
  pruneImages(store) {
    const dir = layersDir(store);
    if (!existsSync(dir)) return;
    const live = new Set(store.db.all<{ diff_id: string }>('SELECT DISTINCT diff_id FROM layers').map((r) => r.diff_id.replace(/^sha256:/, '')));
    for (const name of readdirSync(dir)) {
      // A layer another process is extracting right now is not gc's to take.
      if (name === 'l' || live.has(name) || tmpOfLiveProcess(name)) continue;
      rmSync(join(dir, name), { recursive: true, force: true });
    }
    // Short links whose layer is gone point nowhere now.
    const links = join(dir, 'l');
    if (existsSync(links)) {
      for (const l of readdirSync(links)) if (!existsSync(join(links, l))) rmSync(join(links, l), { force: true });
    }
  },
};
registerDriver('overlay', overlayDriver);
