// Sigstore keys as cosign and skopeo write them.
// Public: PEM "PUBLIC KEY" (SPKI). Private: PEM "ENCRYPTED SIGSTORE PRIVATE KEY"
// (or the older "ENCRYPTED COSIGN PRIVATE KEY") whose body is the JSON of
// go-securesystemslib's encrypted package:
//   {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":B64},
//    "cipher":{"name":"nacl/secretbox","nonce":B64},"ciphertext":B64}
// scrypt(passphrase, salt, N, r, p) gives the 32-byte secretbox key; the
// plaintext is the PKCS#8 DER of the ECDSA P-256 private key.

import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, scryptSync, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { CowshedError } from '../util/errors.ts';

type Nacl = typeof import('tweetnacl');
let nacl: Nacl | undefined;
const secretbox = (): Nacl['secretbox'] => (nacl ??= createRequire(import.meta.url)('tweetnacl') as Nacl).secretbox;

export const SIGSTORE_PRIVATE_PEM = 'ENCRYPTED SIGSTORE PRIVATE KEY';
export const COSIGN_PRIVATE_PEM = 'ENCRYPTED COSIGN PRIVATE KEY';
/** scrypt parameter sets go-securesystemslib accepts (legacy, standard, OWASP); cowshed writes the first, as cosign does. */
const ACCEPTED_N = [32768, 65536, 131072];
const WRITE_PARAMS = { N: 32768, r: 8, p: 1 };
const MAX_KEY_FILE = 64 << 10;

export interface PemBlock { type: string; bytes: Buffer }

/** Every PEM block of a text; throws if there is none. */
export function parsePem(text: string, what: string): PemBlock[] {
  if (text.length > MAX_KEY_FILE) throw new CowshedError('EFORMAT', `${what}: too big for a key file`);
  const out: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n([\s\S]*?)-----END \1-----/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const body = m[2].replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body)) throw new CowshedError('EFORMAT', `${what}: the ${m[1]} block is not base64`);
    out.push({ type: m[1], bytes: Buffer.from(body, 'base64') });
  }
  if (out.length === 0) throw new CowshedError('EFORMAT', `${what}: not a PEM file (no -----BEGIN ... ----- block)`);
  return out;
}

