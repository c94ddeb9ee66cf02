// Full disk: a store on a small loop-mounted ext4. An import, pull or commit that
// does not fit must fail with a clear one-line out-of-space error; earlier
// images and containers stay intact, fsck stays clean, tmp/ is empty and the
// space the failed operation took is given back.
import { execFileSync } from 'node:child_process';
import { mkdirSync, statfsSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, debianFixture, lastLine, removeTree, tempDir } from '../helpers/cli.ts';
import { buildEdgeImage, EDGE_TAG, pseudoRandomBytes } from '../fixtures/edge-image.ts';
import { listImages, mountAndRead, tmpEntries, isOneLineError } from './lib.ts';
import { startRegistryWithDebian } from '../registry/servers.ts';

export interface FullDiskCase { name: string; message: string; refusedClearly: boolean; intact: boolean; spaceBack: boolean; notes: string[] }
export interface FullDiskFigures { cases: FullDiskCase[]; passed: number; total: number }

const SPACE_ERROR = /space|ENOSPC|full/i;
/** Space a failed operation may keep: SQLite's WAL and a few directory blocks. */
const SLACK_BYTES = 4 << 20;

export async function fullDiskCampaign(opts: { sizeMb?: number; edgeLayout?: string; log?: (l: string) => void } = {}): Promise<FullDiskFigures> {
  const log = opts.log ?? (() => {});
  const { layout: debian, rootfsTar } = debianFixture();
  const work = tempDir('cowshed-fulldisk-');
  const mnt = join(work, 'mnt');
  const image = join(work, 'fs.img');
  try {
    let edge = opts.edgeLayout;
    if (!edge) { edge = join(work, 'edge'); await buildEdgeImage(edge); }
    execFileSync('truncate', ['-s', `${opts.sizeMb ?? 120}M`, image]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
    mkdirSync(mnt);
    execFileSync('mount', ['-o', 'loop', image, mnt]);
    const store = join(mnt, 'store');
    cowshedOk(store, 'import', `oci:${edge}:${EDGE_TAG}`, 'edge:e');
    const cid = lastLine(cowshedOk(store, 'create', '--name', 'keep', 'edge:e'));
    const keepRoot = lastLine(cowshedOk(store, 'mount', cid));
    writeFileSync(join(keepRoot, 'kept'), 'container data\n');
    const edgeSmall = mountAndRead(store, 'edge:e', 'files/small.txt');
    const free = (): number => { const s = statfsSync(mnt); return Number(s.bavail) * Number(s.bsize); };

    const cases: FullDiskCase[] = [];
    const check = (name: string, args: string[], cleanup?: () => void): void => {
      const before = free();
      const imagesBefore = listImages(store);
      const r = cowshed(store, ...args);
      const notes: string[] = [];
      const refusedClearly = r.status !== 0 && isOneLineError(r.stderr) && SPACE_ERROR.test(r.stderr);
      if (!refusedClearly) notes.push(`exit ${r.status}: ${r.stderr.trim().slice(0, 300)}`);
      cleanup?.();
      let intact = true;
      const f = cowshed(store, 'fsck');
      if (f.status !== 0) { intact = false; notes.push(`fsck: ${f.stdout.trim().slice(0, 300)}`); }
      const after = listImages(store);
      for (const [n, id] of imagesBefore) if (after.get(n) !== id) { intact = false; notes.push(`image ${n} lost`); }
      try {
        if (!mountAndRead(store, 'edge:e', 'files/small.txt').equals(edgeSmall)) { intact = false; notes.push('edge:e reads differently'); }
      } catch (e) { intact = false; notes.push(`edge:e: ${(e as Error).message}`); }
      const ps = cowshed(store, 'ps', '-a');
      if (!ps.stdout.includes('keep')) { intact = false; notes.push('container keep lost'); }
      const left = tmpEntries(store);
      if (left.length) { intact = false; notes.push(`tmp/ holds ${left.join(' ')}`); }
      const spaceBack = free() >= before - SLACK_BYTES;
      if (!spaceBack) notes.push(`free space ${((before - free()) / 1e6).toFixed(1)} MB lower than before`);
      const message = r.stderr.trim().split('\n')[0] ?? '';
      cases.push({ name, message, refusedClearly, intact, spaceBack, notes });
      log(`${name}: ${refusedClearly ? 'refused clearly' : 'NOT refused clearly'}, ${intact ? 'store intact' : 'STORE DAMAGED'}, ${spaceBack ? 'space given back' : 'SPACE KEPT'} [${message}]${notes.length ? ` (${notes.join('; ')})` : ''}`);
    };

    check('import oci: Debian (199 MB) into ~110 MB', ['import', `oci:${debian}:v1`, 'debian:v1']);
    check('import tar: Debian rootfs into ~110 MB', ['import', `tar:${rootfsTar}`, 'debian:tar']);
    // A pull that does not fit, from Debian's docker-registry on loopback.
    const registry = await startRegistryWithDebian(join(work, 'registry'), debian, ['v1']);
    try {
      check('pull of Debian from a registry into ~110 MB', ['--quiet', 'pull', '--tls-verify=false', `${registry.host}/debian:v1`]);
    } finally {
      await registry.stop();
    }
    // A commit that does not fit: a container whose upper holds more than the free space left.
    const big = lastLine(cowshedOk(store, 'create', '--name', 'big', 'edge:e'));
    const bigRoot = lastLine(cowshedOk(store, 'mount', big));
    const fd = openSync(join(bigRoot, 'big.bin'), 'w');
    const chunk = pseudoRandomBytes(1 << 20, 77);
    try {
      // Fill about 60% of what is free with incompressible data, so the commit's copy cannot fit.
      const target = Math.floor(free() * 0.6);
      for (let n = 0; n < target; n += chunk.length) { chunk[0] = n & 0xff; writeSync(fd, chunk); }
    } finally {
      closeSync(fd);
    }
    check('commit of a container holding more than the free space', ['commit', 'big', 'big:1']);
    cowshed(store, 'rm', '-f', 'big');
    cowshedOk(store, 'rm', '-f', 'keep');
    const passed = cases.filter((c) => c.refusedClearly && c.intact && c.spaceBack).length;
    return { cases, passed, total: cases.length };
  } finally {
    removeTree(work); // unmounts the container mounts, then the loop file system
  }
}
