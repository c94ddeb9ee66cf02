// run's mounts as podman spells them: -v/--volume, --mount and --tmpfs are
// parsed into requests; prepareMounts turns them into the OCI runtime
// spec's mount entries for one container, records them (and makes the
// named volumes they use) in the store, and copies the image's content into
// a new volume that shadows it (podman's copy-up).
//
// Paths are resolved once:
//   - a bind mount's host path with realpath when the command line is read;
//     runc gets that path, never the one typed;
//   - a destination inside the container's root, with symlinks followed as
//     if the root were / (an absolute or `..` target never leaves it), by
//     cowshed before runc starts, so the copy-up reads the container's own
//     files and runc is handed a path with no symlink in it (runc also
//     resolves destinations within the root itself).
import { spawnSync } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { isAbsolute, join, posix, resolve } from 'node:path';
import type { Store } from '../store/store.ts';
import { CowshedError, errno, fail } from '../util/errors.ts';
import { bin, escapeName, fromHost, fsPath, utf8Of } from '../util/names.ts';
import { anonymousVolumeName, checkVolumeName, claimCopyUp, insertVolume, volumeData } from './volumes.ts';

export type MountType = 'bind' | 'volume' | 'tmpfs';

export interface MountRequest {
  type: MountType;
  /** bind: the host path (already resolved); volume: its name (undefined: a new anonymous volume). */
  source?: string;
  /** Absolute path in the container, as given (normalised). */
  destination: string;
  readonly: boolean;
  /** Further OCI mount options (nosuid, propagation, size=, mode=, ...). */
  options: string[];
  /** volume: copy the image's content at the destination into a new volume (default true, podman's "copy"). */
  copy: boolean;
}

export interface OciMount { destination: string; type: string; source: string; options: string[] }

const MAX_SYMLINKS = 40;
const PROPAGATION = new Set(['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave', 'unbindable', 'runbindable']);
const FLAG_PAIRS: Record<string, string> = { suid: 'nosuid', nosuid: 'suid', dev: 'nodev', nodev: 'dev', exec: 'noexec', noexec: 'exec' };
const TMPFS_VALUE_RE = /^(size=[0-9]+[kmgKMG%]?|mode=[0-7]{3,4}|uid=[0-9]+|gid=[0-9]+|nr_inodes=[0-9]+[kmgKMG]?)$/;

const bad = (what: string, msg: string): never => fail('EINVAL', `${what}: ${msg}`);

function checkDestination(dst: string, what: string): string {
  if (dst === '') bad(what, 'no destination in the container');
  if (!isAbsolute(dst)) bad(what, `the destination ${JSON.stringify(dst)} must be an absolute path`);
  if (dst.includes('\0')) bad(what, 'the destination contains a NUL byte');
  const norm = posix.normalize(dst).replace(/\/+$/, '');
  if (norm === '' || norm === '/') bad(what, 'cannot mount over the container\'s root (/)');
  return norm;
}

/** The host path of a bind mount, resolved once (symlinks followed now, on the host, never again). */
function hostPath(src: string, what: string): string {
  if (src.includes('\0')) bad(what, 'the source contains a NUL byte');
  try {
    return realpathSync(resolve(src));
  } catch (e) {
    return fail('ENOENT', `${what}: the host path ${src} does not exist (${errno(e) ?? String(e)})`);
  }
}

/** One option of -v/--mount that is a mount flag or propagation; false when it is not one. */
function flagOption(opt: string, out: string[]): boolean {
  if (opt in FLAG_PAIRS || PROPAGATION.has(opt)) {
    out.push(opt);
    return true;
  }
  return false;
}

/** `-v [SRC:]DST[:OPTS]` (OPTS: ro, rw, z, Z, [no]suid, [no]dev, [no]exec, [r]bind, propagation, [no]copy). */
export function parseVolumeFlag(spec: string): MountRequest {
  const what = `-v ${spec}`;
  const parts = spec.split(':');
  if (parts.length > 3 || spec === '') bad(what, 'expected [SOURCE:]DESTINATION[:OPTIONS]');
  let src: string | undefined;
  let dst: string;
  let opts = '';
  if (parts.length === 1) dst = parts[0]!;
  else if (parts.length === 2 && parts[1]!.startsWith('/')) [src, dst] = [parts[0]!, parts[1]!];
  else if (parts.length === 2) [dst, opts] = [parts[0]!, parts[1]!];
  else [src, dst, opts] = [parts[0]!, parts[1]!, parts[2]!];
  const isBind = src !== undefined && (src.startsWith('/') || src.startsWith('.'));
  const req: MountRequest = { type: isBind ? 'bind' : 'volume', destination: checkDestination(dst, what), readonly: false, options: [], copy: true };
  if (src === '') bad(what, 'empty source');
  if (isBind) req.source = hostPath(src!, what);
  else if (src !== undefined) { checkVolumeName(src); req.source = src; }
  let rw = 0;
  for (const o of opts === '' ? [] : opts.split(',')) {
    if (o === 'ro' || o === 'rw') { req.readonly = o === 'ro'; rw++; continue; }
    if (o === 'z' || o === 'Z') continue;   // SELinux relabelling: no SELinux here, accepted as podman does without it
    if (o === 'rbind' || o === 'bind') { req.options.push(o); continue; }
    if (o === 'copy' || o === 'nocopy') { req.copy = o === 'copy'; continue; }
    if (flagOption(o, req.options)) continue;
    if (o === 'O' || o === 'U' || o.startsWith('idmap')) fail('EUNSUPPORTED', `${what}: option ${o} is not supported by cowshed`);
    bad(what, `unknown option ${JSON.stringify(o)}`);
  }
  if (rw > 1) bad(what, 'ro and rw given more than once');
  return req;
}

