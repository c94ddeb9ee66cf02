// Named volumes: directories in the store (<store>/volumes/<name>/_data)
// that containers mount, outside every storage driver, so what a container
// writes there is not copied-on-write, survives `rm` of the container, and
// is not part of its diff or of a commit (as with podman's "local" driver).
//
// Bookkeeping follows the containers' rules: a volume's row, and the rows
// saying which containers mount it (container_mounts), change only inside
// one write transaction (BEGIN IMMEDIATE), and the directory is made or
// moved aside inside that same transaction. So `volume rm` racing a `run`
// that uses the volume either removes it before the run records it (the run
// then makes a new one) or refuses; it never leaves a row without a
// directory or a container naming a deleted volume.
//
// Removal never leaves volumes/: names are checked (no '/', no '..'), the
// volume's directory is renamed to volumes/.removing-* in the transaction,
// and the tree is removed only if nothing is mounted inside it.
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, rmdirSync } from 'node:fs';
import { crypto } from '../util/builtins.ts';
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { CowshedError, errno, fail } from '../util/errors.ts';

/** podman's rule for volume names. */
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,253}$/;

export interface VolumeInfo {
  name: string;
  driver: 'local';
  /** The directory containers see (<store>/volumes/<name>/_data). */
  mountpoint: string;
  created: number;
  anonymous: boolean;
  /** Names of the containers that mount it (any state). */
  usedBy: string[];
}

interface VolumeRow { name: string; created: number; anonymous: number; needs_copy_up: number }

export const volumesDir = (store: Store): string => join(store.paths.root, 'volumes');
export const volumeData = (store: Store, name: string): string => join(volumesDir(store), name, '_data');

export function checkVolumeName(name: string): void {
  if (!NAME_RE.test(name)) fail('EINVAL', `invalid volume name ${JSON.stringify(name)}: letters, digits, _ . - (starting with a letter or digit, at most 254)`);
}

/** A new random name for an anonymous volume (run -v /dir), as podman makes them. */
export const anonymousVolumeName = (): string => crypto().randomBytes(32).toString('hex');

/**
 * Makes the volume's row and directory. Call inside store.db.tx(). Returns
 * false when it already exists (then nothing changes).
 */
export function insertVolume(store: Store, name: string, opts: { anonymous?: boolean } = {}): boolean {
  checkVolumeName(name);
  if (store.db.get('SELECT 1 FROM volumes WHERE name = ?', name)) return false;
  mkdirSync(volumesDir(store), { recursive: true, mode: 0o700 });
  const dir = join(volumesDir(store), name);
  // A directory left by a killed `volume rm` or `create` (no row): start afresh.
  try {
    const st = lstatSync(dir);
    if (!st.isDirectory()) fail('ECORRUPT', `${dir} is not a directory; remove it by hand`);
    moveAsideAndRemove(store, dir);
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
  }
  mkdirSync(dir, { mode: 0o700 });
  // _data keeps the mode podman gives it: other users in the container (a
  // non-root -u) must be able to use an empty volume.
  mkdirSync(join(dir, '_data'), { mode: 0o755 });
  store.db.run('INSERT INTO volumes (name, created, anonymous, needs_copy_up) VALUES (?, ?, ?, 1)', name, Date.now(), opts.anonymous ? 1 : 0);
  return true;
}

/** volume create NAME (a random name when none is given); EEXIST when it exists. */
export function createVolume(store: Store, name?: string): VolumeInfo {
  const n = name ?? anonymousVolumeName();
  checkVolumeName(n);
  store.db.tx(() => {
    if (!insertVolume(store, n)) throw new CowshedError('EEXIST', `volume ${n} already exists`);
  });
  return inspectVolume(store, n);
}

function rowOf(store: Store, name: string): VolumeRow {
  const row = store.db.get<VolumeRow>('SELECT * FROM volumes WHERE name = ?', name);
  if (!row) fail('ENOENT', `no such volume: ${name}`);
  return row;
}

function usersOf(store: Store, name: string): string[] {
  return store.db.all<{ name: string }>(
    'SELECT DISTINCT c.name FROM container_mounts m JOIN containers c ON c.id = m.container_id WHERE m.volume = ? ORDER BY c.name', name,
  ).map((r) => r.name);
}

function toInfo(store: Store, r: VolumeRow): VolumeInfo {
  return { name: r.name, driver: 'local', mountpoint: volumeData(store, r.name), created: r.created, anonymous: r.anonymous === 1, usedBy: usersOf(store, r.name) };
}

export function inspectVolume(store: Store, name: string): VolumeInfo {
  return toInfo(store, rowOf(store, name));
}

export function listVolumes(store: Store): VolumeInfo[] {
  return store.db.all<VolumeRow>('SELECT * FROM volumes ORDER BY name').map((r) => toInfo(store, r));
}

