// Client-side planning over deltas: for each thing the target needs (an
// object by fs-verity digest, or a layer's tar-split record), the cheapest
// way to get it: already in the store (free), or an entry of one of the
// loaded deltas, whose base is in turn in the store or obtainable (chains:
// with skip-deltas, a host at version i reaches version j through at most
// log n deltas, object by object). Pure: no I/O, so the bench and the pull
// planner use the same costs.
import type { DeltaEntry, DeltaIndex } from './format.ts';

/** An object (fs-verity hex) or a layer's tar-split record ('L:' + diff ID hex). */
export type Key = string;
export const layerKey = (diffId: string): Key => `L:${diffId.replace(/^sha256:/, '')}`;

export interface Have {
  object(hex: string): boolean;
  /** The store has a layer with this diff ID (so its tar-split record). */
  layer(diffIdHex: string): boolean;
}

export interface Step { reader: number; entry: DeltaEntry; entryIndex: number }

/** Longest chain of patches followed (a hostile index cannot make planning loop or recurse deeply). */
export const MAX_CHAIN = 16;

export class DeltaPlanner {
  private readonly producers = new Map<Key, Step[]>();
  private readonly memo = new Map<Key, { cost: number; step?: Step }>();
  private readonly have: Have;
  private readonly failed = new Set<string>();

  constructor(indexes: DeltaIndex[], have: Have) {
    this.have = have;
    indexes.forEach((ix, reader) => {
      const splitOf = new Map<number, string>();
      for (const l of ix.layers) splitOf.set(l.split, l.diffId);
      ix.entries.forEach((entry, entryIndex) => {
        const key = entry.k.startsWith('split-') ? splitOf.has(entryIndex) ? layerKey(splitOf.get(entryIndex)!) : undefined : entry.o;
        if (key === undefined) return;
        const list = this.producers.get(key);
        const step = { reader, entry, entryIndex };
        if (list) list.push(step); else this.producers.set(key, [step]);
      });
    });
  }

  private haveKey(key: Key): boolean {
    return key.startsWith('L:') ? this.have.layer(key.slice(2)) : this.have.object(key);
  }

  static baseKey(e: DeltaEntry): Key | undefined {
    if (e.k === 'patch') return e.b;
    if (e.k === 'split-patch') return `L:${e.b}`;
    return undefined;
  }

  /** A producer failed to rebuild what it claims (bad patch, digest mismatch): plan around it. */
  exclude(step: Step): void {
    this.failed.add(`${step.reader}:${step.entryIndex}`);
    this.memo.clear();
  }

  /** Bytes to fetch for `key` (and what it is patched from), Infinity when no delta and no store copy gives it. */
  cost(key: Key): number {
    return this.resolve(key, 0, new Set()).cost;
  }

  private resolve(key: Key, depth: number, active: Set<Key>): { cost: number; step?: Step } {
    if (this.haveKey(key)) return { cost: 0 };
    const known = this.memo.get(key);
    if (known) return known;
    if (depth > MAX_CHAIN || active.has(key)) return { cost: Infinity };
    active.add(key);
    let best: { cost: number; step?: Step } = { cost: Infinity };
    for (const step of this.producers.get(key) ?? []) {
      if (this.failed.has(`${step.reader}:${step.entryIndex}`)) continue;
      const base = DeltaPlanner.baseKey(step.entry);
      const c = step.entry.len + (base === undefined ? 0 : this.resolve(base, depth + 1, active).cost);
      if (c < best.cost) best = { cost: c, step };
    }
    active.delete(key);
    // Only results not cut short by the recursion guard are final.
    if (depth === 0 || best.cost !== Infinity) this.memo.set(key, best);
    return best;
  }

  /** The step chosen for `key` (undefined when in the store or unobtainable). */
  stepFor(key: Key): Step | undefined {
    return this.resolve(key, 0, new Set()).step;
  }

  /**
   * Every step needed for these keys, bases before what is patched from
   * them, each once; and the bytes they fetch (shared bases counted once).
   */
  closure(keys: Iterable<Key>): { steps: Array<{ key: Key; step: Step }>; bytes: number; missing: Key[] } {
    const steps: Array<{ key: Key; step: Step }> = [];
    const seen = new Set<Key>();
    const missing: Key[] = [];
    let bytes = 0;
    const visit = (key: Key, depth: number): boolean => {
      if (seen.has(key) || this.haveKey(key)) return true;
      const step = this.stepFor(key);
      if (!step || depth > MAX_CHAIN) return false;
      const base = DeltaPlanner.baseKey(step.entry);
      if (base !== undefined && !visit(base, depth + 1)) return false;
      seen.add(key);
      steps.push({ key, step });
      bytes += step.entry.len;
      return true;
    };
    for (const k of keys) if (!visit(k, 0)) missing.push(k);
    return { steps, bytes, missing };
  }
}