/** `--mount type=bind|volume|tmpfs,src=…,dst=…[,ro][,…]` (podman's keys). */
export function parseMountFlag(spec: string): MountRequest {
  const what = `--mount ${spec}`;
  let type: MountType | undefined;
  let src: string | undefined;
  let dst: string | undefined;
  let readonly = false;
  let copy = true;
  const options: string[] = [];
  const boolOf = (k: string, v: string | undefined): boolean => {
    if (v === undefined || v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    return bad(what, `${k} takes true or false, not ${JSON.stringify(v)}`);
  };
  for (const field of spec.split(',')) {
    if (field === '') continue;
    const eq = field.indexOf('=');
    const k = eq < 0 ? field : field.slice(0, eq);
    const v = eq < 0 ? undefined : field.slice(eq + 1);
    switch (k) {
      case 'type':
        if (v !== 'bind' && v !== 'volume' && v !== 'tmpfs') bad(what, `type must be bind, volume or tmpfs, not ${JSON.stringify(v)}`);
        type = v as MountType;
        break;
      case 'src': case 'source': src = v ?? ''; break;
      case 'dst': case 'destination': case 'target': dst = v ?? ''; break;
      case 'ro': case 'readonly': readonly = boolOf(k, v); break;
      case 'rw': readonly = !boolOf(k, v); break;
      case 'bind-propagation':
        if (v === undefined || !PROPAGATION.has(v)) bad(what, `bind-propagation must be one of ${[...PROPAGATION].join(', ')}`);
        options.push(v!);
        break;
      case 'bind-nonrecursive': if (boolOf(k, v)) options.push('bind'); break;
      case 'relabel': case 'consistency': break;   // no SELinux; consistency is a Docker Desktop hint
      case 'z': case 'Z': break;
      case 'nocopy': case 'volume-nocopy': copy = !boolOf(k, v); break;
      case 'copy': copy = boolOf(k, v); break;
      case 'tmpfs-size':
        if (v === undefined || !/^[0-9]+[kmgKMG]?$/.test(v)) bad(what, `tmpfs-size must be a number of bytes with an optional k, m or g, not ${JSON.stringify(v)}`);
        options.push(`size=${v}`);
        break;
      case 'tmpfs-mode':
        if (v === undefined || !/^[0-7]{1,4}$/.test(v)) bad(what, `tmpfs-mode must be octal, not ${JSON.stringify(v)}`);
        options.push(`mode=${v}`);
        break;
      default:
        if (v === undefined && flagOption(k, options)) break;
        bad(what, `unknown option ${JSON.stringify(field)}`);
    }
  }
  if (type === undefined) bad(what, 'type=bind, type=volume or type=tmpfs is required');
  if (dst === undefined) bad(what, 'dst= (or destination=, target=) is required');
  const req: MountRequest = { type: type!, destination: checkDestination(dst!, what), readonly, options, copy };
  if (type !== 'tmpfs' && options.some((o) => o.startsWith('size=') || o.startsWith('mode='))) bad(what, 'tmpfs-size and tmpfs-mode are for type=tmpfs');
  if (type === 'bind') {
    if (!src) bad(what, 'src= is required for type=bind');
    req.source = hostPath(src!, what);
  } else if (type === 'volume') {
    if (src) { checkVolumeName(src); req.source = src; }
  } else if (src) bad(what, 'type=tmpfs takes no source');
  return req;
}

/** `--tmpfs DST[:OPTS]` (OPTS: ro, rw, size=, mode=, uid=, gid=, [no]suid, [no]dev, [no]exec, [no]tmpcopyup). */
export function parseTmpfsFlag(spec: string): MountRequest {
  const what = `--tmpfs ${spec}`;
  const colon = spec.indexOf(':');
  const dst = colon < 0 ? spec : spec.slice(0, colon);
  const req: MountRequest = { type: 'tmpfs', destination: checkDestination(dst, what), readonly: false, options: [], copy: true };
  for (const o of colon < 0 ? [] : spec.slice(colon + 1).split(',')) {
    if (o === '') continue;
    if (o === 'ro' || o === 'rw') { req.readonly = o === 'ro'; continue; }
    if (o === 'tmpcopyup' || o === 'notmpcopyup') { req.copy = o === 'tmpcopyup'; continue; }
    if (TMPFS_VALUE_RE.test(o) || flagOption(o, req.options)) { if (!req.options.includes(o)) req.options.push(o); continue; }
    bad(what, `unknown option ${JSON.stringify(o)}`);
  }
  return req;
}

/** Refuses two mounts on one destination, as podman does. */
export function checkDuplicates(reqs: MountRequest[]): void {
  const seen = new Set<string>();
  for (const r of reqs) {
    if (seen.has(r.destination)) fail('EINVAL', `${r.destination}: more than one mount on this destination`);
    seen.add(r.destination);
  }
}

// ---- resolving in the container's root -------------------------------------

export interface InRoot {
  /** The path inside the container with every symlink resolved (no symlink left in it). */
  path: string;
  /** The same on the host (below rootfs). */
  host: string;
  /** Whether it exists (a trailing part that does not is taken literally). */
  exists: boolean;
}

/**
 * Resolves `path` inside `rootfs` the way runc's securejoin does: symlinks
 * are read and followed as if rootfs were /, `..` stops at the root, and
 * whatever does not exist yet is appended as given. Never returns a path
 * outside rootfs. The container must not be running (nothing may swap a
 * component meanwhile): run calls it before starting the runtime.
 */
export function resolveInContainer(rootfs: string, path: string): InRoot {
  // Names are bytes: components and link targets are read as binary strings
  // (a lossy decode would send a mount to a name that is not the image's).
  const pending = fromHost(path).split('/').filter((c) => c !== '' && c !== '.');
  const root = fromHost(rootfs);
  const resolved: string[] = [];
  let links = 0;
  let exists = true;
  while (pending.length > 0) {
    const comp = pending.shift()!;
    if (comp === '..') { resolved.pop(); continue; }
    if (!exists) { resolved.push(comp); continue; }
    const host = [root, ...resolved, comp].join('/');
    let st;
    try {
      st = lstatSync(fsPath(host));
    } catch (e) {
      const code = errno(e);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new CowshedError('ETOOL', `cannot look up ${path} in the container: ${code ?? String(e)}`, { cause: e });
      exists = false;
      resolved.push(comp);
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) fail('EHOSTILE', `too many symlinks resolving ${path} in the container`);
      const target = bin(readlinkSync(fsPath(host), { encoding: 'buffer' }));
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
      continue;
    }
    resolved.push(comp);
  }
  const inside = '/' + resolved.join('/');
  // The OCI runtime config is JSON read by Go, which cannot carry a name that is not UTF-8.
  const text = utf8Of(inside);
  if (text === undefined) fail('EINVAL', `${path} resolves in the container to "${escapeName(inside)}", a name that is not UTF-8, which the OCI runtime cannot be given`);
  return { path: text, host: join(rootfs, ...text.split('/')), exists };
}

