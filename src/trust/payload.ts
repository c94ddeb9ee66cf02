// Signature payloads, parsed as strictly as containers/image parses them:
//   {"critical":{"identity":{"docker-reference":R},"image":{"docker-manifest-digest":D},"type":T},"optional":{…}}
// T is "cosign container image signature" (sigstore) or "atomic container
// signature" (GPG simple signing). `critical` and its members have exactly
// these fields; `optional` may be null and its unknown keys are ignored.
// cowshed adds the image's composefs digest to `optional` when it signs.

import { CowshedError } from '../util/errors.ts';

export const SIGSTORE_TYPE = 'cosign container image signature';
export const SIMPLE_SIGNING_TYPE = 'atomic container signature';
/** The optional key cowshed writes: the fs-verity digest (64 hex) of the image's composefs image. */
export const COMPOSEFS_KEY = 'dev.cowshed.composefs-digest';
const MAX_PAYLOAD = 64 << 10;

export interface Payload {
  type: string;
  dockerReference: string;
  manifestDigest: string;
  creator?: string;
  timestamp?: number;
  /** cowshed's composefs digest, when the signer put one in. */
  composefs?: string;
}

export function makePayload(type: string, dockerReference: string, manifestDigest: string, composefs?: string): Buffer {
  const optional: Record<string, string | number> = { creator: 'cowshed', timestamp: Math.floor(Date.now() / 1000) };
  if (composefs !== undefined) optional[COMPOSEFS_KEY] = composefs;
  return Buffer.from(JSON.stringify({
    critical: { identity: { 'docker-reference': dockerReference }, image: { 'docker-manifest-digest': manifestDigest }, type },
    optional,
  }));
}

type Obj = Record<string, unknown>;

function exact(v: unknown, fields: string[], where: string, bad: (why: string) => never): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(`${where} is not a JSON object`);
  const o = v as Obj;
  for (const k of Object.keys(o)) if (!fields.includes(k)) bad(`unexpected field ${JSON.stringify(k)} in ${where}`);
  for (const f of fields) if (!(f in o)) bad(`missing field ${JSON.stringify(f)} in ${where}`);
  return o;
}

function noDuplicateKeys(text: string, bad: (why: string) => never): void {
  // JSON.parse keeps the last of duplicated keys; containers/image refuses them. A reviver sees each object once.
  const re = /"((?:[^"\\]|\\.)*)"\s*:/g;
  const stack: Array<Set<string>> = [];
  let i = 0;
  let inString = false;
  for (; i < text.length; i++) {
    const c = text[i];
    if (inString) { if (c === '\\') i++; else if (c === '"') inString = false; continue; }
    if (c === '{') stack.push(new Set());
    else if (c === '}') stack.pop();
    else if (c === '"') {
      re.lastIndex = i;
      const m = re.exec(text);
      if (m && m.index === i) {
        const top = stack[stack.length - 1];
        const k = JSON.parse(`"${m[1]}"`) as string;
        if (top?.has(k)) bad(`duplicate key ${JSON.stringify(k)}`);
        top?.add(k);
        i = re.lastIndex - 1;
      } else inString = true;
    }
  }
}

/** Parses an (untrusted) payload of the expected type; throws EFORMAT with `what` on anything else. */
export function parsePayload(bytes: Buffer, expectedType: string, what: string): Payload {
  const bad = (why: string): never => { throw new CowshedError('EFORMAT', `${what}: invalid signature payload: ${why}`); };
  if (bytes.length > MAX_PAYLOAD) bad('too big');
  const text = bytes.toString('utf8');
  let v: unknown;
  try { v = JSON.parse(text); } catch { return bad('not JSON'); }
  noDuplicateKeys(text, bad);
  const top = exact(v, ['critical', 'optional'], 'the payload', bad);
  const critical = exact(top.critical, ['type', 'image', 'identity'], 'critical', bad);
  if (typeof critical.type !== 'string') bad('critical.type is not a string');
  if (critical.type !== expectedType) bad(`type ${JSON.stringify(critical.type)}, expected ${JSON.stringify(expectedType)}`);
  const image = exact(critical.image, ['docker-manifest-digest'], 'critical.image', bad);
  const digest = image['docker-manifest-digest'];
  if (typeof digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(digest)) bad('critical.image.docker-manifest-digest is not a sha256 digest');
  const identity = exact(critical.identity, ['docker-reference'], 'critical.identity', bad);
  const ref = identity['docker-reference'];
  if (typeof ref !== 'string') bad('critical.identity.docker-reference is not a string');
  const p: Payload = { type: critical.type as string, dockerReference: ref as string, manifestDigest: digest as string };
  const optional = top.optional;
  if (optional !== null) {
    if (typeof optional !== 'object' || Array.isArray(optional)) bad('optional is not a JSON object');
    const o = optional as Obj;
    if ('creator' in o) { if (typeof o.creator !== 'string') bad('optional.creator is not a string'); p.creator = o.creator as string; }
    if ('timestamp' in o) {
      if (typeof o.timestamp !== 'number' || !Number.isInteger(o.timestamp)) bad('optional.timestamp is not an integer');
      p.timestamp = o.timestamp as number;
    }
    if (COMPOSEFS_KEY in o) {
      const c = o[COMPOSEFS_KEY];
      if (typeof c !== 'string' || !/^[0-9a-f]{64}$/.test(c)) bad(`optional.${COMPOSEFS_KEY} is not 64 hex digits`);
      p.composefs = c as string;
    }
  }
  return p;
}
