// A client for the OCI distribution API on undici's fetch: references,
// credentials, anonymous / basic / bearer-token auth, retries with backoff,
// and blob downloads that resume with a Range request after a dropped
// connection. Everything that can be large streams.
//
// Transport: every request goes through RegistryClient.send(), which uses
// one undici Agent per client carrying the registry's TLS material
// (tls.ts: system CAs + certs.d CAs + client certificate) and turns TLS
// failures into one-line errors. HTTPS always; an insecure registry
// (--tls-verify=false, or insecure in registries.conf) skips verification
// and falls back to plain HTTP when HTTPS does not answer, as
// containers/image pings https then http.

import { Buffer } from 'node:buffer';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CowshedError, isCowshedError } from '../util/errors.ts';
import { isDigest } from '../oci/digest.ts';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST } from '../oci/media-types.ts';
import { checkNotBlocked, findRegistry, loadRegistriesConf } from './config.ts';
import { suggestedCertDir, tlsMaterial } from './tls.ts';
import type { Agent } from 'undici';
import { connect as tlsConnect, type SecureContext } from 'node:tls';
import { isIP } from 'node:net';

export const MANIFEST_ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(', ');

// ---------------------------------------------------------------- references

export interface RegistryRef {
  /** The registry as users name it (docker.io, 127.0.0.1:5000). */
  registry: string;
  /** The host the API is served on (registry-1.docker.io for docker.io). */
  apiHost: string;
  repository: string;
  tag?: string;
  digest?: string;
}

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DOCKER_HUB = 'docker.io';

/**
 * Parses `[host[:port]/]repo[:tag][@digest]`, with an optional `docker://`
 * prefix. A first component with a dot or colon, or `localhost`, is a host;
 * otherwise the registry is docker.io (and a one-part name is `library/…`).
 */
export function parseRegistryRef(input: string): RegistryRef {
  const bad = (why: string): never => { throw new CowshedError('EINVAL', `invalid image reference ${JSON.stringify(input)}: ${why}`); };
  let s = input.startsWith('docker://') ? input.slice('docker://'.length) : input;
  if (s === '' || s.length > 4096) bad('empty or too long');
  let digest: string | undefined;
  const at = s.indexOf('@');
  if (at >= 0) {
    digest = s.slice(at + 1);
    s = s.slice(0, at);
    if (!isDigest(digest)) bad('the digest must be sha256:<64 lowercase hex digits>');
  }
  let tag: string | undefined;
  const slash = s.lastIndexOf('/');
  const colon = s.lastIndexOf(':');
  if (colon > slash) {
    tag = s.slice(colon + 1);
    s = s.slice(0, colon);
    if (!TAG.test(tag)) bad(`invalid tag ${JSON.stringify(tag)}`);
  }
  const parts = s.split('/');
  let registry = DOCKER_HUB;
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost')) {
    registry = parts.shift()!;
    if (!/^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$/.test(registry) && !/^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$/.test(registry)) bad(`invalid registry host ${JSON.stringify(registry)}`);
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  for (const p of parts) if (!REPO_COMPONENT.test(p)) bad('repository names use lowercase letters, digits and . _ - separated by /');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, apiHost: registry === DOCKER_HUB ? 'registry-1.docker.io' : registry, repository: parts.join('/'), tag, digest };
}

/** The ref as a cowshed image name: `registry/repo:tag` (a digest-only ref is tagged `sha256-<hex>`). */
export function imageNameFor(ref: RegistryRef): string {
  const tag = ref.tag ?? (ref.digest ? ref.digest.replace(':', '-') : 'latest');
  return `${ref.registry}/${ref.repository}:${tag}`;
}

export function formatRef(ref: RegistryRef): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

// ---------------------------------------------------------------- credentials

export interface Credentials { username: string; password: string }

export function parseCreds(s: string): Credentials {
  const i = s.indexOf(':');
  if (i <= 0) throw new CowshedError('EINVAL', '--creds must be USERNAME:PASSWORD');
  return { username: s.slice(0, i), password: s.slice(i + 1) };
}

/** The auth file login writes: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json. */
export function authFilePath(): string {
  if (process.env.REGISTRY_AUTH_FILE) return process.env.REGISTRY_AUTH_FILE;
  const runtime = process.env.XDG_RUNTIME_DIR || `/run/user/${process.getuid?.() ?? 0}`;
  return join(runtime, 'containers', 'auth.json');
}

