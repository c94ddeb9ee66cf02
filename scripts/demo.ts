// `npm run demo`: the main job end to end on local data. Builds (once,
// cached) a real Debian image with debootstrap, imports two versions of it
// into a fresh store, mounts one, starts 100 containers, runs one, changes
// another and shows its diff, commits and exports it, verifies the store and
// prints the dedup figures. Each step is a real cowshed CLI call, printed as
// it runs (the 100 containers use the library, to time a container itself).
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
  console.log(`$ cowshed ${args.length > 8 ? `${args.slice(0, 3).join(' ')} … (${args.length - 1} names)` : args.join(' ')}`);
  const t = performance.now();
  const r = spawnSync(process.execPath, [join(repo, 'bin/cowshed.js'), '--store', store, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const ms = performance.now() - t;
  if (r.status !== 0) {
    console.error(`demo: cowshed ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(1);
  }
  const lines = r.stdout.trimEnd().split('\n');
  if (lines.length > 20) console.log(`${lines.slice(0, 3).join('\n')}\n… (${lines.length} lines)`);
  else if (r.stdout.trim()) console.log(r.stdout.trimEnd());
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

step('Start 100 containers from v1: each is a mount, not a copy');
{
  // In-process, through the library: the cost of a container itself.
  const { Store } = await import('../src/store/store.ts');
  const { createContainer } = await import('../src/containers/containers.ts');
  const s = await Store.open(store);
  const times: number[] = [];
  for (let i = 0; i < 100; i++) {
    const t = performance.now();
    await createContainer(s, 'debian:v1', { name: `c${i}` });
    times.push(performance.now() - t);
    if (tty) process.stdout.write(`\r${i + 1}/100 containers`);
  }
  if (tty) process.stdout.write('\n');
  s.close();
  times.sort((a, b) => a - b);
  console.log(`100 containers: median ${times[50]!.toFixed(1)} ms each, slowest ${times[99]!.toFixed(1)} ms`);
  const erofs = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(' erofs ') && l.includes(store)).length;
  console.log(`image mounts shared by them: ${erofs}; disk used by their directories: ${execFileSync('du', ['-shx', join(store, 'containers')], { encoding: 'utf8' }).split('\t')[0]}`);
}


step('Run a container: runc, with the image config');
cowshed(store, 'run', '--rm', 'debian:v1', '--', 'sh', '-c', 'echo "hello from $(. /etc/os-release; echo $PRETTY_NAME), pid $$, uid $(id -u)"');

step('Change files in another container and show its diff');
const root = cowshed(store, 'mount', 'c1').out.trim().split('\n').pop()!;
execFileSync('sh', ['-ec', 'echo "built by the demo" > srv/README; echo "demo" >> etc/motd; rm etc/issue; chmod 0700 root; mkdir -p opt/app && cp bin/true opt/app/tool'], { cwd: root });
cowshed(store, 'diff', 'c1');

step('Commit it: only the changed files are stored, one new layer');
const c = cowshed(store, 'commit', 'c1', 'demo/app:1');
console.log(`took ${(c.ms / 1000).toFixed(2)} s (whole CLI process)`);

cowshed(store, 'diff', 'debian:v1', 'demo/app:1');

step('Export it as an OCI layout; umoci reads it back');
const layoutOut = join(work, 'exported');
cowshed(store, 'export', 'demo/app:1', `oci:${layoutOut}:1`);
execFileSync('umoci', ['unpack', '--image', `${layoutOut}:1`, join(work, 'unpacked')], { stdio: 'ignore' });
console.log(`umoci unpack: /srv/README says "${readFileSync(join(work, 'unpacked/rootfs/srv/README'), 'utf8').trim()}"`);

step('Remove the 100 containers');
const ids = cowshed(store, 'ps', '-a', '-q').out.trim().split('\n').filter(Boolean);
cowshed(store, 'rm', ...ids);

step('Check the store: every object re-hashed against its name');
cowshed(store, 'fsck');

step('Disk use and deduplication');
cowshed(store, 'df');

execFileSync('rm', ['-rf', work]);
console.log(`\n${bold('demo finished')}; the store was in ${work} and is removed.`);
