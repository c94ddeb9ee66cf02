// The library side of `cowshed composefs create` (mkcomposefs): a directory
// or a dump file in, a composefs image out, optionally filling a digest store
// (objects named XX/<62 hex>, the layout our object store uses too).
import { copyFileSync, constants, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseDump } from './dump.ts';
import { writeComposefsImage } from './erofs-writer.ts';
import { treeFromDirectory } from './from-dir.ts';
import { fsverityDigest, toHex } from './fsverity.ts';
import { asSpaceError, writeFileAtomic } from '../util/fs.ts';
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
}

export interface CreateResult { image: Buffer; digest: string }

export async function createComposefs(source: string, opts: CreateOptions = {}): Promise<CreateResult> {
  let root;
  if (opts.fromFile) {
    // Lenient, as mkcomposefs parses unless CFS_PARSE_STRICT is set.
    root = parseDump(source === '-' ? readFileSync(0) : readFileSync(source), { lenient: true });
    if (opts.useEpoch) for (const [, n] of walk(root)) { n.mtimeSec = 0; n.mtimeNsec = 0; }
  } else {
    const store = opts.digestStore;
    root = await treeFromDirectory(source, {
      skipXattrs: opts.skipXattrs, userXattrs: opts.userXattrs, skipDevices: opts.skipDevices, useEpoch: opts.useEpoch,
      storeObject: store ? async (src, digest, _size, data) => copyIntoDigestStore(store, src, toHex(digest), data) : undefined,
    });
  }
  const image = writeComposefsImage(root, { minVersion: opts.minVersion, maxVersion: opts.maxVersion });
  return { image, digest: toHex(fsverityDigest(image)) };
}

/** Copy (reflink where the filesystem can; or write `data` when already read) into a digest store, atomically, once. */
export function copyIntoDigestStore(store: string, src: string | Buffer, hex: string, data?: Uint8Array): void {
  const dir = join(store, hex.slice(0, 2));
  const dst = join(dir, hex.slice(2));
  if (existsSync(dst)) return;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${randomBytes(6).toString('hex')}.tmp`);
  try {
    if (data) writeFileSync(tmp, data, { mode: 0o644 });
    else copyFileSync(src, tmp, constants.COPYFILE_FICLONE);
    renameSync(tmp, dst);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw asSpaceError(e, dst);
  }
}

export function writeImageFile(path: string, image: Buffer): void {
  if (path === '-') process.stdout.write(image);
  else writeFileAtomic(path, image);
}