// ---- preparing a container's mounts -----------------------------------------

export interface PreparedMount {
  request: MountRequest;
  oci: OciMount;
  /** The volume's name (named and anonymous volumes). */
  volume?: string;
  anonymous: boolean;
}

/** The mount flags (nosuid, nodev, noexec) of the filesystem holding `path`, from /proc/self/mountinfo. */
function mountFlagsOf(path: string): string[] {
  let best = '';
  let opts: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const mp = f[4]?.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (!mp) continue;
    if ((path === mp || path.startsWith(mp === '/' ? '/' : mp + '/')) && mp.length >= best.length) {
      best = mp;
      opts = (f[5] ?? '').split(',');
    }
  }
  return ['nosuid', 'nodev', 'noexec'].filter((o) => opts.includes(o));
}

/**
 * OCI mounts for `reqs` in container `containerId` (root at `rootfs`,
 * mounted, not running): records them and makes the volumes they name in
 * one transaction, then copies the image's content into each volume that is
 * new and shadows some. Returns them sorted so parents mount before children.
 */
export function prepareMounts(store: Store, containerId: string, rootfs: string, reqs: MountRequest[]): PreparedMount[] {
  checkDuplicates(reqs);
  const prepared: PreparedMount[] = reqs.map((r) => {
    const dst = resolveInContainer(rootfs, r.destination);
    if (dst.path === '/') fail('EINVAL', `${r.destination} resolves to the container's root (/) through a symlink; choose another destination`);
    const rw = r.readonly ? 'ro' : 'rw';
    const user = r.options;
    const has = (o: string): boolean => user.includes(o) || (FLAG_PAIRS[o] !== undefined && user.includes(FLAG_PAIRS[o]));
    const defaults = (list: string[]): string[] => list.filter((o) => !has(o));
    const propagation = user.some((o) => PROPAGATION.has(o)) ? [] : ['rprivate'];
    if (r.type === 'tmpfs') {
      // podman's --tmpfs defaults: rw,noexec,nosuid,nodev, the image's content copied up (runc's tmpcopyup).
      const options = [rw, ...propagation, ...user, ...defaults(['noexec', 'nosuid', 'nodev']), ...(r.copy ? ['tmpcopyup'] : [])];
      return { request: r, anonymous: false, oci: { destination: dst.path, type: 'tmpfs', source: 'tmpfs', options } };
    }
    const bindKind = user.includes('bind') || user.includes('rbind') ? [] : ['rbind'];
    if (r.type === 'bind') {
      // runc cannot bind a mount with fewer restrictions than its source has: keep the source's.
      const options = [...bindKind, rw, ...propagation, ...user, ...defaults(mountFlagsOf(r.source!))];
      return { request: r, anonymous: false, oci: { destination: dst.path, type: 'bind', source: r.source!, options } };
    }
    const name = r.source ?? anonymousVolumeName();
    // podman gives named volumes nosuid,nodev.
    const options = [...bindKind, rw, ...propagation, ...user, ...defaults(['nosuid', 'nodev'])];
    return { request: r, volume: name, anonymous: r.source === undefined, oci: { destination: dst.path, type: 'bind', source: volumeData(store, name), options } };
  });
  checkDuplicates(prepared.map((p) => ({ ...p.request, destination: p.oci.destination })));

  const copyUps = store.db.tx(() => {
    if (!store.db.get('SELECT 1 FROM containers WHERE id = ?', containerId)) fail('ENOENT', 'the container was removed while its mounts were being prepared');
    const claimed: PreparedMount[] = [];
    prepared.forEach((p, idx) => {
      if (p.volume !== undefined) {
        insertVolume(store, p.volume, { anonymous: p.anonymous });
        if (claimCopyUp(store, p.volume) && p.request.copy) claimed.push(p);
      }
      store.db.run('INSERT INTO container_mounts (container_id, idx, type, source, destination, options, volume) VALUES (?, ?, ?, ?, ?, ?, ?)',
        containerId, idx, p.request.type, p.volume ?? p.oci.source, p.oci.destination, JSON.stringify(p.oci.options), p.volume ?? null);
    });
    return claimed;
  });
  for (const p of copyUps) copyUp(rootfs, p.oci.destination, p.oci.source);
  return prepared.sort((a, b) => depth(a.oci.destination) - depth(b.oci.destination));
}

