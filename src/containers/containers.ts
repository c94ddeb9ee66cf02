// Container lifecycle on the composefs driver: a container is a directory
// (upper/, work/, merged/) and an overlay mount over its image's shared
// EROFS mount. Creating one costs three mkdirs, one mount and one database
// row, whatever the image's size.
import { mkdirSync, rmSync } from 'node:fs';
import { randomBytes } from '../util/random.ts';
import type { Store } from '../store/store.ts';
import { containerPaths } from '../drivers/composefs.ts';
import { driverFor, type ContainerRef } from '../drivers/driver.ts';
import type { Change } from './diff.ts';
import { CowshedError, errno, fail } from '../util/errors.ts';
import { pidAlive } from '../store/leases.ts';
import { fromHost } from '../util/names.ts';
import { deleteRuntimeContainer, runtimeHasIt } from './runtime.ts';

export interface ContainerInfo {
  id: string;
  name: string;
  imageId: string;
  imageNames: string[];
  composefs: string;
  created: number;
  mounted: boolean;
  state: string;
  exitCode: number | null;
  /** The root filesystem path (valid while mounted). */
  rootfs: string;
}

export interface ContainerRow { id: string; name: string; image_id: string; composefs: string; created: number; mounted: number; state: string; exit_code: number | null; creator_pid: number | null }

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

const ADJECTIVES = ['brave', 'calm', 'eager', 'fond', 'gentle', 'happy', 'keen', 'lucid', 'merry', 'quiet', 'sunny', 'witty'];
const ANIMALS = ['badger', 'calf', 'heifer', 'lamb', 'ox', 'heron', 'otter', 'pony', 'stoat', 'wren', 'yak', 'goat'];

function randomName(): string {
  const b = randomBytes(3);
  return `${ADJECTIVES[b[0]! % ADJECTIVES.length]}_${ANIMALS[b[1]! % ANIMALS.length]}_${b[2]!.toString(16)}`;
}

export interface CreateOptions {
  name?: string;
  /** Mount right away (default true): a created container is ready to use. */
  mount?: boolean;
}

export async function createContainer(store: Store, imageRef: string, opts: CreateOptions = {}): Promise<ContainerInfo> {
  const image = store.resolveImage(imageRef);
  if (opts.name !== undefined && !NAME_RE.test(opts.name)) {
    fail('EINVAL', `invalid container name ${JSON.stringify(opts.name)}: letters, digits, _ . - (starting with a letter or digit)`);
  }
  const id = randomBytes(32).toString('hex');
  const p = containerPaths(store, id);
  const driver = driverFor(store);
  mkdirSync(p.dir, { mode: 0o700 });
  try {
    store.db.tx(() => {
      // rmi may have removed the image since it was resolved: a container of it would lose its objects to gc.
      if (!store.db.get('SELECT 1 FROM images WHERE id = ?', image.id)) throw new CowshedError('ENOENT', `image ${imageRef} was removed while the container was being created`);
      let name = opts.name;
      if (name === undefined) do name = randomName(); while (store.db.get('SELECT 1 FROM containers WHERE name = ?', name));
      else if (store.db.get('SELECT 1 FROM containers WHERE name = ?', name)) {
        throw new CowshedError('EEXIST', `the container name ${JSON.stringify(name)} is already in use`);
      }
      // 'creating' until the driver is done: a create killed half way leaves a container
      // that says so (and that fsck --repair removes), not one that looks whole.
      store.db.run("INSERT INTO containers (id, name, image_id, composefs, created, state, creator_pid) VALUES (?, ?, ?, ?, ?, 'creating', ?)",
        id, name, image.id, image.composefs, Date.now(), process.pid);
    });
    await driver.create(store, { id, imageId: image.id, composefs: image.composefs }, { mount: opts.mount !== false });
    store.db.tx(() => store.db.run("UPDATE containers SET state = 'created', creator_pid = NULL WHERE id = ?", id));
  } catch (e) {
    try { driver.remove(store, { id, imageId: image.id, composefs: image.composefs }); } catch { /* it may not exist */ }
    store.db.tx(() => store.db.run('DELETE FROM containers WHERE id = ?', id));
    rmSync(p.dir, { recursive: true, force: true });
    throw e;
  }
  return getContainer(store, id);
}

