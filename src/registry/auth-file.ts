// login / logout: the containers auth file podman and skopeo read
// ({"auths": {"REGISTRY": {"auth": base64("user:password")}}}).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { CowshedError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { authFilePath, parseRegistryRef, RegistryClient, type Credentials } from './client.ts';

interface AuthFile { auths?: Record<string, { auth?: string }>; [k: string]: unknown }

/** `https://host:port/` → `host:port`; index.docker.io → docker.io. */
export function normalizeRegistry(input: string): string {
  const host = input.replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
  if (host === '' || host.includes('/')) throw new CowshedError('EINVAL', `invalid registry ${JSON.stringify(input)}: expected HOST[:PORT]`);
  // Parsed as a reference to reuse its host checks.
  const r = parseRegistryRef(`${host}/x`);
  return r.registry === 'docker.io' ? 'docker.io' : host;
}

function readAuthFile(file: string): AuthFile {
  if (!existsSync(file)) return {};
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as AuthFile;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v;
  } catch { /* reported below */ }
  throw new CowshedError('EFORMAT', `${file}: not a valid auth file; fix or remove it`);
}

function writeAuthFile(file: string, data: AuthFile): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileAtomic(file, `${JSON.stringify(data, null, '\t')}\n`);
}

/** Checks the credentials against the registry, then stores them; returns the file written. */
export async function login(registryInput: string, creds: Credentials, opts: { tlsVerify?: boolean } = {}): Promise<string> {
  const registry = normalizeRegistry(registryInput);
  const apiHost = registry === 'docker.io' ? 'registry-1.docker.io' : registry;
  await new RegistryClient(registry, apiHost, { tlsVerify: opts.tlsVerify, credentials: creds }).ping();
  const file = authFilePath();
  const data = readAuthFile(file);
  data.auths = { ...data.auths, [registry]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } };
  writeAuthFile(file, data);
  return file;
}

/** Removes the registry's entry; false if there was none. */
export function logout(registryInput: string): boolean {
  const registry = normalizeRegistry(registryInput);
  const file = authFilePath();
  const data = readAuthFile(file);
  if (!data.auths || !(registry in data.auths)) return false;
  delete data.auths[registry];
  writeAuthFile(file, data);
  return true;
}
