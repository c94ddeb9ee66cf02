// registries.conf (containers-registries.conf(5), the v2 TOML format):
// which registries are insecure or blocked, their mirrors, where an
// unqualified name is looked for, and short-name aliases. Files and merge
// rules follow containers/image's sysregistriesv2:
//   - $HOME/.config/containers/registries.conf if it exists (then the
//     system file is not read, and drop-ins come from
//     $HOME/.config/containers/registries.conf.d/), else
//     /etc/containers/registries.conf, then the drop-ins of
//     /etc/containers/registries.conf.d/ and
//     $HOME/.config/containers/registries.conf.d/ in name order;
//   - `--registries-conf FILE` (or $CONTAINERS_REGISTRIES_CONF) replaces
//     all of them: only that file is read;
//   - a later file replaces a [[registry]] of the same prefix, the search
//     list if it sets one, and aliases one by one;
//   - the alias cache podman writes (short-name-aliases.conf) wins over the
//     aliases of registries.conf.
// A reference is matched against the prefixes, the longest match wins;
// `*.example.com` matches any subdomain.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { CowshedError, errno } from '../util/errors.ts';
import { parseRegistryRef, type RegistryRef } from './client.ts';

export interface MirrorConf { location: string; insecure: boolean; pullFromMirror: 'all' | 'digest-only' | 'tag-only' }

export interface RegistryConf {
  prefix: string;
  /** Where the prefix really is; '' for a wildcard prefix (the reference stays as it is). */
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrors: MirrorConf[];
  /** The file that defined it (errors name it). */
  file: string;
}

export interface RegistriesConf {
  registries: RegistryConf[];
  unqualifiedSearch: string[];
  aliases: Map<string, { target: string; file: string }>;
  /** Files read, in order. */
  files: string[];
}

const SYSTEM_FILE = '/etc/containers/registries.conf';
const SYSTEM_DIR = '/etc/containers/registries.conf.d';

function userDir(): string { return join(process.env.HOME || homedir(), '.config', 'containers'); }

/** The files to read, in order (later ones override). */
export function registriesConfFiles(explicit?: string): string[] {
  const file = explicit ?? (process.env.CONTAINERS_REGISTRIES_CONF || undefined);
  if (file !== undefined) return [file];
  const userFile = join(userDir(), 'registries.conf');
  const userDropIns = join(userDir(), 'registries.conf.d');
  const dropIns = (dir: string): string[] => {
    let names: string[];
    try { names = readdirSync(dir); } catch { return []; }
    return names.filter((n) => n.endsWith('.conf')).sort().map((n) => join(dir, n));
  };
  if (existsSync(userFile)) return [userFile, ...dropIns(userDropIns)];
  return [...(existsSync(SYSTEM_FILE) ? [SYSTEM_FILE] : []), ...dropIns(SYSTEM_DIR), ...dropIns(userDropIns)];
}

function aliasCacheFile(): string {
  return process.getuid?.() === 0 ? '/var/cache/containers/short-name-aliases.conf' : join(process.env.HOME || homedir(), '.cache', 'containers', 'short-name-aliases.conf');
}

class ConfError extends CowshedError {
  constructor(file: string, line: number | undefined, what: string) {
    super('EFORMAT', `${file}${line ? `:${line}` : ''}: ${what}; fix the file (containers-registries.conf(5))`, { exitCode: 2 });
  }
}

/** Line numbers of the [[registry]] headers, and of keys, for errors about values. */
function lineFinder(text: string): { registry(n: number): number | undefined; key(re: RegExp): number | undefined } {
  const lines = text.split('\n');
  const regLines: number[] = [];
  lines.forEach((l, i) => { if (/^\s*\[\[\s*"?registry"?\s*\]\]/.test(l)) regLines.push(i + 1); });
  return {
    registry: (n) => regLines[n],
    key: (re) => { const i = lines.findIndex((l) => re.test(l)); return i >= 0 ? i + 1 : undefined; },
  };
}

