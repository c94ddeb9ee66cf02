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

/** How long ago, in podman's words (go-units HumanDuration). */
export function age(ms: number): string {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  const h = s / 3600;
  const d = h / 24;
  let t: string;
  if (s < 1) t = 'Less than a second';
  else if (s < 2) t = '1 second';
  else if (s < 60) t = `${Math.floor(s)} seconds`;
  else if (s < 120) t = 'About a minute';
  else if (s < 3600) t = `${Math.floor(s / 60)} minutes`;
  else if (s < 7200) t = 'About an hour';
  else if (h < 48) t = `${Math.floor(h)} hours`;
  else if (d < 14) t = `${Math.floor(d)} days`;
  else if (d < 90) t = `${Math.floor(d / 7)} weeks`;
  else if (d < 730) t = `${Math.floor(d / 30)} months`;
  else t = `${Math.floor(d / 365)} years`;
  return `${t} ago`;
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
