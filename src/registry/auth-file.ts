// login / logout: the containers auth file podman and skopeo read
// ({"auths": {"REGISTRY": {"auth": base64("user:password")}}}).
// The file holds passwords: it is written 0600 (as podman does), never
// looser than an existing file was, atomically (a temporary file created
// with the final mode, fsynced, renamed over it).
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CowshedError, errno } from '../util/errors.ts';
import { authFilePath, parseRegistryRef, RegistryClient, type Credentials, type TransportOptions } from './client.ts';

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

/** The mode to write: 0600, or an existing file's mode if that is stricter (0400 stays 0400). */
export function authFileMode(existingMode: number | undefined): number {
  return existingMode === undefined ? 0o600 : existingMode & 0o600;
}

function writeAuthFile(fileGiven: string, data: AuthFile): void {
  // A symlinked auth file (dotfiles) is written where it points.
  const file = existsSync(fileGiven) ? realpathSync(fileGiven) : fileGiven;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  let existing: number | undefined;
  try { existing = statSync(file).mode & 0o7777; } catch { /* new file */ }
  const mode = authFileMode(existing);
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fd = openSync(tmp, 'wx', mode);
    try {
      fchmodSync(fd, mode); // whatever the umask
      const buf = Buffer.from(`${JSON.stringify(data, null, '\t')}\n`);
      for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new CowshedError('EINVAL', `${file}: cannot write the auth file (${errno(e) ?? String(e)})`, { cause: e, exitCode: 1 });
  }
}

/** Checks the credentials against the registry, then stores them; returns the file written. */
export async function login(registryInput: string, creds: Credentials, opts: TransportOptions = {}): Promise<string> {
  const registry = normalizeRegistry(registryInput);
  const apiHost = registry === 'docker.io' ? 'registry-1.docker.io' : registry;
  await new RegistryClient(registry, apiHost, { ...opts, credentials: creds }).ping();
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
