// Container commands: create, run (with podman's volume and process options),
// ps, rm, diff, export, commit.
import { jsonName } from '../util/names.ts';
import { Option, type Command } from 'commander';
import type { Store } from '../store/store.ts';
import type { Change } from '../containers/diff.ts';
import { table, age, shortId } from './output.ts';
import { fail } from '../util/errors.ts';
import type { ExportCompression } from '../store/export.ts';

// Loaded by the commands that need them, to keep start-up short.
const containersLib = () => import('../containers/containers.ts');
const diffLib = () => import('../containers/diff.ts');
/** ps's STATUS column for the states other than exited. */
const STATUS: Record<string, string> = { running: 'Up', created: 'Created', creating: 'Creating', incomplete: 'Incomplete (rm -f it)' };

interface RunFlags {
  rm?: boolean; name?: string; env: string[]; tty?: boolean; interactive?: boolean; verify?: boolean;
  volume: string[]; mount: string[]; tmpfs: string[]; workdir?: string; user?: string; entrypoint?: string; readOnly?: boolean; readOnlyTmpfs: string;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** --entrypoint as podman reads it: a JSON array of strings, or one string (the empty string: none). */
function parseEntrypoint(v: string): string[] {
  if (v.trimStart().startsWith('[')) {
    let a: unknown;
    try { a = JSON.parse(v); } catch { a = undefined; }
    if (!Array.isArray(a) || !a.every((x) => typeof x === 'string')) fail('EINVAL', `--entrypoint ${v}: a JSON array must hold strings only`);
    return a as string[];
  }
  return v === '' ? [] : [v];
}

type WithStore = <T>(fn: (s: Store) => Promise<T> | T) => Promise<T>;

export function containerCommands(program: Command, withStore: WithStore, say: (s: string) => void): void {
  program.command('create')
    .description('make a container from an image; prints its id (mount or commit mounts it, as with podman)')
    .argument('<image>')
    .option('--name <name>', 'container name')
    .action(async (image: string, o: { name?: string }) => withStore(async (s) => {
      const { createContainer } = await containersLib();
      // Like podman create: the container is mounted by its first mount or commit (diff reads its upper layer unmounted).
      say((await createContainer(s, image, { name: o.name, mount: false })).id);
    }));

  program.command('run')
    .description('create a container from an image and run it with runc; passes output and exit code through')
    .argument('<image>').argument('[command...]', 'command and arguments (after --), replacing the image Cmd')
    .option('--rm', 'remove the container (and its anonymous volumes) when it exits')
    .option('--name <name>', 'container name')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('-t, --tty', 'allocate a terminal')
    .option('-i, --interactive', 'pass stdin to the container (otherwise it reads /dev/null)')
    .option('-v, --volume <[SRC:]DST[:OPTS]>', 'bind mount (SRC a host path) or named volume (SRC a name; made on first use); OPTS ro, rw, z, nocopy, nosuid, ... (repeatable)', collect, [])
    .option('--mount <type=…,src=…,dst=…>', 'type=bind|volume|tmpfs with src/source, dst/destination/target, ro/readonly, tmpfs-size, tmpfs-mode (repeatable)', collect, [])
    .option('--tmpfs <DST[:OPTS]>', 'a tmpfs at DST (default rw,noexec,nosuid,nodev; size=, mode=) (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory in the container (made if the image lacks it)')
    .option('-u, --user <user[:group]>', 'user name or uid, optionally :group or :gid, resolved in the image')
    .option('--entrypoint <cmd>', 'replace the image Entrypoint (a string, or a JSON array); drops the image Cmd')
    .option('--read-only', 'mount the container root read-only (volumes, binds and tmpfs stay writable)')
    .addOption(new Option('--read-only-tmpfs <bool>', 'with --read-only, tmpfs on /tmp, /var/tmp and /run').choices(['true', 'false']).default('true'))
    .option('--verify', 'verify the whole chain first (signature under the policy, manifest, config, layers, objects, composefs image)')
    .passThroughOptions()
    .action(async (image: string, command: string[], o: RunFlags) => withStore(async (s) => {
      if (command[0] === '--') command = command.slice(1);
      const { runImage } = await import('../containers/run.ts');
      const m = await import('../volumes/mounts.ts');
      const mounts = [...o.volume.map(m.parseVolumeFlag), ...o.mount.map(m.parseMountFlag), ...o.tmpfs.map(m.parseTmpfsFlag)];
      m.checkDuplicates(mounts);
      // --verify checks the whole chain here and runs the image id it verified.
      const verified = o.verify ? await (await import('./trust.ts')).verifyForUse(program, s, image, o) : undefined;
      if (verified) process.stderr.write(verified.summary);
      const r = await runImage(s, verified?.image ?? image, {
        name: o.name, args: command.length ? command : undefined, env: o.env, rm: o.rm, tty: o.tty,
        interactive: o.interactive, mounts, workdir: o.workdir, user: o.user, entrypoint: o.entrypoint === undefined ? undefined : parseEntrypoint(o.entrypoint),
        readOnly: o.readOnly, readOnlyTmpfs: o.readOnlyTmpfs === 'true',
      });
      process.exitCode = r.exitCode;
    }));

  program.command('ps')
    .description('list containers (running ones; -a for all)')
    .option('-a, --all', 'all containers')
    .option('-q, --quiet', 'ids only')
    .option('--json', 'JSON output')
    .action(async (o: { all?: boolean; quiet?: boolean; json?: boolean }) => withStore(async (s) => {
      const list = (await containersLib()).listContainers(s, { all: o.all });
      if (o.json) return say(JSON.stringify(list, null, 2));
      if (o.quiet) return list.length ? say(list.map((c) => c.id.slice(0, 12)).join('\n')) : undefined;
      say(table(['CONTAINER ID', 'IMAGE', 'CREATED', 'STATUS', 'NAMES'], list.map((c) => [
        c.id.slice(0, 12), c.imageNames[0] ?? shortId(c.imageId), age(c.created),
        c.state === 'exited' ? (c.exitCode === null ? 'Exited' : `Exited (${c.exitCode})`) : STATUS[c.state] ?? 'Created', c.name,
      ])));
    }));

  program.command('rm')
    .description('remove containers')
    .argument('<containers...>')
    .option('-f, --force', 'remove even if running')
    .option('-v, --volumes', 'remove the anonymous volumes the container used')
    .action(async (refs: string[], o: { force?: boolean; volumes?: boolean }) => withStore(async (s) => {
      const { findContainer, removeContainer } = await containersLib();
      for (const r of refs) {
        const { anonymousVolumesOf } = await import('../volumes/mounts.ts');
        const c = o.volumes ? findContainer(s, r) : undefined;
        const anonymous = c ? anonymousVolumesOf(s, c.id) : [];
        say(removeContainer(s, r, { force: o.force }));
        if (anonymous.length) {
          const { removeVolume } = await import('../volumes/volumes.ts');
          for (const v of anonymous) { try { removeVolume(s, v); } catch { /* another container uses it */ } }
        }
      }
    }));

  program.command('diff')
    .description('what a container changed (A added, C changed, D deleted), or the changes between two images')
    .argument('<container-or-image>').argument('[image2]')
    .option('--json', 'JSON output')
    .action(async (a: string, b: string | undefined, o: { json?: boolean }) => withStore(async (s) => {
      let changes: Change[];
      if (b === undefined) {
        const { findContainer, containerDiff } = await containersLib();
        if (!findContainer(s, a)) fail('ENOENT', `no such container: ${a} (to compare images, name two)`);
        changes = containerDiff(s, a);
      } else {
        const { diffTrees } = await diffLib();
        changes = diffTrees(await s.imageTree(a), await s.imageTree(b));
      }
      // Names are bytes: printed as they are (as podman does); JSON gets text plus base64 where they are not UTF-8.
      if (o.json) say(JSON.stringify(changes.map((c) => ({ kind: c.kind, ...jsonName('path', c.path) }))));
      else if (changes.length) process.stdout.write(Buffer.from(changes.map((c) => `${c.kind} ${c.path}\n`).join(''), 'latin1'));
    }));

  program.command('export')
    .description('write an image to oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REPO:TAG]')
    .argument('<image>').argument('<dest>')
    .addOption(new Option('--compression <kind>', 'layer compression for OCI destinations').choices(['gzip', 'zstd', 'zstd:chunked', 'none']).default('gzip'))
    .addOption(new Option('--compression-format <kind>', 'the same, as podman names it').choices(['gzip', 'zstd', 'zstd:chunked', 'none']))
    .action(async (image: string, dest: string, o: { compression: ExportCompression; compressionFormat?: ExportCompression }) => withStore(async (s) => {
      const { exportImage } = await import('../store/export.ts');
      const r = await exportImage(s, image, dest, { compression: o.compressionFormat ?? o.compression });
      say(r.manifestDigest ?? r.dest);
    }));

  program.command('commit')
    .description('make a new image from a container, storing only what changed')
    .argument('<container>').argument('<name>')
    .option('-m, --message <text>', 'commit message (history comment)')
    .option('-a, --author <name>', 'author')
    .option('--no-pause', 'do not freeze a running container while it is read')
    .action(async (ctr: string, name: string, o: { message?: string; author?: string; pause: boolean }) => withStore(async (s) => {
      const { commitContainer } = await import('../containers/commit.ts');
      const r = await commitContainer(s, ctr, name, { message: o.message, author: o.author, pause: o.pause });
      say(r.id);
    }));
}
