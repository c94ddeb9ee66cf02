// What a killed command can leave behind in the places the storage drivers
// keep their own state, which fsck does not look at: half-made btrfs
// subvolumes (btrfs-images/.tmp-*, or any subvolume that is neither an
// image's nor a container's), half-extracted overlay layers
// (overlay/.tmp-*, layer directories of no layer, short links pointing
// nowhere), and half-copied vfs roots. Meant to run after fsck --repair,
// the re-run and gc: by then none of these may be left.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

export type DriverName = 'composefs' | 'overlay' | 'btrfs' | 'vfs';

interface Records { imageComposefs: Set<string>; containerIds: Set<string>; containerComposefs: Set<string>; diffIds: Set<string> }

/** The store's records, read from its database directly (read-only). */
function records(store: string): Records {
  const db = new DatabaseSync(join(store, 'meta.db'), { readOnly: true });
  try {
    const col = (sql: string): Set<string> => new Set((db.prepare(sql).all() as Record<string, string>[]).map((r) => Object.values(r)[0]!));
    return {
      imageComposefs: col('SELECT composefs FROM images UNION SELECT composefs FROM lower_mounts'),
      containerIds: col('SELECT id FROM containers'),
      containerComposefs: col('SELECT composefs FROM containers'),
      diffIds: new Set([...col('SELECT DISTINCT diff_id FROM layers')].map((d) => d.replace(/^sha256:/, ''))),
    };
  } finally {
    db.close();
  }
}

const list = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);

export function driverLeftovers(store: string, driver: DriverName): string[] {
  const rec = records(store);
  const out: string[] = [];
  if (driver === 'btrfs') {
    const live = new Set([...rec.imageComposefs, ...rec.containerComposefs]);
    for (const name of list(join(store, 'btrfs-images'))) {
      if (!live.has(name)) out.push(`btrfs-images/${name} is a subvolume of no image${name.startsWith('.tmp-') ? ' (half made)' : ''}`);
    }
    // Every subvolume on the filesystem must be an image's or a container's.
    const fsRoot = execFileSync('findmnt', ['-n', '-o', 'TARGET', '-T', store], { encoding: 'utf8' }).trim();
    const subvols = execFileSync('btrfs', ['subvolume', 'list', '-o', fsRoot], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)
      .map((l) => join(fsRoot, l.replace(/^.* path /, '')));
    for (const sv of subvols) {
      const rel = sv.startsWith(store + '/') ? sv.slice(store.length + 1) : undefined;
      const m = rel && /^containers\/([0-9a-f]{64})\/rootfs$/.exec(rel);
      if (rel && /^btrfs-images\/[^/]+$/.test(rel)) continue; // judged above
      if (m && rec.containerIds.has(m[1]!)) continue;
      if (!rel) continue; // another store on the same filesystem
      out.push(`${rel} is a subvolume of no container or image`);
    }
  }
  if (driver === 'overlay') {
    const dir = join(store, 'overlay');
    for (const name of list(dir)) {
      if (name === 'l') continue;
      if (!rec.diffIds.has(name)) out.push(`overlay/${name} is ${name.startsWith('.tmp-') ? 'a half-extracted layer' : 'the directory of no layer'}`);
      else if (!existsSync(join(dir, name, 'diff'))) out.push(`overlay/${name} has no diff/`);
    }
    for (const l of list(join(dir, 'l'))) if (!existsSync(join(dir, 'l', l))) out.push(`overlay/l/${l} points nowhere`);
  }
  if (driver === 'vfs' || driver === 'btrfs') {
    // A container's directory holds its root (and what the runtime writes); nothing half-made beside it.
    for (const id of list(join(store, 'containers'))) {
      if (!rec.containerIds.has(id)) continue; // strayContainerState reports those
      for (const name of list(join(store, 'containers', id))) {
        if (name !== 'rootfs' && /tmp|partial/.test(name)) out.push(`containers/${id.slice(0, 12)}/${name} is a half-made root`);
      }
      if (!existsSync(join(store, 'containers', id, 'rootfs')) || !statSync(join(store, 'containers', id, 'rootfs')).isDirectory()) {
        out.push(`container ${id.slice(0, 12)} has no root filesystem`);
      }
    }
  }
  return out;
}
