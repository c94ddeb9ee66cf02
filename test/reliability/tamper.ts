// Tampering: damage one stored file at a time (an object, the composefs
// image, the manifest, the config, a tar-split record) and demand that fsck
// names it and that mount --verify and run --verify refuse the image. Each
// case restores the file afterwards, so one store serves them all.
import { readFileSync, writeFileSync, truncateSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { cowshed, cowshedOk, debianFixture, removeTree, tempDir } from '../helpers/cli.ts';
import { prng } from './lib.ts';

export interface TamperCase { name: string; file: string; detectedBy: { fsck: boolean; mountVerify: boolean; runVerify: boolean }; notes: string[] }
export interface TamperFigures { cases: TamperCase[]; detected: number; total: number }

export async function tamperCampaign(opts: { seed: number; store?: string; log?: (l: string) => void }): Promise<TamperFigures> {
  const log = opts.log ?? (() => {});
  const rand = prng(opts.seed);
  const work = tempDir('cowshed-tamper-');
  try {
    const store = opts.store ?? join(work, 'store');
    if (!opts.store) cowshedOk(store, 'import', `oci:${debianFixture().layout}:v1`, 'debian:v1');
    const meta = JSON.parse(cowshedOk(store, 'inspect', 'debian:v1')) as { id: string; composefs: string; configDigest: string };
    const db = new DatabaseSync(join(store, 'meta.db'), { readOnly: true });
    const splits = db.prepare('SELECT split_digest FROM layers WHERE image_id = ? ORDER BY idx').all(meta.id).map((r) => String(r.split_digest));
    const objects = db.prepare('SELECT digest FROM image_objects WHERE image_id = ? ORDER BY digest').all(meta.id).map((r) => String(r.digest));
    db.close();
    const blob = (d: string): string => join(store, 'blobs', 'sha256', d.replace(/^sha256:/, ''));
    const object = (hex: string): string => join(store, 'objects', hex.slice(0, 2), hex.slice(2));
    // Objects with at least a few bytes, so truncation and flips are real changes.
    const sized = objects.filter((h) => statSync(object(h)).size >= 16);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];

    const flip = (path: string): void => {
      const b = readFileSync(path);
      const at = Math.floor(rand() * b.length);
      b[at] ^= 1 << Math.floor(rand() * 8);
      writeFileSync(path, b);
    };
    const objFlip = object(pick(sized));
    const objTrunc = object(pick(sized));
    const cases: { name: string; file: string; damage: (p: string) => void }[] = [
      { name: 'flipped bit in an object', file: objFlip, damage: flip },
      { name: 'truncated object', file: objTrunc, damage: (p) => truncateSync(p, Math.floor(statSync(p).size / 2)) },
      { name: 'changed EROFS image', file: join(store, 'images', meta.composefs), damage: flip },
      {
        name: 'edited manifest', file: blob(meta.id), damage: (p) => {
          // A semantic edit that still parses: another layer size.
          const m = JSON.parse(readFileSync(p, 'utf8')) as { layers: { size: number }[] };
          m.layers[0].size += 1;
          writeFileSync(p, JSON.stringify(m));
        },
      },
      { name: 'edited config', file: blob(meta.configDigest), damage: (p) => writeFileSync(p, readFileSync(p, 'utf8').replace('"amd64"', '"arm64"')) },
      { name: 'edited tar-split record', file: blob(splits[0]), damage: flip },
      { name: 'object replaced by another object', file: objFlip, damage: (p) => writeFileSync(p, readFileSync(object(pick(sized.filter((h) => object(h) !== p))))) },
    ];

    const results: TamperCase[] = [];
    const psCount = (): number => cowshedOk(store, 'ps', '-a').trim().split('\n').length;
    for (const c of cases) {
      const original = readFileSync(c.file);
      const notes: string[] = [];
      c.damage(c.file);
      try {
        const f = cowshed(store, 'fsck');
        const tail = c.file.split('/').pop()!;
        const fsckOk = f.status !== 0 && (f.stdout + f.stderr).includes(tail);
        if (!fsckOk) notes.push(`fsck exit ${f.status}: ${(f.stdout + f.stderr).trim().split('\n').slice(0, 3).join(' | ')}`);
        const m = cowshed(store, 'mount', '--verify', 'debian:v1');
        const mountOk = m.status !== 0;
        if (mountOk) notes.push(`mount refused: ${m.stderr.trim()}`);
        else { notes.push('mount --verify served the image'); cowshed(store, 'umount', 'debian:v1'); }
        const before = psCount();
        const r = cowshed(store, 'run', '--rm', '--verify', 'debian:v1', '--', '/bin/true');
        const runOk = r.status !== 0;
        if (!runOk) notes.push('run --verify ran the image');
        if (psCount() !== before) notes.push('run --verify left a container behind');
        results.push({ name: c.name, file: c.file, detectedBy: { fsck: fsckOk, mountVerify: mountOk, runVerify: runOk }, notes });
        log(`${c.name}: fsck ${fsckOk ? 'named it' : 'MISSED'}, mount --verify ${mountOk ? 'refused' : 'SERVED'}, run --verify ${runOk ? 'refused' : 'RAN'}`);
      } finally {
        writeFileSync(c.file, original);
      }
    }
    const clean = cowshed(store, 'fsck');
    if (clean.status !== 0) throw new Error(`store not clean after restoring every file: ${clean.stdout}`);
    const checks = results.flatMap((r) => Object.values(r.detectedBy));
    return { cases: results, detected: checks.filter(Boolean).length, total: checks.length };
  } finally {
    removeTree(work);
  }
}