/** volume rm: refused (EBUSY) while any container mounts it. */
export function removeVolume(store: Store, name: string): string {
  checkVolumeName(name);
  const dir = store.db.tx(() => {
    rowOf(store, name);
    const users = usersOf(store, name);
    if (users.length > 0) {
      throw new CowshedError('EBUSY', `volume ${name} is being used by container${users.length > 1 ? 's' : ''} ${users.join(', ')}; remove ${users.length > 1 ? 'them' : 'it'} first`);
    }
    const aside = moveAside(store, join(volumesDir(store), name));
    store.db.run('DELETE FROM volumes WHERE name = ?', name);
    return aside;
  });
  if (dir) removeAside(dir);
  return name;
}

/** volume prune: every volume no container mounts. */
export function pruneVolumes(store: Store): string[] {
  removeLeftovers(store);
  const asides: string[] = [];
  const removed = store.db.tx(() => {
    const unused = store.db.all<{ name: string }>('SELECT name FROM volumes WHERE name NOT IN (SELECT volume FROM container_mounts WHERE volume IS NOT NULL) ORDER BY name');
    for (const { name } of unused) {
      const aside = moveAside(store, join(volumesDir(store), name));
      if (aside) asides.push(aside);
      store.db.run('DELETE FROM volumes WHERE name = ?', name);
    }
    return unused.map((u) => u.name);
  });
  for (const a of asides) removeAside(a);
  return removed;
}

/**
 * Claims the copy-up of a volume for the caller (inside a transaction):
 * true once per volume, for its first container.
 */
export function claimCopyUp(store: Store, name: string): boolean {
  const r = store.db.get<{ needs_copy_up: number }>('SELECT needs_copy_up FROM volumes WHERE name = ?', name);
  if (!r || r.needs_copy_up !== 1) return false;
  store.db.run('UPDATE volumes SET needs_copy_up = 0 WHERE name = ?', name);
  return true;
}

/** Bytes of the files in every volume (hardlinks once), for df. */
export function volumesUsage(store: Store): { count: number; size: number; volumes: { name: string; size: number }[] } {
  const out: { name: string; size: number }[] = [];
  for (const { name } of store.db.all<{ name: string }>('SELECT name FROM volumes ORDER BY name')) {
    out.push({ name, size: treeBytes(volumeData(store, name)) });
  }
  return { count: out.length, size: out.reduce((a, v) => a + v.size, 0), volumes: out };
}

const SLASH = Buffer.from('/');

function treeBytes(dir: string): number {
  const seen = new Set<string>();
  let total = 0;
  // Names are bytes: a lossy decode would miss the files whose names are not UTF-8.
  const walk = (d: Buffer): void => {
    let names: Buffer[];
    try { names = readdirSync(d, { encoding: 'buffer' }); } catch { return; }
    for (const n of names) {
      const p = Buffer.concat([d, SLASH, n]);
      let st;
      try { st = lstatSync(p, { bigint: true }); } catch { continue; }
      if (st.isDirectory()) { walk(p); continue; }
      if (!st.isFile()) continue;
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      total += Number(st.size);
    }
  };
  walk(Buffer.from(dir));
  return total;
}

/** Renames a volume's directory to volumes/.removing-*, refusing one with mounts inside. undefined when it is gone already. */
function moveAside(store: Store, dir: string): string | undefined {
  try {
    lstatSync(dir);
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
  const inside = mountsBelow(dir);
  if (inside.length > 0) fail('EBUSY', `${inside[0]} is mounted inside the volume's directory; unmount it first`);
  const aside = join(volumesDir(store), `.removing-${crypto().randomBytes(8).toString('hex')}`);
  renameSync(dir, aside);
  return aside;
}

function moveAsideAndRemove(store: Store, dir: string): void {
  const aside = moveAside(store, dir);
  if (aside) removeAside(aside);
}

/** Removes a tree under volumes/.removing-*: never across a mount (checked again), never through a symlink (rmSync unlinks them). */
function removeAside(dir: string): void {
  if (mountsBelow(dir).length > 0) return;   // left for an operator: never delete another filesystem's files
  rmSync(dir, { recursive: true, force: true });
  try { rmdirSync(dir); } catch { /* gone */ }
}

function mountsBelow(dir: string): string[] {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const out: string[] = [];
  for (const l of lines) {
    const mp = l.split(' ')[4];
    if (!mp) continue;
    // mountinfo escapes spaces and the like as \ooo.
    const path = mp.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (path === dir || path.startsWith(dir + '/')) out.push(path);
  }
  return out;
}

/** Removes leftovers of a killed `volume rm` (volumes/.removing-*). */
export function removeLeftovers(store: Store): void {
  let names: string[];
  try { names = readdirSync(volumesDir(store)); } catch { return; }
  for (const n of names) if (n.startsWith('.removing-')) removeAside(join(volumesDir(store), n));
}
