// The cowshed command line: parse, call the library, print. Names and flags
// follow podman, skopeo and mkcomposefs (docs: ../shared/design/CLI.md).
import { Command, CommanderError, Option } from 'commander';
import type { Store, DriverName } from '../store/store.ts';
import { defaultStoreDir } from '../store/paths.ts';
import { containerCommands } from './containers.ts';
import { CowshedError, isCowshedError } from '../util/errors.ts';
import { table, formatBytes, age, shortId, progress } from './output.ts';
import { trustGlobalOptions } from './global-options.ts';

// The library loads when a command runs, only the parts it needs: every
// module (and every Node built-in it pulls in) is start-up time that a short
// command like ps pays on each call. Only commander and the command
// definitions load up front, for parsing, help and completion; and for the
// commands of this file and of containers.ts (ps, create, diff, rm, images…)
// only those definitions (see fastPath below).
const containersLib = () => import('../containers/containers.ts');
const trustCli = () => import('./trust.ts');
const composefsDriver = () => import('../drivers/composefs.ts');

interface GlobalOpts { store?: string; driver?: DriverName; logLevel?: string; quiet?: boolean }

const program = new Command('cowshed')
  .description('container images and container storage: per-file dedup, composefs images, honest diffs')
  .option('--store <dir>', 'store directory (env COWSHED_STORE)', defaultStoreDir())
  .addOption(new Option('--driver <name>', 'storage driver, chosen when the store is created').choices(['composefs', 'overlay', 'btrfs', 'vfs', 'zfs']))
  .addOption(new Option('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']).default('warn'))
  .option('-q, --quiet', 'print only what is asked for')
  .showHelpAfterError(false)
  // Global options go before the command, so `ps -q` is the command's own -q.
  .enablePositionalOptions()
  .exitOverride();

const globals = (): GlobalOpts => program.opts<GlobalOpts>();
const say = (s: string): void => { process.stdout.write(s.endsWith('\n') ? s : `${s}\n`); };

export async function withStore<T>(fn: (s: Store) => Promise<T> | T): Promise<T> {
  const g = globals();
  const { Store } = await import('../store/store.ts');
  const store = await Store.open(g.store, { driver: g.driver });
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}

