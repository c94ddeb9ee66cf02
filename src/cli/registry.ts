// Registry commands: pull, push, login, logout (flags as podman names them).
import { Option, type Command } from 'commander';
import { createRequire } from 'node:module';
import type { Store } from '../store/store.ts';
import { formatBytes } from './output.ts';
import { CowshedError } from '../util/errors.ts';
import { pullAdmission, pushSigner } from './trust.ts';

type WithStore = <T>(fn: (s: Store) => Promise<T> | T) => Promise<T>;

const pullLib = () => import('../registry/pull.ts');
const pushLib = () => import('../registry/push.ts');
const authLib = () => import('../registry/auth-file.ts');

/** --tls-verify, --tls-verify=false, --tls-verify=true; unset: as registries.conf says (verify by default). */
export function tlsVerifyOption(): Option {
  return new Option('--tls-verify [bool]', 'verify the registry\'s HTTPS certificate (false: skip verification, and allow plain HTTP); default: true unless registries.conf marks the registry insecure')
    .argParser((v: string | boolean) => {
      if (v === true || v === 'true') return true;
      if (v === 'false') return false;
      throw new CowshedError('EINVAL', `--tls-verify takes true or false (write --tls-verify=false), not ${JSON.stringify(v)}`);
    });
}

const CERT_DIR_HELP = 'certificates for the registry: *.crt CAs and a NAME.cert + NAME.key client pair (instead of certs.d)';

