// Store size for ten versions (issue 15): the ten-version series of a rebuilt
// Debian image (scripts/build-debian-series.sh: each version one full layer,
// about 2% of files edited between neighbours) imported into one cowshed
// store, against the bytes of the unique files of the ten versions (by
// SHA-256 of their content, read from the layers themselves), podman's
// storage after pulling the same ten, and OSTree repositories (bare, and
// archive as served over HTTP) holding a commit of each version's tree.
// Sizes are `du` of each store's directory: apparent bytes and allocated
// blocks; each on its own fresh ext4 filesystem. Target: cowshed ≤ 1.1 × the
// unique file bytes.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { decompress } from '../src/oci/compression.ts';
import { readTar } from '../src/tar/reader.ts';
import { layoutManifest, podmanOciRef } from '../test/helpers/cli.ts';
import { type Benchmark, exec, podman, ScratchFs, which } from './lib.ts';

export interface StoreSizeOptions { repo: string; cache: string }

const N = 10;
const TARGET = 1.1;
const BLOCK = 4096;

interface Size { apparent: number; allocated: number }
interface Row { label: string; size?: Size; why?: string; indent?: boolean }

const du = async (path: string, apparent: boolean): Promise<number> =>
  Number((await exec('du', ['-sx', '--block-size=1', ...(apparent ? ['--apparent-size'] : []), path])).stdout.split('\t')[0]);
const duBoth = async (...paths: string[]): Promise<Size> => {
  let apparent = 0;
  let allocated = 0;
  for (const p of paths) { apparent += await du(p, true); allocated += await du(p, false); }
  return { apparent, allocated };
};

const mb = (b: number): string => `${(b / 1e6).toFixed(1)} MB`;

/** Unique regular-file contents of the ten versions, read from the layer blobs (not from any store). */
async function uniqueFiles(series: string): Promise<{ unique: number; uniqueBlocks: number; all: number; count: number; files: number }> {
  const seen = new Map<string, number>();
  let all = 0;
  let files = 0;
  for (let k = 1; k <= N; k++) {
    for (const layer of layoutManifest(series, `v${k}`).layers) {
      const blob = join(series, 'blobs', ...layer.digest.split(':'));
      for await (const e of readTar(decompress(createReadStream(blob)))) {
        if (e.type !== 'file') continue;
        const h = createHash('sha256');
        for await (const c of e.body()) h.update(c);
        seen.set(h.digest('hex'), e.size);
        all += e.size;
        files++;
      }
    }
  }
  let unique = 0;
  let uniqueBlocks = 0;
  for (const size of seen.values()) { unique += size; uniqueBlocks += Math.ceil(size / BLOCK) * BLOCK; }
  return { unique, uniqueBlocks, all, count: seen.size, files };
}

