// What every command line has: --version, help with examples and exit codes,
// completion scripts that bash and zsh really complete with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, cowshed, removeTree, tempDir } from '../helpers/cli.ts';

const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

test('--version and -v print the package version and exit 0, with or without a store', () => {
  const store = join(tempDir(), 'never-made');
  for (const flag of ['--version', '-v']) {
    const r = cowshed(store, flag);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `cowshed version ${VERSION}\n`);
  }
});

test('help COMMAND shows the options and examples; --help lists exit codes', () => {
  const r = cowshed('/nonexistent', 'help', 'create');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Usage: cowshed create \[options\] <image>/);
  assert.match(r.stdout, /--name <name>/);
  assert.match(r.stdout, /Examples:\n {2}cowshed create debian:v1\n/);
  const sub = cowshed('/nonexistent', 'composefs', 'help', 'create');
  assert.match(sub.stdout, /Examples:\n {2}cowshed composefs create --digest-store/);
  const top = cowshed('/nonexistent', '--help');
  assert.equal(top.status, 0);
  assert.match(top.stdout, /Exit codes:\n {2}0 +success\n {2}1 +.*\n {2}2 +usage/);
  assert.match(top.stdout, /completion <shell>/);
  // help walks down the tree too, and names a command it does not know in one line.
  assert.equal(cowshed('/nonexistent', 'help', 'composefs', 'create').stdout, sub.stdout);
  assert.equal(cowshed('/nonexistent', 'help', 'unmount').stdout, cowshed('/nonexistent', 'help', 'umount').stdout);
  const bad = cowshed('/nonexistent', 'help', 'composefs', 'no-such-command');
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, 'cowshed: help: no command composefs no-such-command (cowshed help lists the commands)\n');
  assert.equal(bad.stdout, '');
});

test('completion for an unknown shell: one line, exit 2', () => {
  const r = cowshed('/nonexistent', 'completion', 'fish');
  assert.equal(r.status, 2);
  assert.equal(r.stderr, 'cowshed: completion: no script for "fish"; the shells are bash and zsh\n');
  assert.equal(r.stdout, '');
});

/** What the completion function offers for a command line whose last word is being completed. */
function complete(shell: 'bash' | 'zsh', script: string, words: string[]): string[] {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'script'), script);
    if (shell === 'bash') {
      const driver = `source ${JSON.stringify(join(dir, 'script'))}\nCOMP_WORDS=("$@"); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); cd ${JSON.stringify(dir)}; _cowshed; printf '%s\\n' "\${COMPREPLY[@]}"\n`;
      const r = spawnSync('bash', ['-c', driver, 'bash', ...words], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.split('\n').filter(Boolean);
    }
    // zsh: compadd and _files stand in for the completion system; compadd filters by prefix itself, so do it here.
    const driver = `compdef() { :; }\ncompadd() { [[ $1 == -- ]] && shift; local w; for w in "$@"; do [[ $w == "$cur"* ]] && print -r -- $w; done }\n` +
      `_files() { print -r -- "<files $*>"; }\nsource ${JSON.stringify(join(dir, 'script'))}\nwords=("$@"); CURRENT=\${#words}\n_cowshed\ntrue\n`;
    const r = spawnSync('zsh', ['-f', '-c', driver, 'zsh', ...words], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean);
  } finally {
    removeTree(dir);
  }
}

for (const shell of ['bash', 'zsh'] as const) {
  test(`completion ${shell}: commands, subcommands, aliases, options and option values`, { skip: has(shell) ? false : `${shell} is not installed` }, () => {
    const r = cowshed('/nonexistent', 'completion', shell);
    assert.equal(r.status, 0, r.stderr);
    const c = (...words: string[]): string[] => complete(shell, r.stdout, ['cowshed', ...words]);
    assert.deepEqual(c('cr'), ['create']);
    assert.deepEqual(c('--store', '/x', 'co').sort(), ['commit', 'completion', 'composefs']);
    assert.deepEqual(c('composefs', '').sort(), ['create', 'dump', 'help']);
    assert.deepEqual(c('composefs', 'create', '--digest'), ['--digest-store']);
    assert.deepEqual(c('--driver', ''), ['composefs', 'overlay', 'btrfs', 'vfs', 'zfs']);
    assert.deepEqual(c('unmount', '--a'), ['--all']);
    assert.deepEqual(c('ps', '-'), ['-a', '--all', '-q', '--quiet', '--json', '-h', '--help']);
    // A value of --name is not a command: the options of create still complete after it.
    assert.deepEqual(c('create', '--name', 'rm', '--n'), ['--name']);
  });
}

test('a command that loads only its own definitions behaves as with the whole command tree', () => {
  const store = tempDir();
  try {
    // The global options of every module are there (trust.ts's too), before the command.
    const policy = join(store, 'policy.json');
    writeFileSync(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const ps = cowshed(join(store, 's'), '--signature-policy', policy, '--registries.d', store, '-q', 'ps', '-a');
    assert.equal(ps.status, 0, ps.stderr);
    assert.equal(ps.stdout, 'CONTAINER ID   IMAGE   CREATED   STATUS   NAMES\n');
    // --help after the command still shows the examples and options help.ts adds.
    const help = cowshed(join(store, 's'), 'ps', '--help');
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^Usage: cowshed ps \[options\]/);
    assert.match(help.stdout, /Examples:\n {2}cowshed ps\n/);
    assert.equal(help.stdout, cowshed(join(store, 's'), 'help', 'ps').stdout);
    // Usage errors: the same one line and exit code 2.
    const bad = cowshed(join(store, 's'), 'images', '--bogus');
    assert.equal(bad.status, 2);
    assert.equal(bad.stderr, "error: unknown option '--bogus'\n");
    const missing = cowshed(join(store, 's'), 'create');
    assert.equal(missing.status, 2);
    assert.equal(missing.stderr, "error: missing required argument 'image'\n");
    // An unknown command still gets commander's suggestion from the whole tree.
    const typo = cowshed(join(store, 's'), 'pul');
    assert.equal(typo.status, 2);
    assert.match(typo.stderr, /unknown command 'pul'.*\n.*pull/);
  } finally {
    removeTree(store);
  }
});