function stripLocation(file: string, line: number | undefined, what: string, s: string): string {
  const t = s.replace(/\/+$/, '');
  if (/^[a-z]+:\/\//i.test(t)) throw new ConfError(file, line, `${what} ${JSON.stringify(s)}: no URL scheme (write host[:port][/namespace])`);
  return t;
}

interface Parsed { registries: RegistryConf[]; search?: string[]; aliases: Map<string, string> }

function parseFile(file: string, text: string): Parsed {
  let doc: Record<string, unknown>;
  try { doc = parseToml(text) as Record<string, unknown>; } catch (e) {
    if (e instanceof TomlError) throw new ConfError(file, e.line, `not valid TOML: ${e.message.split('\n')[0].replace(/^Invalid TOML document: /, '')}`);
    throw e;
  }
  const at = lineFinder(text);
  const out: Parsed = { registries: [], aliases: new Map() };
  const isStr = (v: unknown): v is string => typeof v === 'string';
  const bool = (v: unknown, what: string, line: number | undefined): boolean => {
    if (v === undefined) return false;
    if (typeof v !== 'boolean') throw new ConfError(file, line, `${what} must be true or false`);
    return v;
  };
  if ('registries' in doc) throw new ConfError(file, at.key(/^\s*\[\s*registries\b/), 'the v1 format ([registries.search], [registries.insecure], [registries.block]) is not read: write [[registry]] tables and unqualified-search-registries');
  const search = doc['unqualified-search-registries'];
  if (search !== undefined) {
    const line = at.key(/^\s*"?unqualified-search-registries"?\s*=/);
    if (!Array.isArray(search) || !search.every(isStr)) throw new ConfError(file, line, 'unqualified-search-registries must be a list of strings');
    out.search = search.map((s) => {
      const r = stripLocation(file, line, 'unqualified-search-registries entry', s);
      if (r === '' || r.includes('/')) throw new ConfError(file, line, `unqualified-search-registries entry ${JSON.stringify(s)}: a registry host[:port], without a namespace`);
      return r;
    });
  }
  const regs = doc.registry;
  if (regs !== undefined) {
    if (!Array.isArray(regs)) throw new ConfError(file, at.key(/^\s*"?registry"?\s*=/), 'registry must be [[registry]] tables');
    regs.forEach((raw: unknown, i: number) => {
      const line = at.registry(i);
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfError(file, line, `[[registry]] number ${i + 1} is not a table`);
      const r = raw as Record<string, unknown>;
      for (const k of ['prefix', 'location'] as const) if (r[k] !== undefined && !isStr(r[k])) throw new ConfError(file, line, `[[registry]] ${k} must be a string`);
      let location = r.location === undefined ? '' : stripLocation(file, line, 'location', r.location as string);
      let prefix = r.prefix === undefined ? '' : stripLocation(file, line, 'prefix', r.prefix as string);
      if (prefix === '' && location === '') throw new ConfError(file, line, '[[registry]] needs a location or a prefix');
      if (prefix === '') prefix = location;
      if (prefix.startsWith('*.')) {
        if (prefix.slice(2) === '' || /[/:@]/.test(prefix)) throw new ConfError(file, line, `wildcard prefix ${JSON.stringify(prefix)}: only *.domain, without port or namespace`);
        location = '';
      } else if (prefix.includes('*')) {
        throw new ConfError(file, line, `prefix ${JSON.stringify(prefix)}: a wildcard only as *.domain`);
      } else if (location === '') {
        location = prefix;
      }
      const mirrors: MirrorConf[] = [];
      const rawMirrors = r.mirror;
      if (rawMirrors !== undefined && !Array.isArray(rawMirrors)) throw new ConfError(file, line, '[[registry.mirror]] must be tables');
      for (const m of (rawMirrors ?? []) as unknown[]) {
        if (typeof m !== 'object' || m === null) throw new ConfError(file, line, '[[registry.mirror]] must be tables');
        const mm = m as Record<string, unknown>;
        if (!isStr(mm.location) || mm.location === '') throw new ConfError(file, line, `a mirror of ${prefix} has no location`);
        const pfm = mm['pull-from-mirror'] ?? 'all';
        if (pfm !== 'all' && pfm !== 'digest-only' && pfm !== 'tag-only') throw new ConfError(file, line, `pull-from-mirror of mirror ${mm.location} must be all, digest-only or tag-only`);
        mirrors.push({ location: stripLocation(file, line, 'mirror location', mm.location), insecure: bool(mm.insecure, `insecure of mirror ${mm.location}`, line), pullFromMirror: pfm });
      }
      if (bool(r['mirror-by-digest-only'], 'mirror-by-digest-only', line)) for (const m of mirrors) m.pullFromMirror = 'digest-only';
      out.registries.push({
        prefix, location, mirrors, file,
        insecure: bool(r.insecure, `insecure of ${prefix}`, line),
        blocked: bool(r.blocked, `blocked of ${prefix}`, line),
      });
    });
  }
  const aliases = doc.aliases;
  if (aliases !== undefined) {
    if (typeof aliases !== 'object' || aliases === null || Array.isArray(aliases)) throw new ConfError(file, at.key(/^\s*\[\s*aliases\s*\]/), '[aliases] must be a table of "name" = "registry/repository"');
    for (const [name, target] of Object.entries(aliases as Record<string, unknown>)) {
      const line = at.key(new RegExp(`^\\s*"?${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"?\\s*=`));
      if (!isStr(target)) throw new ConfError(file, line, `alias ${JSON.stringify(name)} must be a string`);
      if (!isShortName(name) || /[:@]/.test(name)) throw new ConfError(file, line, `alias ${JSON.stringify(name)}: an alias is a short name without registry, tag or digest`);
      if (isShortName(target) || /@|:[^/]*$/.test(target.replace(/^[^/]*\//, ''))) throw new ConfError(file, line, `alias ${JSON.stringify(name)} = ${JSON.stringify(target)}: the target must name its registry, without tag or digest`);
      try { parseRegistryRef(target); } catch (e) { throw new ConfError(file, line, `alias ${JSON.stringify(name)}: ${(e as Error).message}`); }
      out.aliases.set(name, target);
    }
  }
  return out;
}

function readConf(file: string): string {
  try { return readFileSync(file, 'utf8'); } catch (e) {
    throw new CowshedError(errno(e) === 'ENOENT' ? 'ENOENT' : 'EINVAL', `${file}: cannot read the registries configuration (${errno(e) ?? String(e)})`, { exitCode: 2 });
  }
}

const cache = new Map<string, RegistriesConf>();

/** The merged configuration (cached per process). `explicit`: --registries-conf. */
export function loadRegistriesConf(explicit?: string): RegistriesConf {
  const files = registriesConfFiles(explicit);
  const key = files.join('\0');
  const hit = cache.get(key);
  if (hit) return hit;
  const byPrefix = new Map<string, RegistryConf>();
  let search: string[] = [];
  const aliases = new Map<string, { target: string; file: string }>();
  for (const file of files) {
    const p = parseFile(file, readConf(file));
    for (const r of p.registries) byPrefix.set(r.prefix, r);
    if (p.search !== undefined) search = p.search;
    for (const [k, v] of p.aliases) aliases.set(k, { target: v, file });
  }
  const explicitGiven = (explicit ?? (process.env.CONTAINERS_REGISTRIES_CONF || undefined)) !== undefined;
  const aliasCache = aliasCacheFile();
  if (!explicitGiven && existsSync(aliasCache)) {
    for (const [k, v] of parseFile(aliasCache, readConf(aliasCache)).aliases) aliases.set(k, { target: v, file: aliasCache });
  }
  const conf: RegistriesConf = {
    registries: [...byPrefix.values()].sort((a, b) => b.prefix.length - a.prefix.length),
    unqualifiedSearch: search,
    aliases,
    files,
  };
  cache.set(key, conf);
  return conf;
}

// ---------------------------------------------------------------- matching

/** containers/image's refMatchingPrefix: the length of ref that the prefix matches, or -1. */
export function matchPrefix(ref: string, prefix: string): number {
  if (prefix.startsWith('*.')) {
    const dom = prefix.slice(1); // ".example.com"
    const i = ref.indexOf(dom);
    if (i < 0 || ref.slice(0, i).includes('/')) return -1;
    const end = i + dom.length;
    if (end === ref.length || ':/@'.includes(ref[end])) return end;
    return -1;
  }
  if (ref.length < prefix.length || !ref.startsWith(prefix)) return -1;
  if (ref.length === prefix.length) return prefix.length;
  return ':/@'.includes(ref[prefix.length]) ? prefix.length : -1;
}

/** The [[registry]] whose prefix matches `name` (registry/repository) best, if any. */
export function findRegistry(conf: RegistriesConf, name: string): RegistryConf | undefined {
  let best: RegistryConf | undefined;
  let bestLen = -1;
  for (const r of conf.registries) {
    const n = matchPrefix(name, r.prefix);
    if (n > bestLen) { best = r; bestLen = n; }
  }
  return best;
}

const nameOf = (ref: RegistryRef): string => `${ref.registry}/${ref.repository}`;

/** Refuses a blocked registry, in one line naming the file. */
export function checkNotBlocked(conf: RegistriesConf, ref: RegistryRef): RegistryConf | undefined {
  const r = findRegistry(conf, nameOf(ref));
  if (r?.blocked) throw new CowshedError('EINVAL', `${nameOf(ref)}: the registry ${r.prefix} is blocked in ${r.file}; remove blocked = true there to use it`, { exitCode: 1 });
  return r;
}

export interface PullEndpoint {
  /** The reference at this endpoint (the mirror's host and namespace). */
  ref: RegistryRef;
  mirror: boolean;
  /** registries.conf marks it insecure (HTTPS without verification, or plain HTTP). */
  insecure: boolean;
}

function rewrite(ref: RegistryRef, prefixLen: number, location: string): RegistryRef {
  const name = nameOf(ref);
  const rewritten = location + name.slice(prefixLen);
  const r = parseRegistryRef(`${rewritten}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`);
  return { ...r, tag: ref.tag, digest: ref.digest };
}

/** Where to pull `ref` from, in order: its mirrors, then the registry itself (its location). */
export function pullEndpoints(conf: RegistriesConf, ref: RegistryRef): PullEndpoint[] {
  const reg = checkNotBlocked(conf, ref);
  if (!reg) return [{ ref, mirror: false, insecure: false }];
  const n = matchPrefix(nameOf(ref), reg.prefix);
  const out: PullEndpoint[] = [];
  const byDigest = ref.digest !== undefined;
  for (const m of reg.mirrors) {
    if (m.pullFromMirror === 'digest-only' && !byDigest) continue;
    if (m.pullFromMirror === 'tag-only' && byDigest) continue;
    out.push({ ref: rewrite(ref, n, m.location), mirror: true, insecure: m.insecure });
  }
  out.push({ ref: reg.location === '' ? ref : rewrite(ref, n, reg.location), mirror: false, insecure: reg.insecure });
  return out;
}

// ---------------------------------------------------------------- short names

/** A name without a registry host: `debian`, `library/debian:12`. */
export function isShortName(input: string): boolean {
  const s = input.startsWith('docker://') ? input.slice('docker://'.length) : input;
  const slash = s.indexOf('/');
  if (slash < 0) return true;
  const first = s.slice(0, slash);
  return !(first.includes('.') || first.includes(':') || first === 'localhost');
}

export interface Resolved { refs: string[]; how: string }

/**
 * The fully qualified names to try for `input`, in order: itself if it
 * names a registry; else its alias; else one per unqualified-search
 * registry; else docker.io (cowshed's default when nothing is configured).
 */
export function resolveShortName(conf: RegistriesConf, input: string): Resolved {
  if (!isShortName(input)) return { refs: [input], how: 'qualified' };
  const s = input.startsWith('docker://') ? input.slice('docker://'.length) : input;
  const at = s.indexOf('@');
  const beforeDigest = at >= 0 ? s.slice(0, at) : s;
  const colon = beforeDigest.lastIndexOf(':');
  const name = colon > beforeDigest.lastIndexOf('/') ? beforeDigest.slice(0, colon) : beforeDigest;
  const rest = s.slice(name.length);
  const alias = conf.aliases.get(name);
  if (alias) return { refs: [`${alias.target}${rest}`], how: `alias in ${alias.file}` };
  if (conf.unqualifiedSearch.length) return { refs: conf.unqualifiedSearch.map((r) => `${r}/${s}`), how: 'unqualified-search-registries' };
  return { refs: [s], how: 'default' };
}
