// OCI runtime bundles: an image config plus a root filesystem become the
// config.json that runc (or crun) runs. The result is `runc spec`'s template
// adapted the way podman adapts it: process from the image config, podman's
// default capabilities, a private network namespace with only loopback
// (runc brings `lo` up in a new netns; like `podman run --network=none`).
//
// User and group names are resolved in the *image's* /etc/passwd and
// /etc/group, read through a resolver that keeps symlinks inside the rootfs:
// an image cannot make us read the host's files.

import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import type { ImageConfig } from '../oci/types.ts';
import { CowshedError, errno, fail } from '../util/errors.ts';
import { bin, fromHost, fsPath } from '../util/names.ts';

export interface RuntimeSpecOptions {
  config: ImageConfig;
  /** Absolute path of the container's root filesystem (referenced, not copied). */
  rootfs: string;
  /** Replaces the image's Cmd; the image's Entrypoint still comes first (podman semantics). */
  args?: string[];
  hostname?: string;
  /** KEY=VALUE entries that override the image's Env. */
  env?: string[];
  /** Allocate a terminal (runc then needs a terminal on its own stdin). */
  tty?: boolean;
  readonlyRootfs?: boolean;
  /** With readonlyRootfs: tmpfs on /tmp, /var/tmp and /run (podman's --read-only-tmpfs, default true). */
  readonlyTmpfs?: boolean;
  /** run -u: name or uid[:gid] (names resolved in the image's /etc/passwd and /etc/group); replaces the image's User. */
  user?: string;
  /** run -w: the working directory; replaces the image's WorkingDir. */
  workdir?: string;
  /** run --entrypoint: replaces the image's Entrypoint, and drops its Cmd (podman semantics). */
  entrypoint?: string[];
  /** Mounts after the defaults (volumes, binds, tmpfs), parents first. */
  mounts?: RuntimeSpec['mounts'];
}

/** The subset of the OCI runtime spec cowshed writes (runtime-spec 1.0.2). */
export interface RuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[]; inheritable: string[]; ambient: string[] };
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: { destination: string; type: string; source: string; options?: string[] }[];
  linux: {
    resources: { devices: { allow: boolean; access: string }[] };
    namespaces: { type: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_HOSTNAME = 'cowshed';

// podman 4's default_capabilities (containers.conf). Inheritable and ambient
// stay empty: since CVE-2022-27649 podman no longer fills inheritable.
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_NET_BIND_SERVICE',
  'CAP_SETFCAP', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_SETUID', 'CAP_SYS_CHROOT',
];

// runc spec's lists plus the two podman adds (/sys/fs/selinux, /sys/dev/block).
const MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/proc/scsi', '/sys/fs/selinux', '/sys/dev/block',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

// podman raises NOFILE to 1 MiB (the default fs.nr_open) for root
// containers, or to our own hard limit when that is lower: without
// CAP_SYS_RESOURCE (as in some VMs and nested containers) runc cannot raise
// it, and the container would fail to start.
const NOFILE_LIMIT = 1048576;

const MAX_ID = 4294967294;                 // (uid_t)-1 is "no change", never a real id
const MAX_DB_FILE_BYTES = 16 << 20;        // /etc/passwd or /etc/group; real ones are KiB
const MAX_SYMLINKS = 40;                   // the kernel's own limit for one lookup
const HOSTNAME_RE = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/** Builds the runtime spec for running `config` on `rootfs`. Reads the rootfs's /etc/passwd and /etc/group when needed. */
export function runtimeSpec(opts: RuntimeSpecOptions): RuntimeSpec {
  const image = opts.config.config ?? {};
  if (!isAbsolute(opts.rootfs)) fail('EINVAL', `rootfs must be an absolute path, got ${JSON.stringify(opts.rootfs)}`);
  const hostname = opts.hostname ?? DEFAULT_HOSTNAME;
  if (hostname.length > 253 || !HOSTNAME_RE.test(hostname)) {
    fail('EINVAL', `invalid hostname ${JSON.stringify(hostname)}: letters, digits, - and . (at most 63 per label)`);
  }

  // An entrypoint given on the command line drops the image's Cmd too (podman, docker).
  const entrypoint = opts.entrypoint ?? image.Entrypoint ?? [];
  const args = [...entrypoint, ...(opts.args ?? (opts.entrypoint ? [] : image.Cmd ?? []))];
  if (args.length === 0) fail('EINVAL', 'nothing to run: the image has no Entrypoint or Cmd; give a command');
  for (const a of args) {
    if (a.includes('\0')) fail('EINVAL', `command argument ${JSON.stringify(a)} contains a NUL byte`);
  }

  const user = resolveUser(opts.rootfs, opts.user ?? image.User ?? '');
  const tty = opts.tty ?? false;

  const env = new EnvList();
  for (const e of image.Env ?? []) env.set(e, 'image Env', false);
  if (!env.has('PATH')) env.set(DEFAULT_PATH, '', true);
  env.set(`HOSTNAME=${hostname}`, '', true);
  if (tty) env.set('TERM=xterm', '', true);
  if (!env.has('HOME')) env.set(`HOME=${user.home}`, '', true);
  for (const e of opts.env ?? []) env.set(e, 'environment', true);

  if (opts.workdir !== undefined && (!opts.workdir.startsWith('/') || opts.workdir.includes('\0'))) {
    fail('EINVAL', `the working directory ${JSON.stringify(opts.workdir)} must be an absolute path`);
  }
  const wd = opts.workdir ?? image.WorkingDir;
  const cwd = wd ? posix.resolve('/', wd) : '/';
  if (cwd.includes('\0')) fail('EFORMAT', 'image WorkingDir contains a NUL byte');
  const extra = opts.mounts ?? [];
  const readonly = opts.readonlyRootfs ?? false;
  // podman --read-only keeps /tmp, /var/tmp and /run writable (tmpfs) unless told not to, or mounted over.
  const roTmpfs = readonly && opts.readonlyTmpfs !== false
    ? ['/tmp', '/var/tmp', '/run'].filter((d) => !extra.some((m) => m.destination === d))
      .map((d) => ({ destination: d, type: 'tmpfs', source: 'tmpfs', options: ['rw', 'rprivate', 'nosuid', 'nodev', 'tmpcopyup'] }))
    : [];

  const root = user.uid === 0;
  const nofile = Math.min(NOFILE_LIMIT, hardNofileLimit() ?? NOFILE_LIMIT);
  const caps = [...DEFAULT_CAPABILITIES];
  const processUser: RuntimeSpec['process']['user'] = { uid: user.uid, gid: user.gid };
  if (user.additionalGids.length > 0) processUser.additionalGids = user.additionalGids;

  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: tty,
      user: processUser,
      args,
      env: env.list(),
      cwd,
      // A non-root user keeps the bounding set but holds no capabilities, as with podman.
      capabilities: { bounding: caps, effective: root ? caps : [], permitted: root ? caps : [], inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: nofile, soft: nofile }],
      // podman's default: setuid programs (su, ping) inside keep working.
      noNewPrivileges: false,
    },
    root: { path: opts.rootfs, readonly },
    hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      ...roTmpfs,
      ...extra,
    ],
    linux: {
      // Deny all device access; runc adds back its defaults (null, zero, tty, ...).
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      // No path on "network": a fresh netns where runc sets up loopback only.
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}

