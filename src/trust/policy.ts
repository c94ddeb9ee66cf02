// containers-policy.json: which images a host accepts, as containers/image
// reads it (docs/containers-policy.json.5.md, signature/policy_config.go).
// Parsing is strict: unknown or duplicated fields make the file invalid,
// with the file and line in the error. Only the docker transport is
// evaluated (cowshed pulls from registries); other transports' requirements
// are still checked for validity.

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CowshedError, errno } from '../util/errors.ts';
import { isObject, parseJsonLocated, type Json, type Located } from './json-lines.ts';
import { parseDockerRef, isNameOnly, policyIdentity, policyNamespaces, type DockerRef } from './reference.ts';

export const SYSTEM_POLICY = '/etc/containers/policy.json';
export const userPolicyPath = (): string => join(process.env.HOME ?? homedir(), '.config', 'containers', 'policy.json');

export type SignedIdentity =
  | { type: 'matchExact' }
  | { type: 'matchRepoDigestOrExact' }
  | { type: 'matchRepository' }
  | { type: 'exactReference'; dockerReference: string }
  | { type: 'exactRepository'; dockerRepository: string }
  | { type: 'remapIdentity'; prefix: string; signedPrefix: string };

export interface KeySource {
  /** Files (keyPath, keyPaths) or inline data (keyData, keyDatas), as written. */
  paths?: string[];
  data?: Buffer[];
}

export type Requirement = { line: number } & (
  | { type: 'insecureAcceptAnything' }
  | { type: 'reject' }
  | { type: 'signedBy'; keyType: 'GPGKeys'; keys: KeySource; signedIdentity: SignedIdentity }
  | { type: 'sigstoreSigned'; keys: KeySource; signedIdentity: SignedIdentity }
);

export interface Policy {
  file: string;
  default: Requirement[];
  /** transports.docker scopes ("" = the transport's default). */
  docker: Map<string, Requirement[]>;
  /** The parsed JSON, for `image trust set` to edit and write back. */
  raw: { [k: string]: Json };
}

/** Where the policy comes from: --signature-policy, else $HOME/.config/containers/policy.json, else /etc/containers/policy.json. */
export function policyPath(explicit?: string): string | undefined {
  if (explicit !== undefined) return explicit;
  const user = userPolicyPath();
  if (existsSync(user)) return user;
  return existsSync(SYSTEM_POLICY) ? SYSTEM_POLICY : undefined;
}

export function loadPolicy(file: string): Policy {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (e) {
    if (errno(e) === 'ENOENT') throw new CowshedError('ENOENT', `signature policy ${file} not found (write one, or name another with --signature-policy)`);
    throw new CowshedError('EINVAL', `signature policy ${file}: ${(e as Error).message}`);
  }
  if (text.length > 4 << 20) throw new CowshedError('EFORMAT', `${file}: too big for a policy file`);
  return parsePolicy(text, file);
}

type O = { [k: string]: Json };

export function parsePolicy(text: string, file: string): Policy {
  const doc = parseJsonLocated(text, file);
  const root = doc.value;
  const bad = (holder: object, key: string | number | undefined, why: string): never => {
    throw new CowshedError('EFORMAT', `${file}:${doc.lineOf(holder, key)}: invalid policy: ${why}`);
  };
  if (!isObject(root)) return bad({}, undefined, 'the top level is not a JSON object');
  for (const k of Object.keys(root)) if (k !== 'default' && k !== 'transports') bad(root, k, `unknown field ${JSON.stringify(k)}`);
  if (!('default' in root)) bad(root, undefined, '"default" is missing');
  const policy: Policy = { file, default: requirements(doc, root, 'default', bad), docker: new Map(), raw: root };
  const transports = root.transports;
  if (transports !== undefined && transports !== null) {
    if (!isObject(transports)) bad(root, 'transports', '"transports" is not an object');
    for (const [t, scopes] of Object.entries(transports as O)) {
      if (!isObject(scopes)) bad(transports as O, t, `transport ${JSON.stringify(t)} is not an object`);
      for (const scope of Object.keys(scopes as O)) {
        if (t === 'docker' && scope !== '') validDockerScope(scope, () => bad(scopes as O, scope, `invalid docker scope ${JSON.stringify(scope)}`));
        const reqs = requirements(doc, scopes as O, scope, bad);
        if (t === 'docker') policy.docker.set(scope, reqs);
      }
    }
  }
  return policy;
}

