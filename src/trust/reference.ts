// Docker references as containers/image compares them: the fully expanded
// form (docker.io/library/busybox), a name alone, with a tag, or with a
// digest. Policy scopes and signature identities use these strings.

import { parseRegistryRef } from '../registry/client.ts';

export interface DockerRef {
  /** host/repo, fully expanded. */
  name: string;
  /** host (with port) as written in the name. */
  host: string;
  /** repo path without the host (the lookaside directory uses it). */
  path: string;
  tag?: string;
  digest?: string;
}

/** Parses like reference.ParseNormalizedNamed: no :latest is added to a bare name. Throws on a bad reference. */
export function parseDockerRef(s: string): DockerRef {
  const at = s.indexOf('@');
  const beforeDigest = at >= 0 ? s.slice(0, at) : s;
  const nameOnly = at < 0 && beforeDigest.lastIndexOf(':') <= beforeDigest.lastIndexOf('/');
  const r = parseRegistryRef(s);
  const ref: DockerRef = { name: `${r.registry}/${r.repository}`, host: r.registry, path: r.repository };
  if (!nameOnly && r.tag !== undefined) ref.tag = r.tag;
  if (r.digest !== undefined) ref.digest = r.digest;
  return ref;
}

export function formatDockerRef(r: DockerRef): string {
  return `${r.name}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}

export const isNameOnly = (r: DockerRef): boolean => r.tag === undefined && r.digest === undefined;

/** The policy identity of an image: host/repo:tag, or host/repo@digest. */
export function policyIdentity(r: DockerRef): string {
  return r.tag !== undefined ? `${r.name}:${r.tag}` : r.digest !== undefined ? `${r.name}@${r.digest}` : r.name;
}

/** Scopes from most to least specific after the identity itself: repo, parent namespaces, host, then *.domain wildcards. */
export function policyNamespaces(r: DockerRef): string[] {
  const out: string[] = [];
  let name = r.name;
  for (;;) {
    out.push(name);
    const slash = name.lastIndexOf('/');
    if (slash < 0) break;
    name = name.slice(0, slash);
  }
  const colon = name.indexOf(':');
  if (colon >= 0) name = name.slice(0, colon);
  for (;;) {
    const dot = name.indexOf('.');
    if (dot < 0) break;
    name = name.slice(dot + 1);
    out.push(`*.${name}`);
  }
  return out;
}
