// The library side of `cowshed composefs create` (mkcomposefs): a directory
// or a dump file in, a composefs image out, optionally filling a digest store
// (objects named XX/<62 hex>, the layout our object store uses too).
import { readFileSync } from 'node:fs';
import { parseDump } from './dump.ts';
import { writeComposefsImage } from './erofs-writer.ts';
import { treeFromDirectory } from './from-dir.ts';
import { fsverityDigest, toHex } from './fsverity.ts';
import { writeFileAtomic } from '../util/fs.ts';
import { CowshedError } from '../util/errors.ts';
import { walk } from '../tree/node.ts';

export interface CreateOptions {
  fromFile?: boolean;          // SOURCE is a dump ('-' = stdin), not a directory
  digestStore?: string;
  minVersion?: number;
  maxVersion?: number;
  useEpoch?: boolean;
  skipXattrs?: boolean;
  userXattrs?: boolean;
  skipDevices?: boolean;
  /** From a directory: keep hardlinks as one inode (mkcomposefs 1.0.x gives each name its own). */
  hardlinks?: boolean;
  /** Threads hashing and copying files from a directory (mkcomposefs --threads; default: the cores available). */
  threads?: number;
}

export interface CreateResult { image: Buffer; digest: string }

export async function createComposefs(source: string, opts: CreateOptions = {}): Promise<CreateResult> {
  let root;
  if (opts.fromFile) {
    if (opts.hardlinks) throw new CowshedError('EINVAL', 'hardlinks applies to a directory: a dump names its hardlinks itself (@ lines)');
    // Lenient, as mkcomposefs parses unless CFS_PARSE_STRICT is set.
    root = parseDump(source === '-' ? readFileSync(0) : readFileSync(source), { lenient: true });
    if (opts.useEpoch) for (const [, n] of walk(root)) { n.mtimeSec = 0; n.mtimeNsec = 0; }
  } else {
    root = await treeFromDirectory(source, {
      skipXattrs: opts.skipXattrs, userXattrs: opts.userXattrs, skipDevices: opts.skipDevices, useEpoch: opts.useEpoch,
      hardlinks: opts.hardlinks, digestStore: opts.digestStore, threads: opts.threads,
    });
  }
  const image = writeComposefsImage(root, { minVersion: opts.minVersion, maxVersion: opts.maxVersion });
  return { image, digest: toHex(fsverityDigest(image)) };
}

export function writeImageFile(path: string, image: Buffer): void {
  if (path === '-') process.stdout.write(image);
  else writeFileAtomic(path, image);
}
