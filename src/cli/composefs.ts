// `cowshed composefs create|dump`: mkcomposefs and composefs-info dump.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { fail } from '../util/errors.ts';

// Loaded on use: most commands never need the writer or the reader.
const lib = async () => ({
  ...(await import('../composefs/create.ts')),
  ...(await import('../composefs/dump.ts')),
  ...(await import('../composefs/erofs-reader.ts')),
});

const version = (v: string): number => {
  if (!/^[01]$/.test(v)) fail('EINVAL', `unsupported composefs format version ${v}: use 0 or 1`);
  return Number(v);
};

const threadCount = (v: string): number => {
  if (!/^[1-9][0-9]{0,3}$/.test(v)) fail('EINVAL', `invalid thread count ${v}: a number from 1`);
  return Number(v);
};

export function composefsCommands(program: Command): void {
  const cfs = program.command('composefs').description('composefs images (mkcomposefs, composefs-info)');

  cfs.command('create')
    .description('write a composefs image from a directory, or from a dump with --from-file')
    .argument('<source>', 'directory, or dump file (- for stdin) with --from-file')
    .argument('[image]', 'image file to write (- for stdout)')
    .option('--from-file', 'SOURCE is a composefs dump')
    .option('--digest-store <dir>', 'copy file contents into DIR, named by fs-verity digest')
    .option('--min-version <n>', 'minimum format version', version)
    .option('--max-version <n>', 'maximum format version', version)
    .option('--print-digest', 'print the fs-verity digest of the image')
    .option('--print-digest-only', 'print the digest, write no image')
    .option('--use-epoch', 'set every mtime to 0')
    .option('--skip-xattrs', 'record no extended attributes')
    .option('--user-xattrs', 'record only user.* extended attributes')
    .option('--skip-devices', 'leave out device nodes')
    .option('--threads <n>', 'threads hashing and copying files (default: the cores available)', threadCount)
    .option('--hardlinks', 'keep hardlinked files as one inode (default: one inode per name, as mkcomposefs 1.0.x)')
    .action(async (source: string, image: string | undefined, o: {
      fromFile?: boolean; digestStore?: string; minVersion?: number; maxVersion?: number; printDigest?: boolean;
      printDigestOnly?: boolean; useEpoch?: boolean; skipXattrs?: boolean; userXattrs?: boolean; skipDevices?: boolean;
      hardlinks?: boolean; threads?: number;
    }) => {
      if (!image && !o.printDigestOnly) fail('EINVAL', 'composefs create: no IMAGE given (or use --print-digest-only)');
      const { createComposefs, writeImageFile } = await lib();
      const r = await createComposefs(source, o);
      if (!o.printDigestOnly) writeImageFile(image!, r.image);
      if (o.printDigest || o.printDigestOnly) process.stdout.write(`${r.digest}\n`);
    });

  cfs.command('dump')
    .description('print a composefs image in the composefs-dump format')
    .argument('<image>')
    .action(async (image: string) => {
      const { printDump, readComposefsImage } = await lib();
      process.stdout.write(printDump(readComposefsImage(readFileSync(image))));
    });
}