function validDockerScope(scope: string, bad: () => never): void {
  if (scope.startsWith('*.')) { if (!/^\*\.[A-Za-z0-9.-]+$/.test(scope)) bad(); return; }
  try { parseDockerRef(scope.includes('/') ? scope : `${scope}/x`); } catch { bad(); }
}

type Bad = (holder: object, key: string | number | undefined, why: string) => never;

function requirements(doc: Located, holder: O, key: string, bad: Bad): Requirement[] {
  const v = holder[key];
  if (!Array.isArray(v)) return bad(holder, key, `${JSON.stringify(key)} is not a list of requirements`);
  if (v.length === 0) bad(holder, key, `${JSON.stringify(key)} has no requirements (use [{"type":"insecureAcceptAnything"}] to accept anything)`);
  return v.map((r, i) => requirement(doc, v, i, r, bad));
}

function fields(o: O, allowed: string[], what: string, bad: Bad): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) bad(o, k, `unknown field ${JSON.stringify(k)} in ${what}`);
}

function str(o: O, k: string, what: string, bad: Bad): string {
  const v = o[k];
  if (typeof v !== 'string') return bad(o, k, `${what}: ${JSON.stringify(k)} is not a string`);
  return v;
}

function strList(o: O, k: string, what: string, bad: Bad): string[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== 'string')) return bad(o, k, `${what}: ${JSON.stringify(k)} is not a non-empty list of strings`);
  return v as string[];
}

function b64(s: string, o: O, k: string, what: string, bad: Bad): Buffer {
  if (!/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(s)) bad(o, k, `${what}: ${JSON.stringify(k)} is not base64`);
  return Buffer.from(s, 'base64');
}

function keySource(o: O, names: string[], what: string, bad: Bad): KeySource {
  const present = names.filter((n) => n in o);
  if (present.length !== 1) bad(o, undefined, `${what} needs exactly one of ${names.join(', ')}${present.length ? ` (has ${present.join(', ')})` : ''}`);
  const k = present[0]!;
  switch (k) {
    case 'keyPath': return { paths: [str(o, k, what, bad)] };
    case 'keyPaths': return { paths: strList(o, k, what, bad) };
    case 'keyData': return { data: [b64(str(o, k, what, bad), o, k, what, bad)] };
    default: return { data: strList(o, k, what, bad).map((s) => b64(s, o, k, what, bad)) };
  }
}

function requirement(doc: Located, list: Json[], i: number, r: Json, bad: Bad): Requirement {
  if (!isObject(r)) return bad(list, i, 'a requirement is not a JSON object');
  const line = doc.lineOf(list, i);
  const type = r.type;
  switch (type) {
    case 'insecureAcceptAnything':
    case 'reject':
      fields(r, ['type'], type, bad);
      return { type, line };
    case 'signedBy': {
      fields(r, ['type', 'keyType', 'keyPath', 'keyPaths', 'keyData', 'signedIdentity'], 'signedBy', bad);
      if (r.keyType !== 'GPGKeys') bad(r, 'keyType', `signedBy: keyType ${JSON.stringify(r.keyType)} is not supported (only "GPGKeys")`);
      const keys = keySource(r, ['keyPath', 'keyPaths', 'keyData'], 'signedBy', bad);
      return { type, keyType: 'GPGKeys', keys, signedIdentity: identity(r, bad), line };
    }
    case 'sigstoreSigned': {
      fields(r, ['type', 'keyPath', 'keyPaths', 'keyData', 'keyDatas', 'fulcio', 'pki', 'rekorPublicKeyPath', 'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas', 'signedIdentity'], 'sigstoreSigned', bad);
      for (const k of ['fulcio', 'pki', 'rekorPublicKeyPath', 'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas']) {
        if (k in r) bad(r, k, `sigstoreSigned: ${JSON.stringify(k)} (Fulcio, PKI, Rekor) is not supported by cowshed; use public keys (keyPath, keyPaths, keyData, keyDatas)`);
      }
      const keys = keySource(r, ['keyPath', 'keyPaths', 'keyData', 'keyDatas'], 'sigstoreSigned', bad);
      return { type, keys, signedIdentity: identity(r, bad), line };
    }
    default:
      return bad(r, 'type', `unknown requirement type ${JSON.stringify(type)}`);
  }
}