function authFilesToRead(): string[] {
  const files = [authFilePath()];
  const docker = process.env.DOCKER_CONFIG ? join(process.env.DOCKER_CONFIG, 'config.json') : join(homedir(), '.docker', 'config.json');
  files.push(docker);
  return files;
}

function keysFor(registry: string, repository?: string): string[] {
  const keys: string[] = [];
  if (repository) {
    // Podman allows entries for a namespace: registry/a/b, registry/a.
    const parts = repository.split('/');
    for (let n = parts.length; n > 0; n--) keys.push(`${registry}/${parts.slice(0, n).join('/')}`);
  }
  keys.push(registry);
  if (registry === DOCKER_HUB) keys.push('https://index.docker.io/v1/', 'index.docker.io', 'registry-1.docker.io');
  return keys;
}

/** Credentials for a registry from the auth files (podman's, then docker's); undefined if none. */
export function lookupCredentials(registry: string, repository?: string): Credentials | undefined {
  for (const file of authFilesToRead()) {
    if (!existsSync(file)) continue;
    let auths: Record<string, { auth?: unknown }>;
    try {
      auths = (JSON.parse(readFileSync(file, 'utf8')) as { auths?: Record<string, { auth?: unknown }> }).auths ?? {};
    } catch {
      throw new CowshedError('EFORMAT', `${file}: not a valid auth file (JSON with "auths")`);
    }
    for (const key of keysFor(registry, repository)) {
      const entry = auths[key] ?? auths[`https://${key}`] ?? auths[`http://${key}`];
      if (entry && typeof entry.auth === 'string' && entry.auth !== '') {
        const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i > 0) return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
      }
    }
  }
  return undefined;
}

// ---------------------------------------------------------------- client

export interface TransportOptions {
  /**
   * true: HTTPS with verification, whatever registries.conf says; false:
   * HTTPS without verification, or plain HTTP if the registry does not
   * speak HTTPS; undefined: as registries.conf says (verify by default).
   */
  tlsVerify?: boolean;
  /** A directory of *.crt CAs and a NAME.cert + NAME.key client pair, instead of certs.d. */
  certDir?: string;
  /** registries.conf to read instead of the system and user files. */
  registriesConf?: string;
}

export interface ClientOptions extends TransportOptions {
  /** This endpoint is marked insecure (a mirror's `insecure`): verification is skipped whatever tlsVerify says. */
  insecure?: boolean;
  /** USER:PASS; otherwise looked up in the auth files. */
  creds?: string;
  /** Credentials given directly (login). */
  credentials?: Credentials;
  /** Attempts per request for 5xx, 429 and dropped connections (default 5). */
  maxAttempts?: number;
  /** First backoff delay (default 250 ms, doubled each time, capped at 5 s). */
  retryDelayMs?: number;
  /** A request (with its retries) gives up after this long (default 120 s). */
  maxRetryTimeMs?: number;
  /** No response headers, or no body bytes, for this long = a dropped connection (default 60 s). */
  idleTimeoutMs?: number;
}

interface RequestOptions {
  headers?: Record<string, string>;
  /** Bytes only: a retried request sends them again. */
  body?: Buffer;
  /** Token scopes this request needs (repository:NAME:pull or pull,push). */
  scopes: string[];
  /** Statuses that are answers rather than errors (default: 2xx). */
  ok?: (status: number) => boolean;
  what: string;
}

interface Challenge { scheme: 'basic' | 'bearer'; params: Record<string, string> }

function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const scheme = m[1].toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let p = re.exec(m[2]); p !== null; p = re.exec(m[2])) params[p[1].toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  return { scheme, params };
}

/** A connection that broke: worth another try. */
function isNetworkError(e: unknown): boolean {
  if (isCowshedError(e)) return false;
  if (e instanceof Error && (e.name === 'AbortError' || e.name === 'TimeoutError')) return true;
  return e instanceof TypeError || (typeof e === 'object' && e !== null && 'code' in e);
}

function describe(e: unknown): string {
  const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : '';
  return `${e instanceof Error ? e.message : String(e)}${cause}`;
}

