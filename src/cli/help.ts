// What every command line has: --version, `help COMMAND` with examples,
// exit codes in the help, and `completion bash|zsh`. Registered last (after
// every command) so that examples and completion see the whole tree.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { completionScript } from './completion.ts';
import { CowshedError } from '../util/errors.ts';

/** Examples shown by `cowshed help COMMAND` (and `cowshed COMMAND --help`), by command path. */
export const EXAMPLES: Record<string, string[]> = {
  import: [
    'cowshed import oci:/srv/images/app:1.4 app:1.4',
    'cowshed import oci-archive:app.tar:1.4 app:1.4',
    'cowshed import docker-archive:saved.tar',
    'cowshed import tar:rootfs.tar base:1',
    'cowshed import dir:/srv/rootfs base:2',
  ],
  images: ['cowshed images', 'cowshed images --json | jq -r \'.[].names[]\''],
  inspect: ['cowshed inspect debian:v1', 'cowshed inspect web        # a container'],
  tag: ['cowshed tag debian:v1 debian:stable'],
  rmi: ['cowshed rmi debian:stable', 'cowshed rmi -f debian:v1   # every name of that image'],
  mount: ['cowshed mount debian:v1             # read-only; prints the path', 'cowshed mount web                   # a container\'s root', 'cowshed mount --verify debian:v1    # re-hash everything first'],
  umount: ['cowshed umount debian:v1', 'cowshed umount -a debian:v1'],
  fsck: ['cowshed fsck', 'cowshed fsck --repair', 'cowshed fsck --json'],
  gc: ['cowshed gc'],
  df: ['cowshed df', 'cowshed df --json'],
  create: ['cowshed create debian:v1', 'cowshed create --name web debian:v1', 'cowshed --driver btrfs --store /mnt/btrfs/cowshed create debian:v1'],
  run: ['cowshed run --rm debian:v1 -- cat /etc/os-release', 'cowshed run --name job -e MODE=fast debian:v1 -- sh -c \'echo $MODE\'', 'cowshed run -t --rm debian:v1 -- bash'],
  ps: ['cowshed ps', 'cowshed ps -a', 'cowshed ps -a -q', 'cowshed ps --json'],
  rm: ['cowshed rm web', 'cowshed rm -f $(cowshed ps -a -q)'],
  diff: ['cowshed diff web', 'cowshed diff --json web', 'cowshed diff debian:v1 debian:web'],
  export: ['cowshed export debian:web oci:/tmp/out:web', 'cowshed export debian:web oci-archive:/tmp/web.tar:web', 'cowshed export debian:web docker-archive:/tmp/web.tar:debian:web'],
  commit: ['cowshed commit web debian:web', 'cowshed commit --no-pause web debian:web'],
  pull: ['cowshed pull localhost:5000/app:1.4', 'cowshed pull --creds user:secret localhost:5000/app@sha256:…'],
  push: ['cowshed push app:1.4 localhost:5000/app:1.4'],
  login: ['cowshed login -u user -p secret localhost:5000'],
  logout: ['cowshed logout localhost:5000'],
  'composefs create': ['cowshed composefs create --digest-store objects rootfs/ image.cfs', 'cowshed composefs create --from-file --print-digest-only image.dump'],
  'composefs dump': ['cowshed composefs dump image.cfs'],
  completion: [
    'eval "$(cowshed completion bash)"                       # this shell',
    'cowshed completion bash > /etc/bash_completion.d/cowshed  # every bash',
    'cowshed completion zsh > "${fpath[1]}/_cowshed"          # zsh',
  ],
  help: ['cowshed help create', 'cowshed composefs help create'],
};

export const EXIT_CODES = [
  ['0', 'success'],
  ['1', 'the command failed (one line on stderr: `cowshed: …`); fsck found problems'],
  ['2', 'usage: unknown command or option, missing or bad argument'],
  ['126, 127', 'run: the runtime could not execute, or did not find, the command'],
  ['other', 'run: the container\'s own exit code'],
] as const;

const pathOf = (c: Command): string => {
  const names: string[] = [];
  for (let x: Command | null = c; x?.parent; x = x.parent) names.unshift(x.name());
  return names.join(' ');
};

function* allCommands(c: Command): Generator<Command> {
  for (const sub of c.commands) {
    yield sub;
    yield* allCommands(sub);
  }
}

export function version(): string {
  // src/cli/help.ts and dist/cli/help.js are both two levels below package.json.
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** --version, the completion command, examples and exit codes in the help. Call after every other command is registered. */
export function helpCommands(program: Command): void {
  program.version(`cowshed version ${version()}`, '-v, --version', 'print the version');

  // `help [COMMAND…]` (also `help composefs create`); an unknown command is one line, not the whole help.
  program.helpCommand(false);
  program.command('help')
    .description('show the options and examples of a command')
    .argument('[command...]', 'a command, or a command and its subcommand')
    .action((names: string[]) => {
      let c: Command = program;
      for (const n of names) {
        const next = c.commands.find((x) => x.name() === n || x.aliases().includes(n));
        if (!next) throw new CowshedError('EINVAL', `help: no command ${names.join(' ')} (cowshed help lists the commands)`);
        c = next;
      }
      c.outputHelp();
    });

  program.command('completion')
    .description('print a shell completion script (bash or zsh)')
    .argument('<shell>', 'bash or zsh')
    .action((shell: string) => {
      process.stdout.write(completionScript(program, shell));
    });

  for (const c of allCommands(program)) {
    const ex = EXAMPLES[pathOf(c)];
    if (ex) c.addHelpText('after', `\nExamples:\n${ex.map((l) => `  ${l}`).join('\n')}\n`);
  }
  program.addHelpText('after', [
    '',
    'Examples:',
    '  cowshed import oci:/srv/images/app:1.4 app:1.4',
    '  cowshed create --name web app:1.4',
    '  cowshed diff web',
    '  cowshed help COMMAND      # options and examples of one command',
    '',
    'Exit codes:',
    ...EXIT_CODES.map(([code, what]) => `  ${code.padEnd(9)} ${what}`),
    '',
  ].join('\n'));
}
