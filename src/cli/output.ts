// Output helpers for the CLI: aligned tables, sizes and ages as podman
// prints them, and progress that only shows on a terminal.
import { createRequire } from 'node:module';
import { formatBytes } from '../util/fs.ts';

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export { formatBytes };

export function age(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} seconds ago`;
  if (s < 3600) return `${Math.round(s / 60)} minutes ago`;
  if (s < 86400) return `${Math.round(s / 3600)} hours ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export const shortId = (id: string): string => id.replace(/^sha256:/, '').slice(0, 12);

/** A progress bar on a terminal (stderr), nothing otherwise. */
export interface Progress { update(value: number, total: number, label: string): void; stop(): void }

export function progress(enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  // Loaded only when a bar is shown (a terminal): it is a dozen modules.
  const { SingleBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const bar = new SingleBar({ format: ' {label} [{bar}] {value}/{total}', stream: process.stderr, hideCursor: true, clearOnComplete: true }, Presets.shades_classic);
  let started = false;
  return {
    update(value, total, label) {
      if (!started) { bar.start(total, value, { label }); started = true; }
      bar.setTotal(total);
      bar.update(value, { label });
    },
    stop() { if (started) bar.stop(); },
  };
}
