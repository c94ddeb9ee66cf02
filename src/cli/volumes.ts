// volume create|ls|inspect|rm|prune, as podman names them; and a line for
// volumes under df's table.
import type { Command } from 'commander';
import type { Store } from '../store/store.ts';
import { table, age, formatBytes } from './output.ts';

type WithStore = <T>(fn: (s: Store) => Promise<T> | T) => Promise<T>;

const lib = () => import('../volumes/volumes.ts');

export function volumeCommands(program: Command, withStore: WithStore, say: (s: string) => void): void {
  const volume = program.command('volume').description('named volumes: data in the store, outside copy-on-write, kept when containers go');

  volume.command('create')
    .description('make a volume (a random name when none is given); prints its name')
    .argument('[name]')
    .action(async (name: string | undefined) => withStore(async (s) => say((await lib()).createVolume(s, name).name)));

  volume.command('ls')
    .alias('list')
    .description('list volumes')
    .option('-q, --quiet', 'names only')
    .option('--json', 'JSON output')
    .action(async (o: { quiet?: boolean; json?: boolean }) => withStore(async (s) => {
      const list = (await lib()).listVolumes(s);
      if (o.json) return say(JSON.stringify(list, null, 2));
      if (o.quiet) return list.length ? say(list.map((v) => v.name).join('\n')) : undefined;
      say(table(['DRIVER', 'VOLUME NAME', 'CREATED', 'USED BY'], list.map((v) => [v.driver, v.name, age(v.created), v.usedBy.join(',')])));
    }));

  volume.command('inspect')
    .description('volume details as JSON (podman inspect keys: Name, Driver, Mountpoint, CreatedAt, Anonymous, UsedBy)')
    .argument('<names...>')
    .action(async (names: string[]) => withStore(async (s) => {
      const { inspectVolume } = await lib();
      say(JSON.stringify(names.map((n) => {
        const v = inspectVolume(s, n);
        return { Name: v.name, Driver: v.driver, Mountpoint: v.mountpoint, CreatedAt: new Date(v.created).toISOString(), Anonymous: v.anonymous, UsedBy: v.usedBy };
      }), null, 2));
    }));

  volume.command('rm')
    .alias('remove')
    .description('remove volumes (refused while a container uses one)')
    .argument('<names...>')
    .action(async (names: string[]) => withStore(async (s) => {
      const { removeVolume } = await lib();
      for (const n of names) say(removeVolume(s, n));
    }));

  volume.command('prune')
    .description('remove every volume no container uses; prints their names')
    .option('-f, --force', 'do not ask (cowshed never asks; accepted for podman scripts)')
    .action(async () => withStore(async (s) => {
      const removed = (await lib()).pruneVolumes(s);
      if (removed.length) say(removed.join('\n'));
    }));

  // df's table is about images; volumes get one line under it (--json has them as `volumes`).
  const df = program.commands.find((c) => c.name() === 'df');
  df?.hook('postAction', async (cmd) => {
    if ((cmd.opts() as { json?: boolean }).json) return;
    await withStore(async (s) => {
      const { volumesUsage } = await lib();
      const u = volumesUsage(s);
      say(`volumes: ${u.count}, ${formatBytes(u.size)}`);
    });
  });
}