export function toPem(type: string, bytes: Buffer): string {
  const b64 = bytes.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${type}-----\n${b64}\n-----END ${type}-----\n`;
}

/** Public keys of a PEM text (every PUBLIC KEY block), ECDSA P-256 only, as containers/image uses them. */
export function readPublicKeys(text: string, what: string): KeyObject[] {
  const blocks = parsePem(text, what).filter((b) => b.type === 'PUBLIC KEY');
  if (blocks.length === 0) throw new CowshedError('EFORMAT', `${what}: no PUBLIC KEY block`);
  return blocks.map((b) => {
    let k: KeyObject;
    try { k = createPublicKey({ key: b.bytes, format: 'der', type: 'spki' }); } catch (e) {
      throw new CowshedError('EFORMAT', `${what}: the PUBLIC KEY block is not a valid key (${(e as Error).message})`);
    }
    if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new CowshedError('EUNSUPPORTED', `${what}: a ${k.asymmetricKeyType}${k.asymmetricKeyDetails?.namedCurve ? ` ${k.asymmetricKeyDetails.namedCurve}` : ''} key; cowshed verifies ECDSA P-256 sigstore keys`);
    }
    return k;
  });
}

interface EncryptedKey {
  kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: string; nonce: string };
  ciphertext: string;
}

function parseEncrypted(bytes: Buffer, what: string): EncryptedKey {
  const bad = (why: string): never => { throw new CowshedError('EFORMAT', `${what}: not a sigstore encrypted key: ${why}`); };
  let v: unknown;
  try { v = JSON.parse(bytes.toString('utf8')); } catch { return bad('the PEM body is not JSON'); }
  const o = v as EncryptedKey;
  if (typeof o !== 'object' || o === null || typeof o.kdf !== 'object' || o.kdf === null || typeof o.cipher !== 'object' || o.cipher === null) return bad('kdf and cipher objects expected');
  if (o.kdf.name !== 'scrypt') bad(`unknown kdf ${JSON.stringify(o.kdf.name)}`);
  if (o.cipher.name !== 'nacl/secretbox') bad(`unknown cipher ${JSON.stringify(o.cipher.name)}`);
  const p = o.kdf.params as { N: unknown; r: unknown; p: unknown } | undefined;
  if (typeof p !== 'object' || p === null || !ACCEPTED_N.includes(p.N as number) || p.r !== 8 || p.p !== 1) {
    bad(`unsupported scrypt parameters ${JSON.stringify(p)} (N 32768, 65536 or 131072 with r 8, p 1)`);
  }
  for (const [k, s] of [['salt', o.kdf.salt], ['nonce', o.cipher.nonce], ['ciphertext', o.ciphertext]] as const) {
    if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) bad(`${k} is not base64`);
  }
  if (Buffer.from(o.cipher.nonce, 'base64').length !== 24) bad('the nonce is not 24 bytes');
  return o;
}

function scryptKey(passphrase: Buffer, salt: Buffer, N: number, r: number, p: number): Buffer {
  return scryptSync(passphrase, salt, 32, { N, r, p, maxmem: 256 * N * r + (32 << 20) });
}

/** Decrypts a cosign/sigstore private key file. Wrong passphrase: a one-line EINVAL naming the file. */
export function decryptPrivateKey(text: string, passphrase: Buffer, what: string): KeyObject {
  const block = parsePem(text, what).find((b) => b.type === SIGSTORE_PRIVATE_PEM || b.type === COSIGN_PRIVATE_PEM);
  if (!block) throw new CowshedError('EFORMAT', `${what}: no ${SIGSTORE_PRIVATE_PEM} (or ${COSIGN_PRIVATE_PEM}) block`);
  const e = parseEncrypted(block.bytes, what);
  const key = scryptKey(passphrase, Buffer.from(e.kdf.salt, 'base64'), e.kdf.params.N, e.kdf.params.r, e.kdf.params.p);
  const plain = secretbox().open(new Uint8Array(Buffer.from(e.ciphertext, 'base64')), new Uint8Array(Buffer.from(e.cipher.nonce, 'base64')), new Uint8Array(key));
  if (!plain) throw new CowshedError('EINVAL', `${what}: wrong passphrase (the key does not decrypt)`, { exitCode: 1 });
  let k: KeyObject;
  try { k = createPrivateKey({ key: Buffer.from(plain), format: 'der', type: 'pkcs8' }); } catch {
    throw new CowshedError('EFORMAT', `${what}: the decrypted key is not PKCS#8`);
  }
  if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new CowshedError('EUNSUPPORTED', `${what}: a ${k.asymmetricKeyType} key; cowshed signs with ECDSA P-256 keys`);
  }
  return k;
}

/** Encrypts a private key as cosign does (scrypt N=32768 r=8 p=1, nacl secretbox); returns the PEM text. */
export function encryptPrivateKey(key: KeyObject, passphrase: Buffer): string {
  const salt = randomBytes(32);
  const nonce = randomBytes(24);
  const { N, r, p } = WRITE_PARAMS;
  const k = scryptKey(passphrase, salt, N, r, p);
  const der = key.export({ format: 'der', type: 'pkcs8' });
  const ct = secretbox()(new Uint8Array(der), new Uint8Array(nonce), new Uint8Array(k));
  const body: EncryptedKey = {
    kdf: { name: 'scrypt', params: { N, r, p }, salt: salt.toString('base64') },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: Buffer.from(ct).toString('base64'),
  };
  return toPem(SIGSTORE_PRIVATE_PEM, Buffer.from(JSON.stringify(body)));
}

export function publicKeyPem(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return toPem('PUBLIC KEY', pub.export({ format: 'der', type: 'spki' }));
}

/** A new ECDSA P-256 key pair: the encrypted private PEM and the public PEM. */
export function generateSigstoreKey(passphrase: Buffer): { privatePem: string; publicPem: string } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privatePem: encryptPrivateKey(privateKey, passphrase), publicPem: publicKeyPem(privateKey) };
}

/** A passphrase file's contents: the first line, as skopeo reads --passphrase-file. */
export function readPassphrase(bytes: Buffer): Buffer {
  const nl = bytes.indexOf(10);
  return nl >= 0 ? bytes.subarray(0, nl) : bytes;
}
