// Registry commands: pull, push, login, logout (flags as podman names them).
import { Option, type Command } from 'commander';
import { createRequire } from 'node:module';
import type { Store } from '../store/store.ts';
import { formatBytes } from './output.ts';
import { CowshedError } from '../util/errors.ts';

type WithStore = <T>(fn: (s: Store) => Promise<T> | T) => Promise<T>;

const pullLib = () => import('../registry/pull.ts');
const pushLib = () => import('../registry/push.ts');
const authLib = () => import('../registry/auth-file.ts');

/** --tls-verify, --tls-verify=false, --tls-verify=true */
function tlsVerifyOption(): Option {
  return new Option('--tls-verify [bool]', 'require HTTPS (false: plain HTTP, for loopback test registries)')
    .argParser((v: string | boolean) => {
      if (v === true || v === 'true') return true;
      if (v === 'false') return false;
      throw new CowshedError('EINVAL', `--tls-verify takes true or false (write --tls-verify=false), not ${JSON.stringify(v)}`);
    })
    .default(true);
}

interface Bars { layer(i: number, n: number, digest: string, received: number, size: number, done: boolean, local?: boolean): void; stop(): void }

/** One bar per layer on a terminal; a plain line per finished layer otherwise; nothing with -q. */
function layerBars(quiet: boolean): Bars {
  if (quiet) return { layer() {}, stop() {} };
  if (!process.stderr.isTTY) {
    return {
      layer(i, n, digest, received, _size, done, local) {
        if (done) process.stderr.write(`layer ${i + 1}/${n} ${digest.slice(7, 19)}: ${local ? 'already in the store' : `${formatBytes(received)} fetched`}\n`);
      },
      stop() {},
    };
  }
  const { MultiBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const multi = new MultiBar({
    format: ' {label} [{bar}] {got}/{all} {rate}', stream: process.stderr, hideCursor: true, clearOnComplete: false,
  }, Presets.shades_classic);
  const bars = new Map<number, { bar: ReturnType<typeof multi.create>; start: number }>();
  return {
    layer(i, n, digest, received, size, done) {
      let b = bars.get(i);
      if (!b) { b = { bar: multi.create(size, 0), start: performance.now() }; bars.set(i, b); }
      const secs = Math.max(0.001, (performance.now() - b.start) / 1000);
      b.bar.update(done ? size : Math.min(received, size), {
        label: `layer ${i + 1}/${n} ${digest.slice(7, 19)}`, got: formatBytes(received), all: formatBytes(size), rate: `${formatBytes(received / secs)}/s`,
      });
    },
    stop() { multi.stop(); },
  };
}

export function registryCommands(program: Command, withStore: WithStore, say: (s: string) => void): void {
  const quietGlobal = (): boolean => Boolean(program.opts<{ quiet?: boolean }>().quiet);

  program.command('pull')
    .description('pull an image from a registry (REGISTRY/REPO[:TAG|@DIGEST]); prints the image id')
    .argument('<ref>')
    .addOption(tlsVerifyOption())
    .option('--creds <user:password>', 'credentials for the registry')
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image', 'linux/amd64')
    .option('-q, --quiet', 'print only the image id')
    .option('--no-deltas', 'fetch layers only: do not look for deltas to the image')
    .option('--json', 'JSON output: image id, bytes fetched and the plan taken')
    .action(async (ref: string, o: { tlsVerify: boolean; creds?: string; platform: string; quiet?: boolean; deltas: boolean; json?: boolean }) => withStore(async (s) => {
      const quiet = Boolean(o.quiet) || quietGlobal() || Boolean(o.json);
      const bars = layerBars(quiet);
      const t0 = performance.now();
      try {
        const r = await (await pullLib()).pullImage(s, ref, {
          tlsVerify: o.tlsVerify, creds: o.creds, platform: o.platform, deltas: o.deltas,
          onBlobProgress: (p) => bars.layer(p.layer, p.layers, p.digest, p.received, p.size, p.done, p.local),
        });
        bars.stop();
        if (o.json) {
          return say(JSON.stringify({ id: r.id, name: r.name, bytesFetched: r.bytesFetched, plan: r.deltaPlan?.plan ?? 'layers', deltas: r.deltaPlan ?? null }));
        }
        if (!quiet && r.deltaPlan) {
          const d = r.deltaPlan;
          process.stderr.write(d.plan === 'layers' || d.plan === 'store'
            ? `plan: ${d.plan} (${d.reason ?? 'no usable delta'})\n`
            : `plan: ${d.plan} (${d.deltasUsed} delta${d.deltasUsed === 1 ? '' : 's'}, ${formatBytes(d.deltaBytes)} instead of ${formatBytes(d.layerBytes)} of layers)\n`);
        }
        if (!quiet) {
          const how = r.reused ? 'already built, no layer fetched' : `${r.objectsWritten} new objects, ${formatBytes(r.bytesWritten)} written`;
          process.stderr.write(`pulled ${r.name}: ${formatBytes(r.bytesFetched)} fetched, ${r.entries} entries (${how}) in ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
        }
        say(r.id);
      } finally {
        bars.stop();
      }
    }));

  program.command('push')
    .description('push an image to a registry; uploads only the layers the registry lacks')
    .argument('<image>').argument('<ref>', 'REGISTRY/REPO[:TAG]')
    .addOption(tlsVerifyOption())
    .option('--creds <user:password>', 'credentials for the registry')
    .addOption(new Option('--compression-format <kind>', 'compression of uploaded layers (default gzip; named, only blobs of that compression are reused)').choices(['gzip', 'zstd']))
    .option('-q, --quiet', 'print only the manifest digest')
    .option('--deltas', 'also publish deltas to the image from earlier versions of the repository (OCI referrers)')
    .option('--delta-policy <policy>', 'which earlier versions: log (distances 1, 2, 4, …), consecutive, all, or distances like 1,3,9', 'log')
    .action(async (image: string, ref: string, o: { tlsVerify: boolean; creds?: string; compressionFormat?: 'gzip' | 'zstd'; quiet?: boolean; deltas?: boolean; deltaPolicy: string }) => withStore(async (s) => {
      const quiet = Boolean(o.quiet) || quietGlobal();
      const push = o.deltas ? (await import('../delta/registry.ts')).pushWithDeltas : (await pushLib()).pushImage;
      const r = await push(s, image, ref, {
        policy: o.deltaPolicy,
        onDelta: (e: { from: string; bytes: number; via: string }) => {
          if (!quiet) process.stderr.write(`delta from ${e.from}: ${formatBytes(e.bytes)} (${e.via === 'referrers' ? 'referrers API' : 'referrers tag schema'})\n`);
        },
        tlsVerify: o.tlsVerify, creds: o.creds, compression: o.compressionFormat,
        onLayer: (e) => {
          if (!quiet) process.stderr.write(`layer ${e.layer + 1}/${e.layers} ${e.digest.slice(7, 19)}: ${e.action === 'uploaded' ? `uploaded ${formatBytes(e.size)}` : e.action === 'mounted' ? 'mounted from another repository' : 'already there'}\n`);
        },
      });
      if (!quiet) process.stderr.write(`pushed ${r.ref}: ${formatBytes(r.bytesSent)} sent\n`);
      say(r.digest);
    }));

  program.command('login')
    .description('check credentials against a registry and store them in the containers auth file')
    .argument('<registry>')
    .addOption(tlsVerifyOption())
    .requiredOption('-u, --username <user>', 'user name')
    .requiredOption('-p, --password <password>', 'password')
    .action(async (registry: string, o: { tlsVerify: boolean; username: string; password: string }) => {
      const file = await (await authLib()).login(registry, { username: o.username, password: o.password }, { tlsVerify: o.tlsVerify });
      say(`Login Succeeded! (${file})`);
    });

  program.command('logout')
    .description('remove a registry\'s credentials from the containers auth file')
    .argument('<registry>')
    .action(async (registry: string) => {
      const removed = (await authLib()).logout(registry);
      if (!removed) throw new CowshedError('ENOENT', `not logged in to ${registry}`);
      say(`Removed login credentials for ${registry}`);
    });
}
