// scripts/debian-mirror.sh: the Debian fixture is built from the mirror the
// host's apt uses for bookworm main, found in deb822 and one-line sources;
// security, updates, disabled and third-party entries are passed over.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, removeTree, tempDir } from '../helpers/cli.ts';

function mirror(apt: Record<string, string>, lists: Record<string, string> = {}, env: Record<string, string> = {}): { status: number; stdout: string; stderr: string } {
  const dir = tempDir('cowshed-apt-');
  try {
    mkdirSync(join(dir, 'etc', 'sources.list.d'), { recursive: true });
    mkdirSync(join(dir, 'lists'));
    for (const [f, text] of Object.entries(apt)) writeFileSync(join(dir, 'etc', f), text);
    for (const [f, text] of Object.entries(lists)) writeFileSync(join(dir, 'lists', f), text);
    const e: NodeJS.ProcessEnv = { ...process.env, APT_DIR: join(dir, 'etc'), APT_LISTS: join(dir, 'lists') };
    delete e.COWSHED_DEBIAN_MIRROR;
    Object.assign(e, env);
    const r = spawnSync('bash', [join(REPO, 'scripts', 'debian-mirror.sh')], { encoding: 'utf8', env: e });
    return { status: r.status ?? -1, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
  } finally {
    removeTree(dir);
  }
}

test('deb822: the bookworm main stanza, not security, updates, disabled or third-party ones', () => {
  const r = mirror({
    'sources.list.d/nodejs.sources': 'Types: deb\nURIs: https://node.example/node_20.x\nSuites: nodistro\nComponents: main\n',
    'sources.list.d/debian.sources': [
      'Types: deb',
      'URIs: http://off.example/debian',
      'Suites: bookworm',
      'Components: main',
      'Enabled: no',
      '',
      '# the security archive first',
      'Types: deb',
      'URIs: http://sec.example/debian-security',
      'Suites: bookworm-security',
      'Components: main',
      '',
      'types: deb-src deb',
      'uris: http://mirror.example/debian/',
      'suites: bookworm bookworm-updates',
      'components: main contrib',
      '',
    ].join('\n'),
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'http://mirror.example/debian');
});

test('one-line sources with options; a vendor repository reusing the suite name is skipped by its Release Origin', () => {
  const r = mirror({
    'sources.list': [
      'deb [arch=amd64 signed-by=/k.gpg] https://vendor.example/apt bookworm main',
      'deb-src http://src.example/debian bookworm main',
      'deb http://sec.example/debian-security bookworm-security main',
      'deb https://cloud.example/apt cloud-sdk-bookworm main',
      '# deb http://commented.example/debian bookworm main',
      'deb [ trusted=yes ] http://mirror.example/debian bookworm main non-free',
    ].join('\n') + '\n',
  }, { 'vendor.example_apt_dists_bookworm_InRelease': 'Origin: Vendor\nSuite: bookworm\n', 'mirror.example_debian_dists_bookworm_InRelease': 'Origin: Debian\n' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'http://mirror.example/debian');
});

test('no Debian source: one line naming what to do, no default host', () => {
  const r = mirror({ 'sources.list.d/nodejs.sources': 'Types: deb\nURIs: https://node.example/node_20.x\nSuites: nodistro\nComponents: main\n' });
  assert.equal(r.status, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^debian-mirror: no apt source serves Debian bookworm main .*COWSHED_DEBIAN_MIRROR/);
  assert.equal(r.stderr.split('\n').length, 1);
});

test('COWSHED_DEBIAN_MIRROR wins', () => {
  const r = mirror({}, {}, { COWSHED_DEBIAN_MIRROR: 'http://chosen.example/debian' });
  assert.equal(r.stdout, 'http://chosen.example/debian');
});
