// TLS material for a registry, read as containers/image reads it:
//   - trusted CAs: the system store (/etc/ssl/certs/ca-certificates.crt,
//     else Node's bundled roots) plus every `*.crt` of the registry's
//     certs.d directory;
//   - a client certificate: `NAME.cert` with its key `NAME.key` there.
// The directory is `--cert-dir DIR` if given, else the first existing one
// of $HOME/.config/containers/certs.d/HOST:PORT, /etc/containers/certs.d/
// HOST:PORT and /etc/docker/certs.d/HOST:PORT.

import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CowshedError, errno } from '../util/errors.ts';

const SYSTEM_CA_FILE = '/etc/ssl/certs/ca-certificates.crt';

/** The directories a registry's certs.d is looked for in, in order. */
export function certsDRoots(): string[] {
  return [join(process.env.HOME || homedir(), '.config', 'containers', 'certs.d'), '/etc/containers/certs.d', '/etc/docker/certs.d'];
}

/** The certs.d directory for `hostPort` (the registry as users name it), or undefined if none exists. */
export function certDirFor(hostPort: string, certDir?: string): string | undefined {
  if (certDir !== undefined) {
    if (!existsSync(certDir)) throw new CowshedError('ENOENT', `--cert-dir ${certDir}: no such directory`);
    return certDir;
  }
  for (const root of certsDRoots()) {
    const d = join(root, hostPort);
    if (existsSync(d)) return d;
  }
  return undefined;
}

let systemCas: string[] | undefined;

function systemCaCerts(): string[] {
  if (!systemCas) {
    try { systemCas = [readFileSync(SYSTEM_CA_FILE, 'utf8')]; } catch { systemCas = [...rootCertificates]; }
  }
  return systemCas;
}

export interface TlsMaterial {
  context: SecureContext;
  /** The certs.d directory used, if any. */
  dir?: string;
  /** CA files and the client certificate read from it. */
  caFiles: string[];
  clientCert?: string;
}

function readPem(file: string, what: string): Buffer {
  try { return readFileSync(file); } catch (e) {
    throw new CowshedError('EINVAL', `${file}: cannot read this ${what} (${errno(e) ?? String(e)}): fix its permissions or remove it`, { exitCode: 1 });
  }
}

const cache = new Map<string, TlsMaterial>();

/**
 * The TLS context for a registry: system CAs + certs.d CAs + client pair.
 * Errors name the file and what to do. `systemCas: false` leaves out the
 * system store (parsing it costs a CLI command several ms): for connections
 * that do not verify the server, like the probe of an insecure registry.
 */
export function tlsMaterial(hostPort: string, certDir?: string, opts: { systemCas?: boolean } = {}): TlsMaterial {
  const systemCas = opts.systemCas ?? true;
  const dir = certDirFor(hostPort, certDir);
  const key = `${hostPort}\0${dir ?? ''}\0${systemCas}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const cas: Array<string | Buffer> = systemCas ? [...systemCaCerts()] : [];
  const caFiles: string[] = [];
  let pair: { cert: Buffer; key: Buffer; certFile: string; keyFile: string } | undefined;
  if (dir) {
    let names: string[];
    try { names = readdirSync(dir).sort(); } catch (e) {
      throw new CowshedError('EINVAL', `${dir}: cannot read this certificate directory (${errno(e) ?? String(e)}): fix its permissions or remove it`, { exitCode: 1 });
    }
    for (const n of names) {
      const file = join(dir, n);
      if (n.endsWith('.crt')) {
        const pem = readPem(file, 'CA certificate');
        try { new X509Certificate(pem); } catch {
          throw new CowshedError('EINVAL', `${file}: not a PEM CA certificate: fix or remove it`, { exitCode: 1 });
        }
        cas.push(pem);
        caFiles.push(file);
      } else if (n.endsWith('.cert')) {
        const keyName = `${n.slice(0, -'.cert'.length)}.key`;
        if (!names.includes(keyName)) throw new CowshedError('EINVAL', `${file}: client certificate without its key ${keyName} (a CA certificate must be named *.crt)`, { exitCode: 1 });
        if (!pair) pair = { cert: readPem(file, 'client certificate'), key: readPem(join(dir, keyName), 'client key'), certFile: file, keyFile: join(dir, keyName) };
      } else if (n.endsWith('.key')) {
        const certName = `${n.slice(0, -'.key'.length)}.cert`;
        if (!names.includes(certName)) throw new CowshedError('EINVAL', `${file}: client key without its certificate ${certName}`, { exitCode: 1 });
      }
    }
  }
  let context: SecureContext;
  try {
    context = createSecureContext(pair ? { ca: cas, cert: pair.cert, key: pair.key } : { ca: cas });
  } catch (e) {
    if (!pair) throw new CowshedError('EINVAL', `${dir ?? hostPort}: a CA certificate could not be used (${(e as Error).message}): fix or remove it`, { exitCode: 1 });
    const why = (e as { code?: string }).code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH' ? 'the key does not belong to the certificate' : (e as Error).message;
    throw new CowshedError('EINVAL', `${pair.keyFile}: not a usable key for ${pair.certFile} (${why}): put the matching PEM key there or remove both`, { exitCode: 1 });
  }
  const m: TlsMaterial = { context, dir, caFiles, clientCert: pair?.certFile };
  cache.set(key, m);
  return m;
}

/** The certs.d directory users should put a CA in for `hostPort`. */
export function suggestedCertDir(hostPort: string): string {
  return join('/etc/containers/certs.d', hostPort);
}