function identity(r: O, bad: Bad): SignedIdentity {
  const v = r.signedIdentity;
  if (v === undefined) return { type: 'matchRepoDigestOrExact' };
  if (!isObject(v)) return bad(r, 'signedIdentity', 'signedIdentity is not a JSON object');
  const what = 'signedIdentity';
  switch (v.type) {
    case 'matchExact':
    case 'matchRepoDigestOrExact':
    case 'matchRepository':
      fields(v, ['type'], v.type, bad);
      return { type: v.type };
    case 'exactReference': {
      fields(v, ['type', 'dockerReference'], v.type, bad);
      const s = str(v, 'dockerReference', what, bad);
      let ok = false;
      try { ok = !isNameOnly(parseDockerRef(s)); } catch { ok = false; }
      if (!ok) bad(v, 'dockerReference', `exactReference: ${JSON.stringify(s)} is not a reference with a tag or digest`);
      return { type: 'exactReference', dockerReference: s };
    }
    case 'exactRepository': {
      fields(v, ['type', 'dockerRepository'], v.type, bad);
      const s = str(v, 'dockerRepository', what, bad);
      try { parseDockerRef(s); } catch { bad(v, 'dockerRepository', `exactRepository: ${JSON.stringify(s)} is not a repository`); }
      return { type: 'exactRepository', dockerRepository: s };
    }
    case 'remapIdentity': {
      fields(v, ['type', 'prefix', 'signedPrefix'], v.type, bad);
      const prefix = str(v, 'prefix', what, bad);
      const signedPrefix = str(v, 'signedPrefix', what, bad);
      for (const [k, p] of [['prefix', prefix], ['signedPrefix', signedPrefix]] as const) {
        if (!/^[A-Za-z0-9.:[\]-]+(\/[a-z0-9._-]+)*$/.test(p) || p.includes('@')) bad(v, k, `remapIdentity: ${JSON.stringify(p)} is not a host[:port] or repository prefix`);
      }
      return { type: 'remapIdentity', prefix, signedPrefix };
    }
    default:
      return bad(v, 'type', `unknown signedIdentity type ${JSON.stringify(v.type)}`);
  }
}

/** The requirements that apply to a docker image: the most specific scope wins. */
export function requirementsFor(policy: Policy, ref: DockerRef): { scope: string; reqs: Requirement[] } {
  for (const s of [policyIdentity(ref), ...policyNamespaces(ref)]) {
    const r = policy.docker.get(s);
    if (r) return { scope: `docker:${s}`, reqs: r };
  }
  const d = policy.docker.get('');
  if (d) return { scope: 'docker: (transport default)', reqs: d };
  return { scope: 'default', reqs: policy.default };
}

const sameRepoOrExact = (intended: DockerRef, signed: DockerRef): boolean => {
  if (isNameOnly(signed)) return false;
  if (intended.tag !== undefined) return policyIdentityFull(signed) === policyIdentityFull(intended);
  if (intended.digest !== undefined) return signed.name === intended.name;
  return false;
};
const policyIdentityFull = (r: DockerRef): string => `${r.name}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;

/** Does a signature's claimed identity satisfy signedIdentity for the image named `intended`? (policy_reference_match.go) */
export function identityMatches(rule: SignedIdentity, intended: DockerRef, signedReference: string): boolean {
  let signed: DockerRef;
  try { signed = parseDockerRef(signedReference); } catch { return false; }
  switch (rule.type) {
    case 'matchExact':
      return !isNameOnly(intended) && !isNameOnly(signed) && policyIdentityFull(signed) === policyIdentityFull(intended);
    case 'matchRepoDigestOrExact':
      return sameRepoOrExact(intended, signed);
    case 'matchRepository':
      return signed.name === intended.name;
    case 'exactReference': {
      const want = parseDockerRef(rule.dockerReference);
      return !isNameOnly(signed) && policyIdentityFull(signed) === policyIdentityFull(want);
    }
    case 'exactRepository':
      return signed.name === parseDockerRef(rule.dockerRepository).name;
    case 'remapIdentity': {
      const n = intended.name;
      const p = rule.prefix;
      const hit = n === p || (n.startsWith(p) && n[p.length] === '/');
      if (!hit) return sameRepoOrExact(intended, signed);
      let remapped: DockerRef;
      try { remapped = parseDockerRef(policyIdentityFull(intended).replace(p, rule.signedPrefix)); } catch { return false; }
      return sameRepoOrExact(remapped, signed);
    }
  }
}

/** Human description of a requirement, for errors and `image trust show`. */
export function describeRequirement(r: Requirement): string {
  switch (r.type) {
    case 'insecureAcceptAnything': return 'insecureAcceptAnything';
    case 'reject': return 'reject';
    default: return `${r.type} (${r.keys.paths ? r.keys.paths.join(', ') : `${r.keys.data?.length} inline key${r.keys.data?.length === 1 ? '' : 's'}`})`;
  }
}
