// `image trust show` and `image trust set`, as podman has them: a table of
// the policy's scopes, and setting one scope's requirement (the file is
// rewritten atomically, and must still parse afterwards).

import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { CowshedError } from '../util/errors.ts';
import { loadPolicy, parsePolicy, policyPath, SYSTEM_POLICY, userPolicyPath, type Requirement } from './policy.ts';
import type { Json } from './json-lines.ts';

export interface TrustRow { scope: string; type: string; keys: string; identity: string }

function row(scope: string, r: Requirement): TrustRow {
  const type = r.type === 'insecureAcceptAnything' ? 'accept' : r.type;
  if (r.type === 'insecureAcceptAnything' || r.type === 'reject') return { scope, type, keys: '', identity: '' };
  const keys = r.keys.paths ? r.keys.paths.join(', ') : `${r.keys.data?.length ?? 0} inline key(s)`;
  return { scope, type, keys, identity: r.signedIdentity.type };
}

export function showPolicy(explicit?: string): { file: string; rows: TrustRow[] } {
  const file = policyPath(explicit);
  if (file === undefined) throw new CowshedError('ENOENT', `no signature policy: neither ${userPolicyPath()} nor ${SYSTEM_POLICY} exists (name one with --signature-policy)`);
  const p = loadPolicy(file);
  const rows: TrustRow[] = p.default.map((r) => row('default', r));
  for (const [scope, reqs] of p.docker) for (const r of reqs) rows.push(row(scope === '' ? 'docker' : `docker:${scope}`, r));
  return { file, rows };
}

export function setPolicy(explicit: string | undefined, scope: string, type: string, keyFiles: string[]): string {
  const file = policyPath(explicit) ?? (process.geteuid?.() === 0 ? SYSTEM_POLICY : userPolicyPath());
  const raw: { [k: string]: Json } = existsSync(file) ? loadPolicy(file).raw : { default: [{ type: 'insecureAcceptAnything' }] };
  let req: { [k: string]: Json };
  switch (type) {
    case 'accept':
    case 'insecureAcceptAnything': req = { type: 'insecureAcceptAnything' }; break;
    case 'reject': req = { type: 'reject' }; break;
    case 'signedBy':
    case 'sigstoreSigned': {
      if (keyFiles.length === 0) throw new CowshedError('EINVAL', `${type} needs key files: -f FILE`);
      const paths = keyFiles.map((k) => resolve(k));
      for (const p of paths) if (!existsSync(p)) throw new CowshedError('ENOENT', `key file ${p} not found`);
      req = type === 'signedBy' ? { type, keyType: 'GPGKeys' } : { type };
      if (paths.length === 1) req.keyPath = paths[0]!; else req.keyPaths = paths;
      break;
    }
    default: throw new CowshedError('EINVAL', `unknown trust type ${JSON.stringify(type)}: accept, reject, signedBy or sigstoreSigned`);
  }
  const copy = JSON.parse(JSON.stringify(raw)) as { [k: string]: Json };
  if (scope === 'default') copy.default = [req];
  else {
    const transports = (copy.transports ??= {}) as { [k: string]: Json };
    const docker = (transports.docker ??= {}) as { [k: string]: Json };
    docker[scope] = [req];
  }
  const text = `${JSON.stringify(copy, null, 4)}\n`;
  parsePolicy(text, file); // refuses a scope the policy could not hold
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.cowshed-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, file);
  return file;
}