/** Our hard RLIMIT_NOFILE, from /proc/self/limits (Node has no getrlimit). */
function hardNofileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Writes `dir`/config.json (atomically). The rootfs stays where `root.path` points. */
export async function writeBundle(dir: string, spec: object): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.config.json.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(spec, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, join(dir, 'config.json'));
}

/** KEY=VALUE list where a later entry replaces an earlier one's value in place. */
class EnvList {
  private readonly entries = new Map<string, string>();
  set(entry: string, what: string, strict: boolean): void {
    const eq = entry.indexOf('=');
    if (eq <= 0 || entry.includes('\0')) {
      // A malformed image Env entry is skipped (as podman does); one we were given is an error.
      if (strict) fail('EINVAL', `invalid ${what} entry ${JSON.stringify(entry)}: expected KEY=VALUE`);
      return;
    }
    this.entries.set(entry.slice(0, eq), entry);
  }
  has(key: string): boolean { return this.entries.has(key); }
  list(): string[] { return [...this.entries.values()]; }
}

// ---- users and groups ------------------------------------------------------

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

interface PasswdEntry { name: string; uid: number; gid: number; home: string }
interface GroupEntry { name: string; gid: number; members: string[] }

/**
 * Resolves an image's User ("", "uid", "uid:gid", "name", "name:group", ...)
 * the way runc's GetExecUser does: a name must exist in the image's
 * /etc/passwd; without an explicit group the user's primary group and
 * /etc/group memberships apply.
 */