export function storeSizeBenchmark(opts: StoreSizeOptions): Benchmark {
  const lines: string[] = [];
  const cli = join(opts.repo, 'bin/cowshed.js');
  return {
    name: 'store-size',
    needsImage: true,
    table: () => lines,
    async run() {
      const series = execFileSync('bash', [join(opts.repo, 'scripts/build-debian-series.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!;
      process.stderr.write('bench store-size: unique files of the ten versions\n');
      const files = await uniqueFiles(series);
      const rows: Row[] = [];
      const fss: ScratchFs[] = [];
      try {
        // ---- cowshed: the ten versions imported through the CLI, default driver (composefs).
        const cfs = await ScratchFs.create(8);
        fss.push(cfs);
        const store = join(cfs.path, 'store');
        const cow = (...a: string[]) => exec(process.execPath, [cli, '--store', store, ...a], { cwd: opts.repo });
        for (let k = 1; k <= N; k++) {
          process.stderr.write(`bench store-size: cowshed import v${k}\n`);
          await cow('import', `oci:${series}:v${k}`, `series:v${k}`);
        }
        await exec('sync', ['-f', store]);
        const total = await duBoth(store);
        rows.push({ label: '**cowshed** (composefs driver, default)', size: total });
        const parts: Array<[string, string[]]> = [
          ['objects/ (file contents, one per digest)', [join(store, 'objects')]],
          ['images/ (composefs images)', [join(store, 'images')]],
          ['blobs/ (manifests, configs, tar-split records, entry lists)', [join(store, 'blobs')]],
          ['meta.db (+ WAL)', readdirSync(store).filter((f) => f.startsWith('meta.db')).map((f) => join(store, f))],
        ];
        let counted: Size = { apparent: 0, allocated: 0 };
        for (const [label, paths] of parts) {
          const s = await duBoth(...paths);
          counted = { apparent: counted.apparent + s.apparent, allocated: counted.allocated + s.allocated };
          rows.push({ label, size: s, indent: true });
        }
        rows.push({ label: 'the rest (directories, tmp/, mounts/)', size: { apparent: total.apparent - counted.apparent, allocated: total.allocated - counted.allocated }, indent: true });

        // ---- OSTree: each version's tree (mounted from the cowshed store) committed; bare, then pulled into archive.
        if ((await which('ostree')) && (await which('rsync'))) {
          const ofs = await ScratchFs.create(8);
          fss.push(ofs);
          const bare = join(ofs.path, 'bare');
          const archive = join(ofs.path, 'archive');
          const plain = join(cfs.path, 'ostree-tree');
          await exec('ostree', ['init', '--repo', bare, '--mode=bare']);
          await exec('ostree', ['init', '--repo', archive, '--mode=archive']);
          for (let k = 1; k <= N; k++) {
            process.stderr.write(`bench store-size: ostree commit v${k}\n`);
            const mnt = (await cow('mount', `series:v${k}`)).stdout.trim().split('\n').pop()!;
            try {
              // OSTree cannot hold device nodes, fifos or sockets: it commits a copy without them.
              await exec('rsync', ['-aHAX', '--delete', '--no-devices', '--no-specials', `${mnt}/`, `${plain}/`]);
            } finally {
              await cow('umount', `series:v${k}`).catch(() => undefined);
            }
            await exec('ostree', ['commit', '--repo', bare, '--branch', `v${k}`, `--tree=dir=${plain}`, '--no-bindings']);
          }
          rmSync(plain, { recursive: true, force: true });
          await exec('ostree', ['pull-local', '--repo', archive, bare, ...Array.from({ length: N }, (_, i) => `v${i + 1}`)]);
          await exec('sync', ['-f', ofs.path]);
          rows.push({ label: 'OSTree, bare repository', size: await duBoth(bare) });
          rows.push({ label: 'OSTree, archive repository (zlib per file)', size: await duBoth(archive) });
        } else rows.push({ label: 'OSTree', why: 'ostree or rsync not installed' });

        // ---- podman: the ten pulled from the OCI layout, overlay driver.
        if (await which('podman')) {
          const pfs = await ScratchFs.create(8);
          fss.push(pfs);
          for (let k = 1; k <= N; k++) {
            process.stderr.write(`bench store-size: podman pull v${k}\n`);
            await podman(pfs.path, 'pull', '-q', podmanOciRef(series, `v${k}`));
          }
          await exec('sync', ['-f', pfs.path]);
          rows.push({ label: 'podman (overlay driver)', size: await duBoth(join(pfs.path, 'root')) });
        } else rows.push({ label: 'podman', why: 'podman not installed' });
        rows.push({ label: 'the OCI layout itself (ten gzip layers)', size: await duBoth(series) });
      } finally {
        for (const f of fss) await f.dispose();
      }

      const cowRow = rows[0]!.size!;
      const ratio = cowRow.apparent / files.unique;
      lines.push('## Store size: ten versions of a rebuilt Debian image (issue 15)', '');
      lines.push(`Ten versions (scripts/build-debian-series.sh), ${files.files.toLocaleString('en-US')} regular files in all, ` +
        `${mb(files.all)} of file contents without any sharing; ${files.count.toLocaleString('en-US')} unique contents (SHA-256), ` +
        `${mb(files.unique)} (${mb(files.uniqueBlocks)} in ${BLOCK}-byte blocks). Each store on its own fresh ext4; du -sx, after sync.`, '');
      lines.push('| store | apparent (du --apparent-size) | allocated (du) | apparent / unique file bytes | allocated / unique files in blocks |');
      lines.push('| --- | ---: | ---: | ---: | ---: |');
      lines.push(`| unique file contents | ${mb(files.unique)} | ${mb(files.uniqueBlocks)} | 1.00 × | 1.00 × |`);
      for (const r of rows) {
        const label = r.indent ? `&nbsp;&nbsp;${r.label}` : r.label;
        if (!r.size) { lines.push(`| ${label} | ${r.why} | | | |`); continue; }
        lines.push(`| ${label} | ${mb(r.size.apparent)} | ${mb(r.size.allocated)} | ${(r.size.apparent / files.unique).toFixed(3)} × | ${(r.size.allocated / files.uniqueBlocks).toFixed(3)} × |`);
      }
      lines.push('', `Target: cowshed ≤ ${TARGET} × the unique file bytes: ${ratio.toFixed(3)} × (apparent) — ${ratio <= TARGET ? 'met' : 'not met'}; ` +
        `allocated ${(cowRow.allocated / files.uniqueBlocks).toFixed(3)} × the unique files' blocks.`);
      lines.push('OSTree commits each tree without its device nodes (it cannot hold them); its bare mode keeps one object per content *and* owner, mode and xattrs.');
      process.stderr.write(lines.join('\n') + '\n');
      return [];
    },
  };
}
