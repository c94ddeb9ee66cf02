// `npm run demo`: the main job end to end on local data. Builds (once,
// cached) a real Debian image with debootstrap, imports two versions of it
// into a fresh store, mounts one, starts 100 containers, runs one, changes
// another and shows its diff, commits and exports it, verifies the store and
// prints the dedup figures. Each step is a real cowshed CLI call, printed as
// it runs (the 100 containers use the library, to time a container itself).
// Then the registry half: a docker-registry on loopback, two rebuilds of an
// image pushed signed as zstd:chunked with deltas, a signed pull, a partial
// pull, a delta update, a verified mount and a refused unsigned image.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
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
  return cowshedMay(store, 0, ...args);
}

/** A cowshed CLI call that must exit with `status` (0, or the refusal the demo shows). */
function cowshedMay(store: string, status: number, ...args: string[]): { out: string; ms: number } {
  console.log(`$ cowshed ${args[0] === 'rm' && args.length > 8 ? `${args.slice(0, 3).join(' ')} … (${args.length - 1} names)` : args.join(' ')}`);
  const t = performance.now();
  const r = spawnSync(process.execPath, [join(repo, 'bin/cowshed.js'), '--store', store, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const ms = performance.now() - t;
  if (r.status !== status) {
    console.error(`demo: cowshed ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(1);
  }
  if (args.includes('--json')) return { out: r.stdout, ms };
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

step('A registry on loopback: docker-registry on 127.0.0.1');
const { startRegistry } = await import('../test/registry/servers.ts');
const { rebuiltVersions } = await import('../test/helpers/rebuilt-image.ts');
const registry = await startRegistry(join(work, 'registry'));
const app = `${registry.host}/app`;
const tlsOff = '--tls-verify=false';
const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
try {
  console.log(`registry: http://${registry.host} (pid of its own, stopped at the end)`);

  step('Two CI rebuilds of an app image: each one full layer, 1% of the files edited');
  const rb = rebuiltVersions(join(dirname(layout), 'debian-rootfs.tar'), work);
  console.log(`${rb.files} files; v2 edits ${rb.changed.length} of them by one byte`);
  const pub = join(work, 'publisher');
  cowshed(pub, 'import', `tar:${rb.v1}`, 'app:v1');
  cowshed(pub, 'import', `tar:${rb.v2}`, 'app:v2');

  step('Sign and push both: zstd:chunked layers, a sigstore signature, deltas from earlier versions');
  const pw = join(work, 'passphrase');
  writeFileSync(pw, 'demo passphrase\n', { mode: 0o600 });
  const key = join(work, 'key');
  cowshed(pub, 'generate-sigstore-key', '--output-prefix', key, '--passphrase-file', pw);
  const sign = ['--sign-by-sigstore-private-key', `${key}.private`, '--sign-passphrase-file', pw];
  cowshed(pub, 'push', '-q', tlsOff, '--compression-format', 'zstd:chunked', ...sign, 'app:v1', `${app}:v1`);
  cowshed(pub, 'push', '-q', tlsOff, '--compression-format', 'zstd:chunked', '--deltas', ...sign, 'app:v2', `${app}:v2`);
  cowshed(pub, 'push', '-q', tlsOff, 'app:v1', `${registry.host}/unsigned:v1`);

  step('Trust: this registry\'s app only when signed by that key, everything else refused');
  const policy = join(work, 'policy.json');
  const regd = join(work, 'registries.d');
  mkdirSync(regd);
  writeFileSync(join(regd, 'default.yaml'), 'default-docker:\n  use-sigstore-attachments: true\n');
  const trust = ['--signature-policy', policy, '--registries.d', regd];
  cowshed(pub, '--signature-policy', policy, 'image', 'trust', 'set', '-t', 'reject', 'default');
  cowshed(pub, '--signature-policy', policy, 'image', 'trust', 'set', '-t', 'sigstoreSigned', '-f', `${key}.pub`, registry.host);
  cowshed(pub, '--signature-policy', policy, 'image', 'trust', 'show');

  const layerOf = (tag: string) => {
    const r = spawnSync('curl', ['-s', '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', `http://${registry.host}/v2/app/manifests/${tag}`], { encoding: 'utf8' });
    return (JSON.parse(r.stdout) as { layers: Array<{ size: number }> }).layers[0]!.size;
  };
  type PullJson = { bytesFetched: number; layers: Array<{ method: string; bytesFetched: number; filesFetched?: number; filesFound?: number }>; deltas?: unknown };
  const pulled = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as PullJson;

  step('Signed pull of v1 into a fresh host: the signature checked before anything is stored');
  const hostA = join(work, 'host-a');
  const p1 = pulled(cowshed(hostA, ...trust, 'pull', '--json', tlsOff, `${app}:v1`).out);
  console.log(`fetched ${mb(p1.bytesFetched)} (the layer is ${mb(layerOf('v1'))}, zstd:chunked)`);

  step('Partial pull of v2 (deltas off): only the frames of files the host lacks, by HTTP range requests');
  const p2 = pulled(cowshed(hostA, ...trust, 'pull', '--json', '--no-deltas', tlsOff, `${app}:v2`).out);
  const l2 = p2.layers[0]!;
  console.log(`layer ${l2.method}: ${l2.filesFetched} files fetched, ${l2.filesFound} found in the store; ` +
    `${mb(p2.bytesFetched)} of a ${mb(layerOf('v2'))} layer (${((100 * p2.bytesFetched) / layerOf('v2')).toFixed(1)}%)`);

  step('Delta update to v2 on another host that holds v1: one small delta instead of the layer');
  const hostB = join(work, 'host-b');
  cowshed(hostB, ...trust, 'pull', '-q', tlsOff, `${app}:v1`);
  const d = pulled(cowshed(hostB, ...trust, 'pull', '--json', tlsOff, `${app}:v2`).out);
  console.log(`fetched ${(d.bytesFetched / 1e3).toFixed(1)} kB in all for v2 (the layer is ${mb(layerOf('v2'))}); layers: ${d.layers.map((l) => l.method).join(', ') || 'none (built from the delta)'}`);

  step('Verified mount: signature → manifest → config → diff IDs → tar-split → objects → composefs digest');
  cowshed(hostB, '--signature-policy', policy, 'mount', '--verify', `${app}:v2`);
  cowshed(hostB, 'umount', `${app}:v2`);

  step('An unsigned image from the same registry is refused, and nothing is stored');
  cowshedMay(hostB, 1, ...trust, 'pull', tlsOff, `${registry.host}/unsigned:v1`);
  cowshed(hostB, 'images');
} finally {
  await registry.stop();
}

execFileSync('rm', ['-rf', work]);
console.log(`\n${bold('demo finished')}; the store was in ${work} and is removed.`);
