// Mounting through util-linux's mount(8) and reading /proc/self/mountinfo.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { CowshedError } from './errors.ts';

/** Run a mount tool; its failure becomes a one-line ETOOL error naming what was being done. */
export function run(cmd: string, args: string[], what: string, cwd?: string): void {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd });
  } catch (e) {
    const stderr = String((e as { stderr?: Buffer }).stderr ?? '').trim().split('\n').pop();
    throw new CowshedError('ETOOL', `${what} failed: ${stderr || (e as Error).message}`, { cause: e });
  }
}

export function mountErofs(image: string, dir: string): void {
  run('mount', ['-t', 'erofs', '-o', 'loop,ro', image, dir], `mounting the composefs image ${image}`);
}

export interface OverlayOptions {
  lower: string[];
  data?: string[];
  upper?: string;
  work?: string;
  readonly?: boolean;
}

/** composefs-style overlay: metacopy and data-only lower layers (kernel >= 6.7 syntax). */
export function mountOverlay(dir: string, o: OverlayOptions): void {
  const opts = ['metacopy=on', 'redirect_dir=on'];
  if (o.readonly) opts.unshift('ro');
  for (const l of o.lower) opts.push(`lowerdir+=${l}`);
  for (const d of o.data ?? []) opts.push(`datadir+=${d}`);
  if (o.upper) opts.push(`upperdir=${o.upper}`, `workdir=${o.work}`);
  run('mount', ['-t', 'overlay', 'overlay', '-o', opts.join(','), dir], `mounting overlay at ${dir}`);
}

export function unmount(dir: string): void {
  run('umount', [dir], `unmounting ${dir}`);
}

/** Mount points currently mounted (decoded from /proc/self/mountinfo). */
export function mountPoints(): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f.length > 4) out.add(f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}
