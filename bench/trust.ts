// Signature verification (issue 14): what checking signatures costs on pull
// and on mount, against the unsigned pull and the plain mount (BENCH.md's
// anchors for this line). One loopback registry holds the Debian v1 image
// twice: signed with a sigstore key (repository signed) and unsigned.
// `npm run bench trust` runs this one alone.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Benchmark, type BenchResult, type Contender, exec, measure, ScratchFs } from './lib.ts';
import { LoopbackRegistry } from './registry.ts';
import { Store } from '../src/store/store.ts';
import { openRegistrySource } from '../src/registry/pull.ts';
import { admitPull } from '../src/trust/trust.ts';
import { verifyChain } from '../src/trust/chain.ts';
import { verifyImage } from '../src/drivers/composefs.ts';

export interface TrustBenchOptions { repo: string; cache: string; runs: number; warmup: number }

export function trustBenchmarks(opts: TrustBenchOptions): { benchmarks: Benchmark[]; dispose: () => Promise<void> } {
  const cli = join(opts.repo, 'bin/cowshed.js');
  const cowshed = async (store: string, ...args: string[]): Promise<string> =>
    (await exec(process.execPath, [cli, '--store', store, ...args], { cwd: opts.repo })).stdout.trim();
  const live = new Set<ScratchFs>();
  let reg: LoopbackRegistry | undefined;
  let work: ScratchFs | undefined;

  const benchmark: Benchmark = {
    name: 'trust',
    needsImage: true,
    async run(): Promise<BenchResult[]> {
      reg = await LoopbackRegistry.start();
      work = await ScratchFs.create(4);
      const w = work.path;
      const src = join(w, 'src');
      await cowshed(src, 'import', `oci:${join(opts.cache, 'debian-oci')}:v1`, 'debian:v1');
      writeFileSync(join(w, 'pw'), 'bench\n');
      await cowshed(src, 'generate-sigstore-key', '--output-prefix', join(w, 'key'), '--passphrase-file', join(w, 'pw'));
      const signed = `${reg.host}/signed/debian:v1`;
      const unsigned = `${reg.host}/unsigned/debian:v1`;
      await cowshed(src, 'push', '-q', '--tls-verify=false', '--sign-by-sigstore-private-key', join(w, 'key.private'), '--sign-passphrase-file', join(w, 'pw'), 'debian:v1', signed);
      await cowshed(src, 'push', '-q', '--tls-verify=false', 'debian:v1', unsigned);
      const policy = join(w, 'policy.json');
      writeFileSync(policy, JSON.stringify({
        default: [{ type: 'insecureAcceptAnything' }],
        transports: { docker: { [`${reg.host}/signed`]: [{ type: 'sigstoreSigned', keyPath: join(w, 'key.pub') }] } },
      }));
      const open = join(w, 'open.json');
      writeFileSync(open, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
      const regd = join(w, 'registries.d');
      await exec('mkdir', ['-p', regd]);
      writeFileSync(join(regd, 'default.yaml'), 'default-docker:\n  use-sigstore-attachments: true\n');

      const fresh = (name: string, role: Contender['role'], run: (d: string) => Promise<unknown>): Contender => {
        let fs: ScratchFs | undefined;
        return {
          name, role,
          prepare: async () => { fs = await ScratchFs.create(4); live.add(fs); },
          run: async () => { await run(fs!.path); },
          cleanup: async () => { if (fs) { live.delete(fs); await fs.dispose(); } fs = undefined; },
        };
      };
      const m = { runs: opts.runs, warmup: opts.warmup };
      const pull = await measure('pull Debian v1, cold: signed under a sigstoreSigned policy vs unsigned (fresh fs per run)', [
        fresh('cowshed pull, signature verified', 'cowshed', (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', '--signature-policy', policy, '--registries.d', regd, signed)),
        fresh('cowshed pull, unsigned (insecureAcceptAnything)', 'anchor', (d) => cowshed(join(d, 'store'), 'pull', '-q', '--tls-verify=false', '--signature-policy', open, '--registries.d', regd, unsigned)),
      ], m);

      // Mount with and without the chain check, on one store holding the signed image.
      const store = join(w, 'store');
      await cowshed(store, 'pull', '-q', '--tls-verify=false', '--signature-policy', policy, '--registries.d', regd, signed);
      const mountC = (name: string, role: Contender['role'], args: string[]): Contender => ({
        name, role,
        run: async () => { await cowshed(store, 'mount', ...args, signed); },
        cleanup: async () => { await cowshed(store, 'umount', signed); },
      });
      const mount = await measure('mount the signed Debian image: mount --verify (whole chain, userspace) vs mount', [
        mountC('cowshed mount --verify', 'cowshed', ['--verify', '--signature-policy', policy]),
        mountC('cowshed mount', 'anchor', []),
      ], m);
      // The checks alone, in-process (no Node start-up, no layer transfer): what verification adds.
      const trust = { signaturePolicy: policy, registriesD: regd };
      const admission = await measure('the signature check of a pull alone, in-process: manifest + config fetched, then the policy', [
        { name: 'openRegistrySource() + admitPull() (fetch .sig, ECDSA verify, payload)', role: 'cowshed', run: async () => { const src = await openRegistrySource(signed, { tlsVerify: false }); await admitPull(src, trust); } },
        { name: 'openRegistrySource() alone', role: 'anchor', run: async () => { await openRegistrySource(signed, { tlsVerify: false }); } },
      ], { runs: Math.max(opts.runs, 5), warmup: 1 });
      const s = await Store.open(store);
      let chain: BenchResult;
      try {
        chain = await measure('the mount check alone, in-process: verifyChain() (signature → … → composefs) vs verifyImage() (the check --verify did before)', [
          { name: 'verifyChain()', role: 'cowshed', run: async () => { await verifyChain(s, signed, trust); } },
          { name: 'verifyImage() (composefs, blobs, objects; no signature, no layer rebuild)', role: 'anchor', run: async () => { const i = s.resolveImage(signed); await verifyImage(s, i.id, i.composefs); } },
        ], m);
      } finally { s.close(); }
      for (const [r, a, b] of [
        [pull, 'cowshed pull, signature verified', 'cowshed pull, unsigned (insecureAcceptAnything)'], [mount, 'cowshed mount --verify', 'cowshed mount'],
        [admission, 'openRegistrySource() + admitPull() (fetch .sig, ECDSA verify, payload)', 'openRegistrySource() alone'],
        [chain, 'verifyChain()', 'verifyImage() (composefs, blobs, objects; no signature, no layer rebuild)'],
      ] as const) {
        const x = r.contenders.find((c) => c.name === a)?.medianMs;
        const y = r.contenders.find((c) => c.name === b)?.medianMs;
        if (x && y) r.notes.push(`${a} / ${b}: ${(x / y).toFixed(2)} (+${((x - y) / 1000).toFixed(2)} s)`);
      }
      mount.notes.push('This kernel has no fs-verity: --verify re-hashes every object, rebuilds every layer against its diff ID and hashes the composefs image in userspace.');
      return [pull, mount, admission, chain];
    },
  };

  return {
    benchmarks: [benchmark],
    async dispose() {
      for (const fs of live) await fs.dispose();
      live.clear();
      await reg?.stop();
      await work?.dispose();
    },
  };
}