const UNTRUSTED = new Set(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED']);

interface CodedError { code: string; message: string; reason?: string; cert?: { subjectaltname?: string; subject?: { CN?: string } } }

/** The innermost error of a cause chain that has a code. */
function errorCode(e: unknown): CodedError | undefined {
  let found: CodedError | undefined;
  for (let x: unknown = e, n = 0; x && n < 6; x = (x as { cause?: unknown }).cause, n++) {
    if (typeof x === 'object' && 'code' in x && typeof (x as { code: unknown }).code === 'string') {
      const c = x as CodedError;
      found = { code: c.code, message: String(c.message ?? ''), reason: c.reason, cert: c.cert };
    }
  }
  return found;
}

/** A connection that the other side closed or reset: under TLS 1.3, how a refused client certificate shows. */
const SOCKET_CLOSED = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE', 'UND_ERR_CLOSED']);

export interface BlobStreamStats { bytes: number; requests: number; resumed: number }

export class RegistryClient {
  readonly registry: string;
  readonly apiHost: string;
  /** https://HOST, or http://HOST once an insecure registry turned out not to speak HTTPS. */
  base: string;
  readonly opts: ClientOptions;
  /** Verification skipped (and plain HTTP allowed). */
  readonly insecure: boolean;
  private schemeKnown: boolean;
  private agent: Agent | undefined;
  private readonly credentials: Credentials | undefined;
  private readonly credentialsSource: string;
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, string>();
  /** Bytes of request bodies sent (push reports them). */
  bytesSent = 0;
  /** Bytes of blob bodies received. */
  bytesReceived = 0;

  constructor(registry: string, apiHost: string, opts: ClientOptions = {}, repository?: string) {
    this.registry = registry;
    this.apiHost = apiHost;
    this.opts = opts;
    const conf = loadRegistriesConf(opts.registriesConf);
    const name = `${registry}/${repository ?? ''}`.replace(/\/$/, '');
    checkNotBlocked(conf, { registry, apiHost, repository: repository ?? '' });
    this.insecure = opts.insecure === true || opts.tlsVerify === false || (opts.tlsVerify === undefined && findRegistry(conf, name)?.insecure === true);
    this.base = `https://${apiHost}`;
    this.schemeKnown = !this.insecure;
    if (opts.credentials) { this.credentials = opts.credentials; this.credentialsSource = 'the given credentials'; }
    else if (opts.creds !== undefined) { this.credentials = parseCreds(opts.creds); this.credentialsSource = '--creds'; }
    else { this.credentials = lookupCredentials(registry, repository); this.credentialsSource = 'the auth file'; }
  }

  static forRef(ref: RegistryRef, opts: ClientOptions = {}): RegistryClient {
    return new RegistryClient(ref.registry, ref.apiHost, opts, ref.repository);
  }

  url(path: string): string { return new URL(path, this.base).toString(); }

  private authFailed(status: number, what: string): CowshedError {
    if (this.credentials) {
      return new CowshedError('EINVAL', `${this.registry}: ${what}: authentication failed (HTTP ${status}): wrong username or password in ${this.credentialsSource}?`, { exitCode: 1 });
    }
    return new CowshedError('EINVAL', `${this.registry}: ${what}: the registry requires authentication (HTTP ${status}): run cowshed login ${this.registry} or pass --creds`, { exitCode: 1 });
  }

  private async authorization(scopes: string[], refresh: boolean): Promise<string | undefined> {
    const c = this.challenge;
    if (!c) return undefined;
    if (c.scheme === 'basic') {
      if (!this.credentials) return undefined;
      return `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`;
    }
    const key = scopes.join(' ');
    if (!refresh && this.tokens.has(key)) return `Bearer ${this.tokens.get(key)}`;
    const realm = c.params.realm;
    if (!realm) throw new CowshedError('EFORMAT', `${this.registry}: bearer challenge without a realm`);
    const u = this.httpUrl(realm, 'token realm');
    if (c.params.service) u.searchParams.set('service', c.params.service);
    for (const s of scopes) u.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    if (this.credentials) {
      headers.authorization = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`;
    }
    const res = await this.withRetries(`token from ${u.origin}`, () => this.send(u.toString(), { headers }));
    if (res.status === 401 || res.status === 403) { await res.body?.cancel(); throw this.authFailed(res.status, 'token request'); }
    if (!res.ok) { await res.body?.cancel(); throw new CowshedError('ETOOL', `${this.registry}: token server ${u.origin} answered HTTP ${res.status}`); }
    let body: { token?: unknown; access_token?: unknown };
    try { body = JSON.parse(await readLimited(res, this.bodyChunks(res, 'token response'), 1 << 20, 'token response')) as typeof body; } catch (e) {
      if (isCowshedError(e)) throw e;
      throw new CowshedError('EFORMAT', `${this.registry}: token server answered something that is not JSON`);
    }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : undefined;
    if (!token) throw new CowshedError('EFORMAT', `${this.registry}: token server answered without a token`);
    this.tokens.set(key, token);
    return `Bearer ${token}`;
  }

  /**
   * THE transport: every HTTP request of the client goes through here. One
   * attempt, no auth logic; TLS failures become one-line errors (not
   * retried), other network failures stay TypeErrors (retried by callers).
   */
  async send(url: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer }): Promise<Response> {
    // Plain HTTP has no TLS to configure: Node's own fetch (already in its
    // snapshot) starts faster than loading undici, which HTTPS needs.
    const https = url.startsWith('https:');
    let doFetch: (u: string, i: RequestInit) => Promise<Response> = fetch;
    if (https) {
      const { fetch: undiciFetch, Agent: AgentClass } = await import('undici');
      if (!this.agent) {
        const tls = tlsMaterial(this.registry, this.opts.certDir);
        this.agent = new AgentClass({ connect: { secureContext: tls.context, rejectUnauthorized: !this.insecure } });
      }
      const dispatcher = this.agent;
      doFetch = async (u, i) => (await undiciFetch(u, { ...(i as object), dispatcher })) as unknown as Response;
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(new CowshedError('ETOOL', `no answer from ${new URL(url).host} in ${this.idleMs / 1000} s`)), this.idleMs);
    try {
      return await doFetch(url, { ...init, signal: ctl.signal, redirect: 'follow' });
    } catch (e) {
      if (ctl.signal.aborted) throw new TypeError(`timed out: ${describe(ctl.signal.reason)}`);
      const tlsError = this.tlsError(url, e);
      if (tlsError) throw tlsError;
      // Closed right after the handshake: a TLS alert undici did not pass on? Ask once more, bare.
      if (url.startsWith('https:') && SOCKET_CLOSED.has(errorCode(e)?.code ?? '')) {
        const diagnosed = await this.diagnoseTls(new URL(url));
        if (diagnosed) throw diagnosed;
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A bare TLS connection with the client's settings, to read the alert that closes it, if any. */
  private async diagnoseTls(u: URL): Promise<CowshedError | undefined> {
    const tls = tlsMaterial(this.registry, this.opts.certDir);
    return new Promise((resolve) => {
      const sock = tlsConnect({
        host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443), secureContext: tls.context,
        rejectUnauthorized: !this.insecure, servername: isIP(u.hostname) ? undefined : u.hostname, ALPNProtocols: ['http/1.1'],
      });
      let settled = false;
      const done = (e?: unknown): void => {
        if (settled) return;
        settled = true;
        sock.destroy();
        resolve(e === undefined ? undefined : this.tlsError(u.toString(), e));
      };
      sock.once('secureConnect', () => sock.write(`GET /v2/ HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`));
      sock.once('error', done);
      sock.once('data', () => done());
      sock.once('close', () => done());
      sock.setTimeout(5000, () => done());
    });
  }

  /** A TLS failure as a one-line error naming the host and the fix; undefined for other errors. */
  private tlsError(url: string, e: unknown): CowshedError | undefined {
    const u = new URL(url);
    if (u.protocol !== 'https:') return undefined;
    const c = errorCode(e);
    if (!c) return undefined;
    const host = u.host;
    const dir = suggestedCertDir(this.registry);
    const skip = 'or pass --tls-verify=false to skip verification';
    const mk = (m: string): CowshedError => new CowshedError('ETOOL', `${host}: ${m}`, { cause: e, exitCode: 1 });
    if (UNTRUSTED.has(c.code)) return mk(`the registry's certificate is not signed by a trusted CA (${c.code}): put the CA certificate in ${dir}/ca.crt (or in a --cert-dir), ${skip}`);
    if (c.code === 'CERT_HAS_EXPIRED' || c.code === 'CERT_NOT_YET_VALID') return mk(`the registry's certificate ${c.code === 'CERT_HAS_EXPIRED' ? 'has expired' : 'is not valid yet'}: renew it on the registry (or check this machine's clock), ${skip}`);
    if (c.code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      const names = c.cert?.subjectaltname || (c.cert?.subject?.CN ? `CN ${c.cert.subject.CN}` : 'no names');
      return mk(`the registry's certificate is for ${names}, not ${u.hostname}: give the registry a certificate for ${u.hostname}, ${skip}`);
    }
    if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL|HTTP_REQUEST/.test(c.code) || /wrong version number|packet length too long/.test(c.message)) {
      return mk('the registry answers plain HTTP, not HTTPS: if it is meant to, pass --tls-verify=false or set insecure = true for it in registries.conf');
    }
    if (/ALERT_CERTIFICATE_REQUIRED|ALERT_BAD_CERTIFICATE|ALERT_HANDSHAKE_FAILURE|ALERT_UNKNOWN_CA|ALERT_CERTIFICATE_UNKNOWN/.test(c.code)) {
      const tls = tlsMaterial(this.registry, this.opts.certDir);
      return mk(tls.clientCert
        ? `the registry refused the client certificate ${tls.clientCert} (${c.code}): put one it accepts there, with its key`
        : `the registry requires a client certificate (${c.code}): put client.cert and client.key in ${dir}/ (or in a --cert-dir)`);
    }
    if (c.code.startsWith('ERR_SSL_') || c.code.startsWith('ERR_TLS_') || c.code.startsWith('ERR_OSSL_')) return mk(`TLS failed (${c.code}: ${c.message}): check certs.d for this registry, ${skip}`);
    return undefined;
  }

  /**
   * Decides http or https for an insecure registry, once: HTTPS (without
   * verification) if it answers at all, else plain HTTP. One attempt, so
   * a mirror that is down is passed over at once.
   */
  async probe(): Promise<void> {
    if (this.schemeKnown) {
      const res = await this.send(this.url('/v2/'), { method: 'GET' }).catch((e: unknown) => {
        if (isCowshedError(e)) throw e;
        throw new CowshedError('ETOOL', `${this.registry}: ${describe(e)}`, { cause: e });
      });
      await res.body?.cancel().catch(() => {});
      return;
    }
    await this.ensureScheme(true);
  }

  private async ensureScheme(strict = false): Promise<void> {
    if (this.schemeKnown) return;
    // A broken certs.d is an error, not a reason to try plain HTTP. The probe does not verify: no system CAs.
    const tls = tlsMaterial(this.registry, this.opts.certDir, { systemCas: false });
    if (await this.speaksTls(tls.context)) {
      this.schemeKnown = true;
      return;
    }
    this.base = `http://${this.apiHost}`;
    if (strict) {
      const res = await this.send(this.url('/v2/'), { method: 'GET' }).catch((e: unknown) => {
        throw new CowshedError('ETOOL', `${this.registry}: neither HTTPS nor HTTP answers: ${describe(e)}`, { cause: e });
      });
      await res.body?.cancel().catch(() => {});
    }
    this.schemeKnown = true;
  }

  /**
   * Whether the registry completes a TLS handshake (verification off: this
   * is for insecure registries). A server that answers the hello with
   * plain HTTP, closes, or says nothing for 3 s does not.
   */
  private async speaksTls(secureContext: SecureContext): Promise<boolean> {
    const u = new URL(`https://${this.apiHost}/`);
    return new Promise((resolve) => {
      const sock = tlsConnect({
        host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443), secureContext, rejectUnauthorized: false,
        servername: isIP(u.hostname) ? undefined : u.hostname, ALPNProtocols: ['http/1.1'],
      });
      let settled = false;
      const done = (yes: boolean): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        resolve(yes);
      };
      const timer = setTimeout(() => done(false), 3000);
      sock.once('secureConnect', () => done(true));
      sock.once('error', () => done(false));
      sock.once('close', () => done(false));
    });
  }

  private get idleMs(): number { return this.opts.idleTimeoutMs ?? 60_000; }

  /** Runs attempt() until it gives a response that is not 5xx / 429, or the retry budget is spent. */
  private async withRetries(what: string, attempt: () => Promise<Response>): Promise<Response> {
    const max = this.opts.maxAttempts ?? 5;
    const budget = this.opts.maxRetryTimeMs ?? 120_000;
    const start = Date.now();
    let delay = this.opts.retryDelayMs ?? 250;
    for (let n = 1; ; n++) {
      let res: Response | undefined;
      let err: unknown;
      try { res = await attempt(); } catch (e) {
        if (!isNetworkError(e)) throw e;
        err = e;
      }
      const retryable = err !== undefined || (res !== undefined && (res.status >= 500 || res.status === 429) && res.status !== 501);
      if (!retryable) return res!;
      if (n >= max || Date.now() - start + delay > budget) {
        if (res) return res; // the caller reports the status
        throw new CowshedError('ETOOL', `${this.registry}: ${what}: ${describe(err)} (gave up after ${n} attempts)`, { cause: err });
      }
      await res?.body?.cancel().catch(() => {});
      const retryAfter = Number(res?.headers.get('retry-after'));
      await sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter * 1000, 10_000) : delay);
      delay = Math.min(delay * 2, 5_000);
    }
  }

  /**
   * One API request with auth and retries. Returns the response (body
   * unread) when its status is accepted by `ok`; throws a typed error
   * otherwise.
   */
  async request(method: string, pathOrUrl: string, ro: RequestOptions): Promise<Response> {
    await this.ensureScheme();
    const url = this.url(pathOrUrl);
    const ok = ro.ok ?? ((s: number) => s >= 200 && s < 300);
    let refreshed = false;
    for (let round = 0; round < 3; round++) {
      const auth = await this.authorization(ro.scopes, false);
      const res = await this.withRetries(ro.what, () => {
        const headers: Record<string, string> = { ...ro.headers };
        if (auth) headers.authorization = auth;
        return this.send(url, { method, headers, body: ro.body });
      });
      if (ro.body) this.bytesSent += ro.body.length;
      if (res.status === 401) {
        await res.body?.cancel().catch(() => {});
        const c = parseChallenge(res.headers.get('www-authenticate'));
        const sameScheme = c && this.challenge && c.scheme === this.challenge.scheme;
        if (c && !sameScheme) { this.challenge = c; continue; }
        if (c?.scheme === 'bearer' && !refreshed) {
          // An expired token (long transfers): get a fresh one, once.
          this.challenge = c;
          refreshed = true;
          await this.authorization(ro.scopes, true);
          continue;
        }
        throw this.authFailed(401, ro.what);
      }
      if (ok(res.status)) return res;
      const detail = await errorDetail(res, this.bodyChunks(res, ro.what));
      if (res.status === 403) throw new CowshedError('EINVAL', `${this.registry}: ${ro.what}: access denied (HTTP 403${detail})`, { exitCode: 1 });
      if (res.status === 404) throw new CowshedError('ENOENT', `${this.registry}: ${ro.what}: not found (HTTP 404${detail})`);
      throw new CowshedError('ETOOL', `${this.registry}: ${ro.what}: HTTP ${res.status}${detail}`);
    }
    throw this.authFailed(401, ro.what);
  }

  /** GET /v2/: checks the registry is there and the credentials work. */
  async ping(): Promise<void> {
    const res = await this.request('GET', '/v2/', { scopes: [], what: 'API check' });
    await res.body?.cancel().catch(() => {});
    if (this.challenge?.scheme === 'bearer' && this.credentials) {
      // Bearer registries answer /v2/ with a bare 401: check the credentials at the token server.
      await this.authorization([], true);
    }
  }

  /** HEAD a manifest: its digest and media type, or undefined if absent. */
  async headManifest(repo: string, reference: string): Promise<{ digest?: string; mediaType?: string; size?: number } | undefined> {
    const res = await this.request('HEAD', `/v2/${repo}/manifests/${reference}`, {
      headers: { accept: MANIFEST_ACCEPT }, scopes: [pullScope(repo)], ok: (s) => s === 200 || s === 404, what: `manifest ${repo}:${reference}`,
    });
    if (res.status === 404) return undefined;
    return {
      digest: res.headers.get('docker-content-digest') ?? undefined,
      mediaType: res.headers.get('content-type')?.split(';')[0].trim(),
      size: Number(res.headers.get('content-length') ?? NaN),
    };
  }

  /** GET a manifest or index: bytes (bounded), media type, the digest the registry claims. */
  async getManifest(repo: string, reference: string, maxBytes: number): Promise<{ bytes: Buffer; mediaType: string; claimedDigest?: string }> {
    const what = `manifest ${repo}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
    const max = this.opts.maxAttempts ?? 5;
    for (let n = 1; ; n++) {
      const res = await this.request('GET', `/v2/${repo}/manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT }, scopes: [pullScope(repo)], what });
      let bytes: Buffer;
      try {
        bytes = Buffer.from(await readLimited(res, this.bodyChunks(res, what), maxBytes, what, true));
      } catch (e) {
        if (!isNetworkError(e)) throw e;
        if (n >= max) throw new CowshedError('ETOOL', `${this.registry}: ${what}: ${describe(e)} (gave up after ${n} attempts)`, { cause: e });
        await sleep(this.opts.retryDelayMs ?? 250);
        continue;
      }
      return { bytes, mediaType: res.headers.get('content-type')?.split(';')[0].trim() ?? '', claimedDigest: res.headers.get('docker-content-digest') ?? undefined };
    }
  }

  /** Size of a blob in the repository, or undefined if it is not there. */
  async headBlob(repo: string, digest: string, scopes = [pullScope(repo)]): Promise<number | undefined> {
    const res = await this.request('HEAD', `/v2/${repo}/blobs/${digest}`, { scopes, ok: (s) => s === 200 || s === 404, what: `blob ${digest}` });
    if (res.status === 404) return undefined;
    const n = Number(res.headers.get('content-length'));
    return Number.isFinite(n) ? n : -1;
  }

  /**
   * Streams a blob. A dropped or truncated connection resumes where it
   * stopped with `Range: bytes=N-` (restarting from zero if the registry
   * ignores ranges). The caller verifies digest and size.
   */
  async *blob(repo: string, digest: string, size: number, stats?: BlobStreamStats): AsyncGenerator<Uint8Array> {
    const what = `blob ${digest}`;
    let got = 0;
    const max = this.opts.maxAttempts ?? 5;
    let failures = 0;
    let tries = 0;
    let delay = this.opts.retryDelayMs ?? 250;
    for (;;) {
      const headers: Record<string, string> = {};
      if (got > 0) headers.range = `bytes=${got}-`;
      const res = await this.request('GET', `/v2/${repo}/blobs/${digest}`, { headers, scopes: [pullScope(repo)], what });
      if (stats) { stats.requests++; if (got > 0) stats.resumed++; }
      if (got > 0) {
        if (res.status === 200) {
          // Range ignored: start over, dropping what was already passed on is impossible, so skip it.
          yield* skipPrefix(this.bodyChunks(res, what), got, (n) => { this.bytesReceived += n; if (stats) stats.bytes += n; });
          return;
        }
        const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (res.status !== 206 || !cr || Number(cr[1]) !== got) {
          await res.body?.cancel().catch(() => {});
          throw new CowshedError('ETOOL', `${this.registry}: ${what}: resuming at byte ${got} got HTTP ${res.status} with Content-Range ${JSON.stringify(res.headers.get('content-range'))}`);
        }
      }
      const before = got;
      let lastError: unknown;
      try {
        for await (const chunk of this.bodyChunks(res, what)) {
          got += chunk.length;
          this.bytesReceived += chunk.length;
          if (stats) stats.bytes += chunk.length;
          yield chunk;
        }
        if (got >= size) return; // longer, or wrong: the caller's digest check says so
        // Ended short without an error (a proxy closing a chunked body): resume.
      } catch (e) {
        if (!isNetworkError(e)) throw e;
        lastError = e;
      }
      // Tries that made no progress are bounded; so are all tries (a server dripping a byte per connection).
      if (got === before) failures++;
      if (failures >= max || ++tries >= max * 4) {
        throw new CowshedError('ETOOL', `${this.registry}: ${what}: connection dropped at byte ${got} of ${size}${lastError ? ` (${describe(lastError)})` : ''}; gave up after ${tries} tries`, { cause: lastError });
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 5_000);
    }
  }

  /** A response body as chunks; a stall longer than the idle timeout is a dropped connection. */
  async *bodyChunks(res: Response, what: string): AsyncGenerator<Uint8Array> {
    if (!res.body) return;
    const reader = res.body.getReader();
    try {
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const stalled = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new TypeError(`${what}: no data for ${this.idleMs / 1000} s`)), this.idleMs);
        });
        let r: Awaited<ReturnType<typeof reader.read>>;
        try { r = await Promise.race([reader.read(), stalled]); } finally { clearTimeout(timer); }
        if (r.done) return;
        yield r.value;
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  // ---- uploads

  /** Tries a cross-repository mount; true if the registry mounted the blob. */
  async mountBlob(repo: string, digest: string, from: string): Promise<boolean> {
    const u = `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`;
    const res = await this.request('POST', u, { scopes: [pushScope(repo), pullScope(from)], ok: (s) => s === 201 || s === 202, what: `mount of ${digest} from ${from}` });
    await res.body?.cancel().catch(() => {});
    if (res.status === 201) return true;
    // 202: an upload session the registry opened instead; cancel it.
    const loc = res.headers.get('location');
    if (loc) {
      await this.request('DELETE', this.resolveLocation(loc), { scopes: [pushScope(repo)], ok: () => true, what: 'cancel upload' })
        .then((r) => r.body?.cancel()).catch(() => {});
    }
    return false;
  }

  private resolveLocation(loc: string): string { return this.httpUrl(loc, 'upload location').toString(); }

  /** A URL the registry gave (realm, Location), relative to it; only http(s) is followed. */
  private httpUrl(text: string, what: string): URL {
    let u: URL;
    try { u = new URL(text, this.base); } catch { throw new CowshedError('EFORMAT', `${this.registry}: the ${what} ${JSON.stringify(text.slice(0, 200))} is not a URL`); }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CowshedError('EFORMAT', `${this.registry}: the ${what} ${JSON.stringify(text.slice(0, 200))} is not an http(s) URL`);
    return u;
  }

  /** Starts an upload; returns the session URL. */
  async startUpload(repo: string): Promise<string> {
    const res = await this.request('POST', `/v2/${repo}/blobs/uploads/`, { scopes: [pushScope(repo)], ok: (s) => s === 202, what: 'blob upload start' });
    await res.body?.cancel().catch(() => {});
    const loc = res.headers.get('location');
    if (!loc) throw new CowshedError('EFORMAT', `${this.registry}: upload started without a Location`);
    return this.resolveLocation(loc);
  }

  /** PATCHes one chunk at `offset`; returns the next session URL. */
  async uploadChunk(repo: string, session: string, chunk: Buffer, offset: number): Promise<string> {
    const res = await this.request('PATCH', session, {
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + chunk.length - 1}`, 'content-length': String(chunk.length) },
      body: chunk, scopes: [pushScope(repo)], ok: (s) => s === 202, what: 'blob upload chunk',
    });
    await res.body?.cancel().catch(() => {});
    return this.resolveLocation(res.headers.get('location') ?? session);
  }

  /** Completes an upload with the blob's digest (and the last bytes, if any). */
  async finishUpload(repo: string, session: string, digest: string, last?: Buffer): Promise<void> {
    const u = this.httpUrl(session, 'upload location');
    u.searchParams.set('digest', digest);
    const res = await this.request('PUT', u.toString(), {
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(last?.length ?? 0) },
      body: last ?? Buffer.alloc(0), scopes: [pushScope(repo)], ok: (s) => s === 201, what: `blob upload ${digest}`,
    });
    await res.body?.cancel().catch(() => {});
  }

  async putManifest(repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string | undefined> {
    const res = await this.request('PUT', `/v2/${repo}/manifests/${reference}`, {
      headers: { 'content-type': mediaType }, body: bytes, scopes: [pushScope(repo)], ok: (s) => s === 201 || s === 200, what: `manifest ${repo}:${reference}`,
    });
    await res.body?.cancel().catch(() => {});
    return res.headers.get('docker-content-digest') ?? undefined;
  }
}

export const pullScope = (repo: string): string => `repository:${repo}:pull`;
export const pushScope = (repo: string): string => `repository:${repo}:pull,push`;

async function* skipPrefix(src: AsyncIterable<Uint8Array>, skip: number, count: (n: number) => void): AsyncGenerator<Uint8Array> {
  let left = skip;
  for await (const chunk of src) {
    count(chunk.length);
    if (left >= chunk.length) { left -= chunk.length; continue; }
    yield left > 0 ? chunk.subarray(left) : chunk;
    left = 0;
  }
}

/** Reads a (small) body, refusing more than max bytes. */
async function readLimited(res: Response, body: AsyncIterable<Uint8Array>, max: number, what: string, binary: true): Promise<Uint8Array>;
async function readLimited(res: Response, body: AsyncIterable<Uint8Array>, max: number, what: string): Promise<string>;
async function readLimited(res: Response, body: AsyncIterable<Uint8Array>, max: number, what: string, binary?: boolean): Promise<Uint8Array | string> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > max) {
    await res.body?.cancel().catch(() => {});
    throw new CowshedError('EFORMAT', `${what}: ${declared} bytes is more than the limit of ${max}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const c of body) {
    total += c.length;
    if (total > max) throw new CowshedError('EFORMAT', `${what}: more than the limit of ${max} bytes`);
    chunks.push(c);
  }
  const buf = Buffer.concat(chunks);
  return binary ? buf : buf.toString('utf8');
}

async function errorDetail(res: Response, body: AsyncIterable<Uint8Array>): Promise<string> {
  try {
    const text = await readLimited(res, body, 64 << 10, 'error body');
    const errors = (JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }).errors;
    if (Array.isArray(errors) && errors.length) return `: ${errors.map((e) => [e.code, e.message].filter(Boolean).join(' ')).join('; ').slice(0, 200)}`;
  } catch { /* not the registry's JSON error format */ }
  return '';
}