interface TransportFlags { tlsVerify?: boolean; certDir?: string }

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
  program
    .option('--registries-conf <file>', 'registries.conf to read instead of the system and user ones (env CONTAINERS_REGISTRIES_CONF)')
    .option('--cert-dir <dir>', CERT_DIR_HELP);
  /** The command's TLS flags over the global ones. */
  const transport = (o: TransportFlags): { tlsVerify?: boolean; certDir?: string; registriesConf?: string } => {
    const g = program.opts<{ registriesConf?: string; certDir?: string }>();
    return { tlsVerify: o.tlsVerify, certDir: o.certDir ?? g.certDir, registriesConf: g.registriesConf };
  };

  program.command('pull')
    .description('pull an image from a registry (REGISTRY/REPO[:TAG|@DIGEST]); prints the image id')
    .argument('<ref>')
    .addOption(tlsVerifyOption())
    .option('--cert-dir <dir>', CERT_DIR_HELP)
    .option('--creds <user:password>', 'credentials for the registry')
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image', 'linux/amd64')
    .option('-q, --quiet', 'print only the image id')
    .option('--no-deltas', 'fetch layers only: do not look for deltas to the image')
    .option('--json', 'JSON output: image id, bytes fetched, the delta plan, and per layer how it was fetched (reused, partial, whole)')
    .action(async (ref: string, o: TransportFlags & { creds?: string; platform: string; quiet?: boolean; deltas: boolean; json?: boolean }) => withStore(async (s) => {
      const quiet = Boolean(o.quiet) || quietGlobal() || Boolean(o.json);
      const bars = layerBars(quiet);
      const t0 = performance.now();
      try {
        const r = await (await pullLib()).pullImage(s, ref, {
          ...transport(o), creds: o.creds, platform: o.platform, deltas: o.deltas, admit: pullAdmission(program, o),
          onBlobProgress: (p) => bars.layer(p.layer, p.layers, p.digest, p.received, p.size, p.done, p.local),
          onNotice: (m) => { if (!o.json) process.stderr.write(`cowshed: ${m}\n`); },
        });
        bars.stop();
        if (o.json) {
          const { layers, deltaPlan, ...rest } = r;
          say(JSON.stringify({ ...rest, plan: pullPlan(deltaPlan?.plan, layers), deltas: deltaPlan ?? null, layers })); // one line: scripts read the last line
          return;
        }
        if (!quiet && r.deltaPlan) {
          const d = r.deltaPlan;
          process.stderr.write(d.plan === 'layers' || d.plan === 'store'
            ? `plan: ${d.plan} (${d.reason ?? 'no usable delta'})\n`
            : `plan: ${d.plan} (${d.deltasUsed} delta${d.deltasUsed === 1 ? '' : 's'}, ${formatBytes(d.deltaBytes)} instead of ${formatBytes(d.layerBytes)} of layers)\n`);
        }
        if (!quiet) {
          for (const l of r.layers) {
            if (l.method === 'reused' && l.plan !== 'deltas') continue;
            process.stderr.write(`layer ${l.layer + 1}/${r.layers.length} ${l.digest.slice(7, 19)}: ${layerLine(l)}\n`);
          }
          const how = r.reused ? 'already built, no layer fetched' : `${r.objectsWritten} new objects, ${formatBytes(r.bytesWritten)} written`;
          process.stderr.write(`pulled ${r.name}: ${formatBytes(r.bytesFetched)} fetched, ${r.entries} entries (${how}) in ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
        }
        say(r.id);
      } finally {
        bars.stop();
      }
    }));

  /** The plan a pull took overall: the delta plan when deltas were used, else what the layers did. */
  function pullPlan(delta: string | undefined, layers: Array<{ plan?: string }>): string {
    if (delta !== undefined && delta !== 'layers') return delta;
    return layers.some((l) => l.plan === 'partial') ? 'partial' : delta ?? 'layers';
  }

  /** One layer's line: the plan it took and the bytes it fetched (layer blob, deltas). */
  function layerLine(l: import('../plan/layers.ts').LayerReport): string {
    const plan = l.plan === 'mixed' ? 'mixed (deltas + zstd:chunked ranges)' : l.plan === 'deltas' ? 'deltas' : l.method;
    const d = l.deltaBytes ?? 0;
    const bytes = d > 0 ? `${formatBytes(l.bytesFetched + d)} fetched (${formatBytes(d)} deltas, ${formatBytes(l.bytesFetched)} of the layer)` : `${formatBytes(l.bytesFetched)} fetched`;
    const files = l.method === 'partial'
      ? `${l.filesFromDeltas ? `, ${l.filesFromDeltas} files from deltas` : ''}, ${l.filesFetched} files fetched${l.filesPartial ? ` (${l.filesPartial} in part: ${formatBytes(l.filesPartialBytes ?? 0)} of ${formatBytes(l.filesPartialSize ?? 0)})` : ''}, ${l.filesFound} found in the store`
      : '';
    const c = l.costs;
    const vs = c ? ` [layer ${formatBytes(c.layer)}${c.deltas !== null ? `, deltas ${formatBytes(c.deltas)}` : ''}${c.partial !== null ? `, ranges ${formatBytes(c.partial)}` : ''}${c.mixed !== null ? `, per file ${formatBytes(c.mixed)}` : ''}]` : '';
    return `${plan}, ${bytes}${files}${vs}`;
  }

  program.command('push')
    .description('push an image to a registry; uploads only the layers the registry lacks')
    .argument('<image>').argument('<ref>', 'REGISTRY/REPO[:TAG]')
    .addOption(tlsVerifyOption())
    .option('--cert-dir <dir>', CERT_DIR_HELP)
    .option('--creds <user:password>', 'credentials for the registry')
    .addOption(new Option('--compression-format <kind>', 'compression of uploaded layers (default gzip; named, only blobs of that compression are reused)').choices(['gzip', 'zstd', 'zstd:chunked']))
    .option('-q, --quiet', 'print only the manifest digest')
    .option('--deltas', 'also publish deltas to the image from earlier versions of the repository (OCI referrers)')
    .option('--delta-policy <policy>', 'which earlier versions: log (distances 1, 2, 4, …), consecutive, all, or distances like 1,3,9', 'log')
    .action(async (image: string, ref: string, o: TransportFlags & { creds?: string; compressionFormat?: 'gzip' | 'zstd' | 'zstd:chunked'; quiet?: boolean; deltas?: boolean; deltaPolicy: string }) => withStore(async (s) => {
      const quiet = Boolean(o.quiet) || quietGlobal();
      const sign = await pushSigner(program, o, ref, { ...transport(o), creds: o.creds }); // opens the signing key before anything is uploaded
      const push = o.deltas ? (await import('../delta/registry.ts')).pushWithDeltas : (await pushLib()).pushImage;
      const r = await push(s, image, ref, {
        policy: o.deltaPolicy,
        onDelta: (e: { from: string; bytes: number; via: string }) => {
          if (!quiet) process.stderr.write(`delta from ${e.from}: ${formatBytes(e.bytes)} (${e.via === 'referrers' ? 'referrers API' : 'referrers tag schema'})\n`);
        },
        ...transport(o), creds: o.creds, compression: o.compressionFormat,
        onLayer: (e) => {
          if (!quiet) process.stderr.write(`layer ${e.layer + 1}/${e.layers} ${e.digest.slice(7, 19)}: ${e.action === 'uploaded' ? `uploaded ${formatBytes(e.size)}` : e.action === 'mounted' ? 'mounted from another repository' : 'already there'}\n`);
        },
      });
      if (!quiet) process.stderr.write(`pushed ${r.ref}: ${formatBytes(r.bytesSent)} sent\n`);
      if (sign) { const m = await sign(s, image, r.digest); if (!quiet) process.stderr.write(`${m}\n`); }
      say(r.digest);
    }));

  program.command('login')
    .description('check credentials against a registry and store them in the containers auth file')
    .argument('<registry>')
    .addOption(tlsVerifyOption())
    .option('--cert-dir <dir>', CERT_DIR_HELP)
    .requiredOption('-u, --username <user>', 'user name')
    .requiredOption('-p, --password <password>', 'password')
    .action(async (registry: string, o: TransportFlags & { username: string; password: string }) => {
      const file = await (await authLib()).login(registry, { username: o.username, password: o.password }, transport(o));
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