/** A container by name or id, or undefined (for commands that take a container or an image). */
export function findContainer(store: Store, ref: string): ContainerInfo | undefined {
  try {
    return toInfo(store, resolveContainer(store, ref));
  } catch (e) {
    if (e instanceof CowshedError && e.code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * Find a container by id, unique id prefix, or name. One still being made,
 * or whose create was killed, is refused unless `incomplete` (for rm).
 */
export function resolveContainer(store: Store, ref: string, opts: { incomplete?: boolean } = {}): ContainerRow {
  const row = findRow(store, ref);
  if (row.state === 'creating' && !opts.incomplete) {
    if (row.creator_pid !== null && pidAlive(row.creator_pid)) fail('EBUSY', `container ${row.name} is still being created; try again when it is done`);
    fail('ECORRUPT', `container ${row.name} was not completely created (its create was interrupted); remove it with cowshed rm -f ${row.name}`);
  }
  return row;
}

function findRow(store: Store, ref: string): ContainerRow {
  const byName = store.db.get<ContainerRow>('SELECT * FROM containers WHERE name = ?', ref);
  if (byName) return byName;
  if (/^[0-9a-f]{3,64}$/.test(ref)) {
    const rows = store.db.all<ContainerRow>("SELECT * FROM containers WHERE id LIKE ? || '%'", ref);
    if (rows.length === 1) return rows[0]!;
    if (rows.length > 1) fail('EINVAL', `container id prefix ${ref} is ambiguous`);
  }
  return fail('ENOENT', `no such container: ${ref}`);
}

/** 'creating' whose creator is gone reads as 'incomplete'; 'running' that no runtime runs (a reboot) as 'exited'. */
function shownState(r: ContainerRow): string {
  if (r.state === 'creating' && !(r.creator_pid !== null && pidAlive(r.creator_pid))) return 'incomplete';
  if (r.state === 'running' && !runtimeHasIt(r.id)) return 'exited';
  return r.state;
}

function toInfo(store: Store, r: ContainerRow): ContainerInfo {
  const imageNames = store.db.all<{ name: string }>('SELECT name FROM tags WHERE image_id = ? ORDER BY name', r.image_id).map((t) => t.name);
  return {
    id: r.id, name: r.name, imageId: r.image_id, imageNames, composefs: r.composefs, created: r.created,
    mounted: r.mounted === 1, state: shownState(r), exitCode: r.exit_code, rootfs: driverFor(store).rootfs(store, refOf(r)),
  };
}

export function getContainer(store: Store, ref: string): ContainerInfo {
  return toInfo(store, resolveContainer(store, ref));
}

export function listContainers(store: Store, opts: { all?: boolean } = {}): ContainerInfo[] {
  // Like podman ps: without --all, only running containers.
  const rows = store.db.all<ContainerRow>(opts.all ? 'SELECT * FROM containers ORDER BY created DESC' : "SELECT * FROM containers WHERE state = 'running' ORDER BY created DESC");
  return rows.map((r) => toInfo(store, r));
}

const refOf = (r: ContainerRow): ContainerRef => ({ id: r.id, imageId: r.image_id, composefs: r.composefs });

export function mount(store: Store, name: string): string {
  return driverFor(store).mount(store, refOf(resolveContainer(store, name)));
}

export function unmount(store: Store, name: string): void {
  driverFor(store).unmount(store, refOf(resolveContainer(store, name)));
}

/** What a container changed since it was created from its image. */
export function containerDiff(store: Store, name: string): Change[] {
  const c = resolveContainer(store, name);
  return diffOf(store, refOf(c), c.name);
}

/**
 * The driver's diff, where a running container that removes or replaces a
 * directory while it is walked gets a typed error rather than a raw ENOENT.
 */
export function diffOf(store: Store, ref: ContainerRef, name: string): Change[] {
  try {
    return withoutMounts(store, ref.id, driverFor(store).diff(store, ref));
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') {
      throw new CowshedError('EBUSY', `container ${name} changed while it was read (${code} at ${(e as { path?: string }).path ?? '?'}); stop the container and try again`, { cause: e });
    }
    throw e;
  }
}

/**
 * Leaves out what is below the container's mount destinations (volumes,
 * binds, tmpfs), as podman's diff and commit do: a volume's content is not
 * the container's. The mountpoint itself (the empty directory runc made
 * for it) stays a change, as in podman.
 */
function withoutMounts(store: Store, id: string, changes: Change[]): Change[] {
  // Destinations are host text (UTF-8); change paths are bytes (binary strings).
  const dests = store.db.all<{ destination: string }>('SELECT destination FROM container_mounts WHERE container_id = ?', id).map((r) => fromHost(r.destination));
  if (dests.length === 0) return changes;
  return changes.filter((c) => !dests.some((d) => c.path.startsWith(d + '/')));
}

export function removeContainer(store: Store, ref: string, opts: { force?: boolean } = {}): string {
  const c = resolveContainer(store, ref, { incomplete: true });
  const running = c.state === 'running' && runtimeHasIt(c.id);
  if (running && !opts.force) fail('EBUSY', `container ${c.name} is running; stop it or use rm -f`);
  if (c.state === 'creating' && c.creator_pid !== null && pidAlive(c.creator_pid)) fail('EBUSY', `container ${c.name} is still being created; try again when it is done`);
  // A run whose cowshed process was killed leaves the runtime's container running: stop it first.
  if (running) deleteRuntimeContainer(c.id);
  driverFor(store).remove(store, refOf(c));
  store.db.tx(() => store.db.run('DELETE FROM containers WHERE id = ?', c.id));
  rmSync(containerPaths(store, c.id).dir, { recursive: true, force: true });
  return c.id;
}