const depth = (p: string): number => p.split('/').length;

/**
 * podman's copy-up: a new, empty volume mounted where the image has a
 * directory starts with a copy of that directory (contents, owners, modes,
 * timestamps, xattrs: cp -a), the volume's own directory included.
 * Claimed in the transaction that records the mount, so only the first
 * container copies; as with podman, a second container started with the
 * same new volume while that copy runs may see it half filled.
 */
function copyUp(rootfs: string, destination: string, data: string): void {
  const src = resolveInContainer(rootfs, destination);
  if (!src.exists) return;
  let st;
  try { st = lstatSync(src.host); } catch { return; }
  if (!st.isDirectory()) return;
  if (readdirSync(data).length > 0) return;
  const r = spawnSync('cp', ['-a', '-T', '--', src.host, data], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) {
    throw new CowshedError('ETOOL', `copying the image's ${destination} into its volume failed: ${(r.stderr ?? '').trim().split('\n').pop() ?? `exit ${r.status}`}`);
  }
}

/** The destinations a container mounts (for diff and commit, which leave them out). */
export function mountDestinations(store: Store, containerId: string): string[] {
  return store.db.all<{ destination: string }>('SELECT destination FROM container_mounts WHERE container_id = ? ORDER BY idx', containerId).map((r) => r.destination);
}

/** The anonymous volumes a container mounts (run --rm removes them with it). */
export function anonymousVolumesOf(store: Store, containerId: string): string[] {
  return store.db.all<{ volume: string }>(
    'SELECT m.volume FROM container_mounts m JOIN volumes v ON v.name = m.volume WHERE m.container_id = ? AND v.anonymous = 1', containerId,
  ).map((r) => r.volume);
}
