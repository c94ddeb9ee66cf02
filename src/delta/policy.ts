// Which deltas the server publishes (push --deltas): for version n of a
// repository (versions ordered oldest first, 1-based), deltas from the
// versions at these distances back. The default, `log`, is the skip-delta
// policy: distances 1, 2, 4, 8, …, so each version has O(log n) deltas and a
// host at any older version reaches it through at most log n of them.
// Alternatives (measured in bench/deltas.ts): `consecutive` (distance 1),
// `all` (every older version), `none`, or an explicit list "1,3,9".
import { CowshedError } from '../util/errors.ts';

export type DeltaPolicy = { kind: 'log' } | { kind: 'all' } | { kind: 'none' } | { kind: 'distances'; distances: number[] };

export const DEFAULT_POLICY = 'log';

export function parsePolicy(spec: string = DEFAULT_POLICY): DeltaPolicy {
  if (spec === 'log') return { kind: 'log' };
  if (spec === 'all') return { kind: 'all' };
  if (spec === 'none') return { kind: 'none' };
  if (spec === 'consecutive') return { kind: 'distances', distances: [1] };
  const parts = spec.split(',');
  const distances = parts.map(Number);
  if (parts.length === 0 || !distances.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw new CowshedError('EINVAL', `bad delta policy ${JSON.stringify(spec)}: use log, consecutive, all, none or distances like 1,2,4`);
  }
  return { kind: 'distances', distances: [...new Set(distances)].sort((a, b) => a - b) };
}

/** The versions (1-based, older than n) that version n gets deltas from. */
export function policyBases(p: DeltaPolicy, n: number): number[] {
  const out: number[] = [];
  if (p.kind === 'none') return out;
  if (p.kind === 'all') { for (let b = n - 1; b >= 1; b--) out.push(b); return out; }
  const ds = p.kind === 'log' ? [] : p.distances;
  if (p.kind === 'log') for (let d = 1; d < n; d *= 2) ds.push(d);
  for (const d of ds) if (n - d >= 1) out.push(n - d);
  return out;
}
