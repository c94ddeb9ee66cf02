// registries.d: where signatures live, as containers/image reads it
// (docker/registries_d.go, docs/containers-registries.d.5.md). Every *.yaml
// file of the directory is merged; `default-docker` and each `docker` scope
// may be defined once across all files. Per image, the most specific scope
// that sets a value wins, then default-docker.

import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { CowshedError, errno } from '../util/errors.ts';
import { policyIdentity, policyNamespaces, type DockerRef } from './reference.ts';

export const SYSTEM_REGISTRIES_D = '/etc/containers/registries.d';
const DEFAULT_LOOKASIDE_ROOT = '/var/lib/containers/sigstore';

export interface Namespace {
  lookaside?: string;
  lookasideStaging?: string;
  useSigstoreAttachments?: boolean;
}

export interface RegistriesD {
  dir: string;
  defaultDocker?: Namespace;
  docker: Map<string, Namespace>;
}

type Yaml = { load(s: string, o?: object): unknown; FAILSAFE_SCHEMA: object; JSON_SCHEMA: object };
let yaml: Yaml | undefined;
const yamlLib = (): Yaml => (yaml ??= createRequire(import.meta.url)('js-yaml') as Yaml);

export function parseRegistriesYaml(text: string, file: string): { defaultDocker?: Namespace; docker: Map<string, Namespace> } {
  let v: unknown;
  try { v = yamlLib().load(text, { json: false, schema: yamlLib().JSON_SCHEMA }); } catch (e) {
    const m = (e as { mark?: { line?: number }; reason?: string });
    throw new CowshedError('EFORMAT', `${file}:${(m.mark?.line ?? 0) + 1}: invalid YAML: ${m.reason ?? (e as Error).message}`);
  }
  const out: { defaultDocker?: Namespace; docker: Map<string, Namespace> } = { docker: new Map() };
  if (v === null || v === undefined) return out;
  const bad = (why: string): never => { throw new CowshedError('EFORMAT', `${file}: invalid registries.d file: ${why}`); };
  if (typeof v !== 'object' || Array.isArray(v)) bad('the top level is not a mapping');
  const top = v as Record<string, unknown>;
  // Like yaml.Unmarshal into the Go struct: unknown top-level keys are ignored.
  if (top['default-docker'] !== undefined && top['default-docker'] !== null) out.defaultDocker = namespace(top['default-docker'], 'default-docker', bad);
  const docker = top.docker;
  if (docker !== undefined && docker !== null) {
    if (typeof docker !== 'object' || Array.isArray(docker)) bad('"docker" is not a mapping');
    for (const [scope, ns] of Object.entries(docker as Record<string, unknown>)) out.docker.set(scope, namespace(ns ?? {}, `docker.${scope}`, bad));
  }
  return out;
}

function namespace(v: unknown, where: string, bad: (why: string) => never): Namespace {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(`${where} is not a mapping`);
  const o = v as Record<string, unknown>;
  const s = (k: string): string | undefined => {
    const x = o[k];
    if (x === undefined || x === null || x === '') return undefined;
    if (typeof x !== 'string') bad(`${where}.${k} is not a string`);
    return x as string;
  };
  const ns: Namespace = {};
  const lookaside = s('lookaside') ?? s('sigstore');
  const staging = s('lookaside-staging') ?? s('sigstore-staging');
  if (lookaside !== undefined) ns.lookaside = lookaside;
  if (staging !== undefined) ns.lookasideStaging = staging;
  const u = o['use-sigstore-attachments'];
  if (u !== undefined && u !== null) {
    if (typeof u !== 'boolean') bad(`${where}.use-sigstore-attachments is not true or false`);
    ns.useSigstoreAttachments = u as boolean;
  }
  return ns;
}

/** Reads and merges a registries.d directory (a missing directory is an empty configuration). */
export function loadRegistriesD(dir: string = SYSTEM_REGISTRIES_D): RegistriesD {
  const merged: RegistriesD = { dir, docker: new Map() };
  let names: string[];
  try { names = readdirSync(dir); } catch (e) {
    if (errno(e) === 'ENOENT') return merged;
    throw new CowshedError('EINVAL', `registries.d ${dir}: ${(e as Error).message}`);
  }
  let defaultFrom = '';
  const from = new Map<string, string>();
  for (const name of names.sort()) {
    if (!name.endsWith('.yaml')) continue;
    const file = join(dir, name);
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch (e) { if (errno(e) === 'ENOENT') continue; throw e; }
    const c = parseRegistriesYaml(text, file);
    if (c.defaultDocker) {
      if (merged.defaultDocker) throw new CowshedError('EFORMAT', `registries.d: "default-docker" defined both in ${defaultFrom} and ${file}`);
      merged.defaultDocker = c.defaultDocker;
      defaultFrom = file;
    }
    for (const [scope, ns] of c.docker) {
      if (merged.docker.has(scope)) throw new CowshedError('EFORMAT', `registries.d: docker namespace ${JSON.stringify(scope)} defined both in ${from.get(scope)} and ${file}`);
      merged.docker.set(scope, ns);
      from.set(scope, file);
    }
  }
  return merged;
}

function lookup<T>(c: RegistriesD, ref: DockerRef, pick: (ns: Namespace) => T | undefined): T | undefined {
  for (const s of [policyIdentity(ref), ...policyNamespaces(ref)]) {
    const ns = c.docker.get(s);
    if (ns) { const v = pick(ns); if (v !== undefined) return v; }
  }
  return c.defaultDocker ? pick(c.defaultDocker) : undefined;
}

export function useSigstoreAttachments(c: RegistriesD, ref: DockerRef): boolean {
  return lookup(c, ref, (ns) => ns.useSigstoreAttachments) ?? false;
}

/**
 * The lookaside base for a repository (a URL: file://, http://, https://),
 * with the repository path appended as containers/image does. Reading uses
 * `lookaside`; writing prefers `lookaside-staging`. Without configuration:
 * file:///var/lib/containers/sigstore for root, ~/.local/share/containers/sigstore otherwise.
 */
export function lookasideBase(c: RegistriesD, ref: DockerRef, write: boolean): URL {
  const top = lookup(c, ref, (ns) => (write ? ns.lookasideStaging ?? ns.lookaside : ns.lookaside));
  let base: URL;
  if (top !== undefined) {
    try { base = new URL(top); } catch { throw new CowshedError('EFORMAT', `registries.d ${c.dir}: invalid lookaside URL ${JSON.stringify(top)}`); }
  } else {
    const root = process.geteuid?.() === 0 ? DEFAULT_LOOKASIDE_ROOT : join(process.env.HOME ?? '/', '.local/share/containers/sigstore');
    base = new URL(`file://${root}`);
  }
  base.pathname = `${base.pathname.replace(/\/$/, '')}/${ref.path}`;
  return base;
}

/** <base>@sha256=<hex>/signature-<n> (n from 1). */
export function lookasideUrl(base: URL, manifestDigest: string, n: number): URL {
  const m = /^(sha256):([0-9a-f]{64})$/.exec(manifestDigest);
  if (!m) throw new CowshedError('EINVAL', `invalid manifest digest ${manifestDigest}`);
  const u = new URL(base.toString());
  u.pathname = `${u.pathname}@${m[1]}=${m[2]}/signature-${n}`;
  return u;
}