export function resolveUser(rootfs: string, spec: string): ResolvedUser {
  if (spec.includes('\0')) fail('EFORMAT', 'image User contains a NUL byte');
  const colon = spec.indexOf(':');
  const userPart = colon < 0 ? spec : spec.slice(0, colon);
  const groupPart = colon < 0 ? '' : spec.slice(colon + 1);

  let passwdText: string | undefined | null = null;   // null: not read yet
  const passwdFile = (): string | undefined => (passwdText === null ? (passwdText = readImageFile(rootfs, '/etc/passwd')) : passwdText);
  const passwdEntries = (): PasswdEntry[] => parsePasswd(passwdFile());
  let groups: GroupEntry[] | undefined;
  const groupEntries = (): GroupEntry[] => (groups ??= parseGroup(readImageFile(rootfs, '/etc/group')));

  let uid: number;
  let match: PasswdEntry | undefined;
  const numericUser = userPart === '' ? 0 : parseId(userPart);
  if (numericUser !== undefined) {
    uid = numericUser;
    match = passwdEntries().find((p) => p.uid === uid);
  } else {
    if (passwdFile() === undefined) {
      fail('EINVAL', `cannot run as user ${JSON.stringify(userPart)}: the image has no /etc/passwd (use a numeric uid)`);
    }
    match = passwdEntries().find((p) => p.name === userPart);
    // Exit 126 as podman: the container cannot start.
    if (!match) throw new CowshedError('EINVAL', `user ${JSON.stringify(userPart)} not found in the image's /etc/passwd`, { exitCode: 126 });
    uid = match.uid;
  }

  let gid = match?.gid ?? 0;
  let additionalGids: number[] = [];
  if (groupPart !== '') {
    const numericGroup = parseId(groupPart);
    if (numericGroup !== undefined) {
      gid = numericGroup;
    } else {
      const g = groupEntries().find((e) => e.name === groupPart);
      if (!g) throw new CowshedError('EINVAL', `group ${JSON.stringify(groupPart)} not found in the image's /etc/group`, { exitCode: 126 });
      gid = g.gid;
    }
  } else if (match) {
    const name = match.name;
    additionalGids = [...new Set(groupEntries().filter((g) => g.members.includes(name)).map((g) => g.gid))].filter((g) => g !== gid);
  }
  return { uid, gid, additionalGids, home: match?.home || '/' };
}

function parseId(s: string): number | undefined {
  if (!/^[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  if (n > MAX_ID) fail('EINVAL', `user or group id ${s} is out of range (0..${MAX_ID})`);
  return n;
}

function parsePasswd(text: string | undefined): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || line.startsWith('#')) continue;
    const uid = /^[0-9]+$/.test(f[2]!) ? Number(f[2]) : NaN;
    const gid = /^[0-9]+$/.test(f[3]!) ? Number(f[3]) : NaN;
    if (!(uid <= MAX_ID) || !(gid <= MAX_ID) || f[0] === '') continue;
    out.push({ name: f[0]!, uid, gid, home: f[5]! });
  }
  return out;
}

function parseGroup(text: string | undefined): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || line.startsWith('#')) continue;
    const gid = /^[0-9]+$/.test(f[2]!) ? Number(f[2]) : NaN;
    if (!(gid <= MAX_ID) || f[0] === '') continue;
    out.push({ name: f[0]!, gid, members: f[3]!.split(',').filter((m) => m !== '') });
  }
  return out;
}

/**
 * Reads a small regular file of the image at `path`, resolving symlinks as
 * if `rootfs` were `/` (absolute targets and `..` never leave it).
 * undefined when it does not exist.
 */
export function readImageFile(rootfs: string, path: string): string | undefined {
  const host = resolveInRoot(rootfs, path);
  if (host === undefined) return undefined;
  let fd: number;
  try {
    fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw new CowshedError('EHOSTILE', `cannot read the image's ${path}: ${errno(e) ?? String(e)}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) fail('EHOSTILE', `the image's ${path} is not a regular file`);
    if (st.size > MAX_DB_FILE_BYTES) fail('EFORMAT', `the image's ${path} is ${st.size} bytes, more than the limit of ${MAX_DB_FILE_BYTES}`);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, n);
      if (r === 0) break;
      n += r;
    }
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function resolveInRoot(rootfs: string, path: string): Buffer | undefined {
  // Names are bytes: link targets are read as such (a lossy decode would miss a target that is not UTF-8).
  const pending = fromHost(path).split('/').filter((c) => c !== '' && c !== '.');
  const root = fromHost(rootfs);
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const comp = pending.shift()!;
    if (comp === '..') { resolved.pop(); continue; }
    if (comp === '.') continue;
    const host = fsPath([root, ...resolved, comp].join('/'));
    let st;
    try {
      st = lstatSync(host);
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return undefined;
      throw new CowshedError('ETOOL', `cannot look up ${path} in the image: ${errno(e) ?? String(e)}`, { cause: e });
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) fail('EHOSTILE', `too many symlinks resolving ${path} in the image`);
      const target = bin(readlinkSync(host, { encoding: 'buffer' }));
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
      continue;
    }
    resolved.push(comp);
  }
  return fsPath([root, ...resolved].join('/'));
}