program.command('import')
  .description('import an image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, tar:FILE, dir:PATH')
  .argument('<source>').argument('[name]', 'NAME[:TAG] to give the image')
  .action(async (source: string, name: string | undefined) => withStore(async (s) => {
    const bar = progress(!globals().quiet);
    const t0 = performance.now();
    try {
      const r = await s.importImage(source, name, {
        onProgress: (p) => bar.update(p.layer + 1, p.layers, `layer ${p.layer + 1}/${p.layers} ${formatBytes(p.bytes)} ${p.files} files`),
      });
      bar.stop();
      if (!globals().quiet) {
        const how = r.reused ? 'already built, nothing read' : `${r.objectsWritten} new objects, ${formatBytes(r.bytesWritten)} written`;
        process.stderr.write(`imported ${r.name}: ${r.entries} entries, ${formatBytes(r.logicalSize)} (${how}) in ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);
      }
      say(r.id);
    } finally {
      bar.stop();
    }
  }));

program.command('images')
  .description('list images')
  .option('--json', 'JSON output')
  .option('-q, --quiet', 'ids only')
  .action(async (o: { json?: boolean; quiet?: boolean }) => withStore((s) => {
    const imgs = s.images();
    if (o.json) return say(JSON.stringify(imgs, null, 2));
    if (o.quiet) return say(imgs.map((i) => shortId(i.id)).join('\n'));
    const rows: string[][] = [];
    for (const i of imgs) {
      const names = i.names.length ? i.names : ['<none>:<none>'];
      for (const n of names) {
        const c = n.lastIndexOf(':');
        rows.push([n.slice(0, c), n.slice(c + 1), shortId(i.id), age(i.created), formatBytes(i.logicalSize)]);
      }
    }
    say(table(['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], rows));
  }));

program.command('inspect')
  .description('show a container or an image as JSON (images: manifest, config, composefs digest, sizes)')
  .argument('<name>')
  .action(async (name: string) => withStore(async (s) => {
    const { findContainer } = await containersLib();
    say(JSON.stringify(findContainer(s, name) ?? await (await trustCli()).inspectWithSignatures(s, name), null, 2));
  }));

program.command('tag')
  .description('give an image another name')
  .argument('<src>').argument('<dst>')
  .action(async (src: string, dst: string) => withStore((s) => s.tag(src, dst)));

program.command('rmi')
  .description('remove images (their files stay until gc)')
  .argument('<names...>')
  .option('-f, --force', 'remove the image with all its names')
  .action(async (names: string[], o: { force?: boolean }) => withStore((s) => {
    for (const n of names) {
      const r = s.removeImage(n, { force: o.force });
      for (const u of r.untagged) say(`Untagged: ${u}`);
      if (r.deleted) say(`Deleted: ${r.deleted.replace(/^sha256:/, '')}`);
    }
  }));

program.command('mount')
  .description('mount a container, or an image read-only; prints the path')
  .argument('<name>')
  .option('--verify', 'verify the whole chain first: signature under the policy, manifest, config, layers, objects, composefs image')
  .action(async (name: string, o: { verify?: boolean }) => withStore(async (s) => {
    const { findContainer, mount: mountContainer } = await containersLib();
    const c = findContainer(s, name);
    const verified = o.verify ? await (await trustCli()).verifyForUse(program, s, c ? c.imageId : name, o) : undefined;
    // The image verified, by id: a name moved by another process meanwhile does not get mounted unchecked.
    const driver = await composefsDriver();
    const mountImage = async (): Promise<string> => {
      try {
        return await driver.mountImage(s, verified?.image ?? name);
      } catch (e) {
        // Removed by another process between the check and the mount: say so by the name given.
        if (verified && isCowshedError(e) && e.code === 'ENOENT') throw new CowshedError('ENOENT', `${name} was removed while it was being verified`);
        throw e;
      }
    };
    const where = c ? mountContainer(s, c.id) : await mountImage();
    if (verified) process.stderr.write(verified.summary);
    say(where);
  }));

program.command('umount')
  .alias('unmount')
  .description('unmount a container or an image')
  .argument('<name>')
  .option('-a, --all', 'unmount an image even if mounted more than once')
  .action(async (name: string, o: { all?: boolean }) => withStore(async (s) => {
    const { findContainer, unmount: unmountContainer } = await containersLib();
    const c = findContainer(s, name);
    if (c) unmountContainer(s, c.id);
    else (await composefsDriver()).unmountImage(s, name, { all: o.all });
  }));

program.command('fsck')
  .description('check the store: structure, database against files, every object digest')
  .option('--repair', 'remove leftovers and corrupt objects')
  .option('--json', 'JSON output')
  .action(async (o: { repair?: boolean; json?: boolean }) => withStore(async (s) => {
    const { fsck } = await import('../store/fsck.ts');
    const r = await fsck(s, { repair: o.repair });
    if (o.json) say(JSON.stringify(r, null, 2));
    else {
      for (const p of r.problems) say(`${p.repaired ? 'repaired' : 'problem'}: ${p.kind}: ${p.path}: ${p.message}`);
      if (!globals().quiet) say(`checked ${r.imagesChecked} images, ${r.objectsChecked} objects, ${r.blobsChecked} blobs: ${r.problems.length} problems`);
    }
    if (r.problems.some((p) => !p.repaired)) process.exitCode = 1;
  }));

program.command('gc')
  .description('remove objects, images and blobs nothing needs')
  .option('--json', 'JSON output')
  .action(async (o: { json?: boolean }) => withStore(async (s) => {
    const { gc } = await import('../store/gc.ts');
    const r = await gc(s);
    say(o.json ? JSON.stringify(r) : `removed ${r.objectsRemoved} objects, ${r.imagesRemoved} composefs images, ${r.blobsRemoved} blobs; freed ${formatBytes(r.bytesFreed)}`);
  }));

program.command('df')
  .description('logical size, stored size and deduplication ratio, per image')
  .option('--json', 'JSON output')
  .action(async (o: { json?: boolean }) => withStore(async (s) => {
    const { df } = await import('../store/gc.ts');
    const r = df(s);
    if (o.json) return say(JSON.stringify(r, null, 2));
    say(table(['IMAGE ID', 'NAMES', 'ENTRIES', 'SIZE', 'UNIQUE'], r.images.map((i) => [
      shortId(i.id), i.names.join(',') || '<none>', String(i.entries), formatBytes(i.logicalSize), formatBytes(i.uniqueSize),
    ])));
    say(`\nlogical ${formatBytes(r.logicalSize)}, stored ${formatBytes(r.storedSize)} + metadata ${formatBytes(r.metadataSize)}, dedup ratio ${r.dedupRatio.toFixed(2)}`);
  }));

containerCommands(program, withStore, say);

/**
 * Whether argv runs a command registered so far (this file's and
 * containers.ts's) that no other module changes: then the other command
 * modules are not loaded at all. mount, run and df get options or hooks from
 * trust.ts and volumes.ts; help (-h, --help anywhere) shows examples that
 * help.ts adds; anything else (no command, an unknown option before it)
 * takes the full tree, so errors and help stay the same.
 */
function fastPath(argv: string[]): boolean {
  const globals = [...program.options];
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') return false;
    if (!a.startsWith('-')) {
      const cmd = program.commands.find((c) => c.name() === a || c.aliases().includes(a));
      return !!cmd && !['mount', 'run', 'df'].includes(cmd.name()) && !argv.slice(i + 1).some((x) => x === '-h' || x === '--help');
    }
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    const o = globals.find((x) => x.long === flag || x.short === flag);
    if (!o || o.optional) return false;
    if (o.required && eq < 0) i++;
  }
  return false;
}

trustGlobalOptions(program);
if (!fastPath(process.argv)) {
  const [registry, composefs, trust, volumes, help, delta] = await Promise.all([
    import('./registry.ts'), import('./composefs.ts'), trustCli(), import('./volumes.ts'), import('./help.ts'), import('./delta.ts'),
  ]);
  registry.registryCommands(program, withStore, say);
  composefs.composefsCommands(program);
  trust.trustCommands(program, withStore, say);
  volumes.volumeCommands(program, withStore, say);
  // Keep last: --version, completion, examples and exit codes see every command registered above.
  help.helpCommands(program);
  delta.deltaCommands(program, withStore, say);
}

async function main(argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed its message; help and version are not errors.
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    if (isCowshedError(e)) {
      process.stderr.write(`cowshed: ${e.message}\n`);
      process.exitCode = e.exitCode;
      return;
    }
    const code = (e as { code?: string }).code;
    if (code === 'EACCES' || code === 'EPERM' || code === 'ENOENT' || code === 'ENOSPC' || code === 'EROFS') {
      process.stderr.write(`cowshed: ${(e as Error).message}\n`);
      process.exitCode = 1;
      return;
    }
    throw e; // a bug: keep the stack trace
  }
}

await main(process.argv);
