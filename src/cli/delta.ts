// Offline deltas: `delta create FROM TO DEST` and `delta apply DELTA [NAME]`
// (DEST/DELTA: oci:DIR[:TAG] or a file), for hosts without a registry.
import type { Command } from 'commander';
import type { Store } from '../store/store.ts';
import { formatBytes } from './output.ts';

type WithStore = <T>(fn: (s: Store) => Promise<T> | T) => Promise<T>;

const createLib = () => import('../delta/create.ts');
const artifactLib = () => import('../delta/artifact.ts');
const applyLib = () => import('../delta/apply.ts');

export function deltaCommands(program: Command, withStore: WithStore, say: (s: string) => void): void {
  const quietGlobal = (): boolean => Boolean(program.opts<{ quiet?: boolean }>().quiet);
  const delta = program.command('delta').description('offline deltas between stored images');

  delta.command('create')
    .description('write the delta from image FROM to image TO into DEST (oci:DIR[:TAG] or a file)')
    .argument('<from>').argument('<to>').argument('<dest>')
    .option('--json', 'JSON output')
    .action(async (from: string, to: string, dest: string, o: { json?: boolean }) => withStore(async (s) => {
      const t0 = performance.now();
      const stats = { objects: 0, patches: 0, zstd: 0, raw: 0, objectBytes: 0, packBytes: 0 };
      const d = await (await createLib()).createDelta(s, from, to, stats);
      const a = await artifactLib();
      let r: { digest: string; bytes: number };
      if (dest.startsWith('oci:')) {
        let dir = dest.slice(4);
        let tag: string | undefined;
        const i = dir.lastIndexOf(':');
        if (i > 0) { tag = dir.slice(i + 1); dir = dir.slice(0, i); }
        r = await a.writeDeltaLayout(dir, d, tag);
      } else {
        r = await a.writeDeltaFile(dest, d);
      }
      const secs = (performance.now() - t0) / 1000;
      if (o.json) return say(JSON.stringify({ digest: r.digest, bytes: r.bytes, ...stats, seconds: secs }));
      if (!quietGlobal()) {
        process.stderr.write(`delta ${from} -> ${to}: ${stats.objects} objects (${stats.patches} patches, ${stats.zstd} compressed, ${stats.raw} raw) of ${formatBytes(stats.objectBytes)} in ${formatBytes(r.bytes)}, ${secs.toFixed(2)} s\n`);
      }
      say(r.digest);
    }));

  delta.command('apply')
    .description('rebuild the image a delta (oci:DIR[:TAG] or a file) leads to, from what the store holds')
    .argument('<delta>').argument('[name]', 'NAME[:TAG] to give the image (default: the name recorded in the delta)')
    .option('--json', 'JSON output')
    .action(async (ref: string, name: string | undefined, o: { json?: boolean }) => withStore(async (s) => {
      const t0 = performance.now();
      const reader = await (await artifactLib()).openLocalDelta(ref);
      try {
        const r = await (await applyLib()).applyDelta(s, reader, name);
        const secs = (performance.now() - t0) / 1000;
        if (o.json) {
          return say(JSON.stringify({ id: r.id, name: r.name, bytesRead: r.bytesRead, objectsRebuilt: r.objectsRebuilt, objectsWritten: r.objectsWritten, seconds: secs, plan: r.plan }));
        }
        if (!quietGlobal()) {
          process.stderr.write(`applied ${r.name}: ${r.objectsRebuilt} objects rebuilt and verified, ${formatBytes(r.bytesRead)} of the delta read, ${r.entries} entries in ${secs.toFixed(2)} s\n`);
        }
        say(r.id);
      } finally {
        await reader.close();
      }
    }));
}
