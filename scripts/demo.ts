// `npm run demo`: the main job end to end on local data. Builds (once,
// cached) a real Debian image with debootstrap, imports two versions of it
// into a fresh store, mounts one, verifies the store, and prints the dedup
// figures. Every step is a real cowshed CLI call, printed as it runs.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const tty = process.stdout.isTTY;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);

function step(title: string): void {
  console.log(`\n${bold(`== ${title}`)}`);
}

function cowshed(store: string, ...args: string[]): { out: string; ms: number } {
  console.log(`$ cowshed ${args.join(' ')}`);
  const t = performance.now();
  const r = spawnSync(process.execPath, [join(repo, 'bin/cowshed.js'), '--store', store, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const ms = performance.now() - t;
  if (r.status !== 0) {
    console.error(`demo: cowshed ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(1);
  }
  if (r.stdout.trim()) console.log(r.stdout.trimEnd());
  return { out: r.stdout, ms };
}

step('Building the Debian test image (debootstrap minbase, cached after the first run)');
const layout = execFileSync('bash', [join(repo, 'scripts/build-debian-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!;
console.log(`image layout: ${layout} (tags v1, v2)`);

const work = mkdtempSync(join(tmpdir(), 'cowshed-demo-'));
const store = join(work, 'store');
console.log(`store: ${store}`);

step('Import v1: every file hashed (fs-verity) and stored once, one composefs image for the tree');
const v1 = cowshed(store, 'import', `oci:${layout}:v1`, 'debian:v1');
console.log(`took ${(v1.ms / 1000).toFixed(2)} s (whole CLI process)`);

step('Import v1 again under another name: nothing is read or written');
const again = cowshed(store, 'import', `oci:${layout}:v1`, 'debian:copy');
console.log(`took ${(again.ms / 1000).toFixed(2)} s`);

step('Import v2 (v1 + one layer): only the new files are stored');
cowshed(store, 'import', `oci:${layout}:v2`, 'debian:v2');
cowshed(store, 'images');

step('Mount v2 read-only: the EROFS metadata image over the shared object store');
const mnt = cowshed(store, 'mount', 'debian:v2').out.trim().split('\n').pop()!;
console.log(readFileSync(join(mnt, 'etc/os-release'), 'utf8').split('\n')[0]);
console.log(`curl from the v2 layer: ${execFileSync('ls', ['-l', join(mnt, 'usr/bin/curl')], { encoding: 'utf8' }).trim()}`);
cowshed(store, 'umount', 'debian:v2');

step('Check the store: every object re-hashed against its name');
cowshed(store, 'fsck');

step('Disk use and deduplication');
cowshed(store, 'df');

execFileSync('rm', ['-rf', work]);
console.log(`\n${bold('demo finished')}; the store was in ${work} and is removed.`);
