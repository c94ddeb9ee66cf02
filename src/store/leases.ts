// Leases keep gc and writers apart without a lock file: a writer (import,
// commit) registers a 'write' lease, gc a 'gc' lease, each inside one
// BEGIN IMMEDIATE transaction that also checks for the other kind. Leases of
// dead processes (a SIGKILL) are ignored and cleaned up.
import type { Db } from './db.ts';
import { CowshedError } from '../util/errors.ts';

export type LeaseKind = 'write' | 'gc';

export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === 'EPERM';
  }
}

/**
 * Whether a temporary name made as `.tmp-<pid>-…` belongs to another process
 * that is still running (what it names is being made; not gc's to take).
 */
export function tmpOfLiveProcess(name: string): boolean {
  const m = /^\.tmp-(\d+)-/.exec(name);
  return m !== null && Number(m[1]) !== process.pid && pidAlive(Number(m[1]));
}

export interface Lease { release(): void }

/** Take a lease, waiting (up to timeoutMs) while a conflicting one is held. */
export async function acquireLease(db: Db, kind: LeaseKind, timeoutMs = 120_000): Promise<Lease> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const id = db.tx(() => {
      for (const l of db.all<{ id: number; pid: number }>('SELECT id, pid FROM leases')) {
        if (!pidAlive(l.pid)) db.run('DELETE FROM leases WHERE id = ?', l.id);
      }
      const conflict = kind === 'gc'
        ? db.get('SELECT 1 FROM leases LIMIT 1')
        : db.get("SELECT 1 FROM leases WHERE kind = 'gc' LIMIT 1");
      if (conflict) return undefined;
      db.run('INSERT INTO leases (pid, kind, started) VALUES (?, ?, ?)', process.pid, kind, Date.now());
      return Number(db.get<{ id: number }>('SELECT last_insert_rowid() AS id')!.id);
    });
    if (id !== undefined) {
      let released = false;
      return {
        release: () => {
          if (released) return;
          released = true;
          db.run('DELETE FROM leases WHERE id = ?', id);
        },
      };
    }
    if (Date.now() > deadline) {
      throw new CowshedError('ELOCKED', kind === 'gc' ? 'gc is waiting for other cowshed processes to finish; try again later' : 'the store is being garbage-collected; try again later');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
