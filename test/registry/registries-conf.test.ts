// registries.conf (v2 TOML) against real docker-registry instances on
// loopback: a pull-through mirror (docker-registry in proxy mode) that
// pulls go through, falling back to the origin when it is down; blocked
// registries; unqualified names through unqualified-search-registries and
// aliases; broken files named with their line. Recording proxies in front
// of origin and mirror count who was asked.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, removeTree } from '../helpers/cli.ts';
import { findRegistry, loadRegistriesConf, matchPrefix, pullEndpoints, resolveShortName } from '../../src/registry/config.ts';
import { parseRegistryRef } from '../../src/registry/client.ts';
import { cowshedAsync, startProxy, startRegistry, tinyLayout, type RunningProxy, type RunningRegistry } from './servers.ts';

const have = (tool: string): boolean => {
  try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); return true; } catch { return false; }
};
const missing = ['docker-registry', 'skopeo'].filter((t) => !have(t));

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  return lines[0];
}

describe('registries.conf: prefixes, wildcards, short names (no network)', () => {
  let dir: string;
  before(() => { dir = tempDir('cowshed-regconf-'); });
  after(() => removeTree(dir));

  test('prefix matching as containers/image does: longest wins, *.domain, component boundaries', () => {
    assert.equal(matchPrefix('example.com/a/b', 'example.com'), 'example.com'.length);
    assert.equal(matchPrefix('example.com:5000/a', 'example.com:5000'), 'example.com:5000'.length);
    assert.equal(matchPrefix('example.com/ab', 'example.com/a'), -1);
    assert.equal(matchPrefix('example.comx/a', 'example.com'), -1);
    assert.equal(matchPrefix('a.b.example.com/x', '*.example.com'), 'a.b.example.com'.length);
    assert.equal(matchPrefix('example.com/x', '*.example.com'), -1);
    assert.equal(matchPrefix('other.com/x.example.com', '*.example.com'), -1);
    const file = join(dir, 'r.conf');
    writeFileSync(file, [
      '[[registry]]', 'location = "example.com"', 'insecure = true', '',
      '[[registry]]', 'prefix = "example.com/secret"', 'blocked = true', '',
      '[[registry]]', 'prefix = "*.example.com"', 'blocked = true', '',
      '[[registry]]', 'prefix = "example.com/team"', 'location = "mirror.example.net/team-copy"',
      '[[registry.mirror]]', 'location = "m1.example.net/t"', '[[registry.mirror]]', 'location = "m2.example.net/t"', 'pull-from-mirror = "digest-only"',
    ].join('\n'));
    const conf = loadRegistriesConf(file);
    assert.equal(findRegistry(conf, 'example.com/x')?.insecure, true);
    assert.equal(findRegistry(conf, 'example.com/secret/x')?.blocked, true);
    assert.equal(findRegistry(conf, 'example.com/secretive')?.blocked, false);
    assert.equal(findRegistry(conf, 'a.example.com/x')?.blocked, true);
    const eps = pullEndpoints(conf, parseRegistryRef('example.com/team/app:1'));
    assert.deepEqual(eps.map((e) => `${e.ref.registry}/${e.ref.repository}:${e.ref.tag}`), ['m1.example.net/t/app:1', 'mirror.example.net/team-copy/app:1']);
    const byDigest = pullEndpoints(conf, parseRegistryRef(`example.com/team/app@sha256:${'a'.repeat(64)}`));
    assert.deepEqual(byDigest.map((e) => e.ref.registry), ['m1.example.net', 'm2.example.net', 'mirror.example.net']);
    assert.throws(() => pullEndpoints(conf, parseRegistryRef('example.com/secret/x')), /blocked in .*r\.conf/);
  });

  test('short names: alias first, then each search registry; qualified names stay', () => {
    const file = join(dir, 's.conf');
    writeFileSync(file, 'unqualified-search-registries = ["one.example", "two.example:5000"]\n[aliases]\n"tool" = "three.example/tools/tool"\n');
    const conf = loadRegistriesConf(file);
    assert.deepEqual(resolveShortName(conf, 'tool:2').refs, ['three.example/tools/tool:2']);
    assert.deepEqual(resolveShortName(conf, 'app').refs, ['one.example/app', 'two.example:5000/app']);
    assert.deepEqual(resolveShortName(conf, 'ns/app@sha256:' + 'b'.repeat(64)).refs, [`one.example/ns/app@sha256:${'b'.repeat(64)}`, `two.example:5000/ns/app@sha256:${'b'.repeat(64)}`]);
    assert.deepEqual(resolveShortName(conf, 'localhost/app').refs, ['localhost/app']);
  });

  test('a broken file is one error naming the file and line', () => {
    const cases: Array<[string, RegExp]> = [
      ['[[registry]]\nlocation = "a.example"\ninsecure = maybe\n', /:3: not valid TOML/],
      ['# c\n[[registry]]\nlocation = "https://a.example"\n', /:2: location "https:\/\/a\.example": no URL scheme/],
      ['[[registry]]\nlocation = "a.example"\n\n[[registry]]\ninsecure = true\n', /:4: \[\[registry\]\] needs a location or a prefix/],
      ['[[registry]]\nlocation = "a.example"\ninsecure = "yes"\n', /:1: insecure of a\.example must be true or false/],
      ['unqualified-search-registries = "a.example"\n', /:1: unqualified-search-registries must be a list/],
      ['[registries.search]\nregistries = ["a.example"]\n', /:1: the v1 format/],
      ['[aliases]\n"x" = "y"\n', /:2: alias "x" = "y": the target must name its registry/],
    ];
    cases.forEach(([text, re], i) => {
      const file = join(dir, `broken-${i}.conf`);
      writeFileSync(file, text);
      assert.throws(() => loadRegistriesConf(file), (e: Error) => {
        assert.ok(e.message.startsWith(`${file}:`), e.message);
        assert.match(e.message, re);
        assert.ok(!e.message.includes('\n'), e.message);
        return true;
      });
    });
  });
});

describe('registries.conf against docker-registry: mirrors, blocked, short names', { skip: missing.length ? `missing ${missing.join(', ')}` : false }, () => {
  let work: string;
  let home: string;
  let origin: RunningRegistry;
  let mirror: RunningRegistry;
  let empty: RunningRegistry;
  let po: RunningProxy; // in front of the origin
  let pm: RunningProxy; // in front of the mirror
  let env: Record<string, string>;
  let stores = 0;

  const newStore = (): string => join(work, `store-${stores++}`);
  const conf = (name: string, text: string): string => {
    const f = join(work, name);
    writeFileSync(f, text);
    return f;
  };
  const images = async (store: string): Promise<Array<{ names: string[] }>> => {
    const r = await cowshedAsync(store, ['images', '--json'], env);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as Array<{ names: string[] }>;
  };
  const apiGets = (p: RunningProxy, from = 0): string[] => p.requests.slice(from).filter((r) => /\/(manifests|blobs)\//.test(r.url)).map((r) => `${r.method} ${r.url}`);

  before(async () => {
    work = tempDir('cowshed-regconf-live-');
    home = join(work, 'home');
    mkdirSync(home);
    env = { HOME: home, REGISTRY_AUTH_FILE: join(work, 'auth.json'), XDG_RUNTIME_DIR: join(work, 'run') };
    const layout = await tinyLayout(join(work, 'image'), 'mirror');
    origin = await startRegistry(join(work, 'origin'));
    empty = await startRegistry(join(work, 'empty'));
    execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:v1`, `docker://${origin.host}/tiny:v1`], { stdio: ['ignore', 'ignore', 'pipe'] });
    po = await startProxy(origin.port);
    mirror = await startRegistry(join(work, 'mirror'), {}, { proxyRemote: `http://${origin.host}` });
    pm = await startProxy(mirror.port);
  });

  after(async () => {
    await pm?.stop();
    await po?.stop();
    for (const r of [mirror, empty, origin]) await r?.stop();
    if (work) removeTree(work);
  });

  const mirrorConf = (): string => conf('mirror.conf', `[[registry]]\nlocation = "${po.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${pm.host}"\ninsecure = true\n`);

  test('pulls go through the pull-through mirror, not the origin', async () => {
    const file = mirrorConf();
    const store = newStore();
    const before = { o: po.requests.length, m: pm.requests.length };
    const r = await cowshedAsync(store, ['--registries-conf', file, 'pull', `${po.host}/tiny:v1`], env);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((await images(store))[0].names, [`${po.host}/tiny:v1`], 'named after the origin');
    assert.deepEqual(apiGets(po, before.o), [], 'the origin was not asked');
    const viaMirror = apiGets(pm, before.m);
    assert.ok(viaMirror.some((u) => u.startsWith('GET') && u.includes('/blobs/sha256:')), viaMirror.join('\n'));
    assert.ok(viaMirror.some((u) => u.includes('/tiny/manifests/v1')), viaMirror.join('\n'));
    // The mirror really is a cache: it kept the blobs it passed on.
    const cached = join(mirror.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256');
    assert.ok(existsSync(cached) && readdirSync(cached).length > 0, 'blobs cached by the mirror');
  });

  test('falls back to the origin when the mirror is down', async () => {
    const down = await startProxy(mirror.port);
    await down.stop(); // a port where nothing listens any more
    const file = conf('down.conf', `[[registry]]\nlocation = "${po.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${down.host}"\ninsecure = true\n`);
    const store = newStore();
    const from = po.requests.length;
    const r = await cowshedAsync(store, ['--registries-conf', file, 'pull', `${po.host}/tiny:v1`], env);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((await images(store))[0].names, [`${po.host}/tiny:v1`]);
    assert.ok(apiGets(po, from).some((u) => u.includes('/blobs/sha256:')), 'fetched from the origin');
  });

  test('when neither mirror nor origin has it: one line, nothing stored', async () => {
    const file = mirrorConf();
    const store = newStore();
    const r = await cowshedAsync(store, ['--registries-conf', file, 'pull', `${po.host}/nothing:v1`], env);
    assert.notEqual(r.status, 0);
    const line = oneLine(r.stderr);
    assert.match(line, new RegExp(`${po.host}/nothing:v1.*(not found|no such image)`));
    assert.deepEqual(await images(store), []);
  });

  test('a blocked registry is refused in one line naming the file; pull and push', async () => {
    const file = conf('blocked.conf', `[[registry]]\nprefix = "${po.host}"\nlocation = "${po.host}"\ninsecure = true\n\n[[registry]]\nprefix = "${po.host}/secret"\nblocked = true\n`);
    const store = newStore();
    const from = po.requests.length;
    let r = await cowshedAsync(store, ['--registries-conf', file, 'pull', `${po.host}/secret/tiny:v1`], env);
    assert.notEqual(r.status, 0);
    let line = oneLine(r.stderr);
    assert.ok(line.includes(`${po.host}/secret`) && line.includes(file) && /blocked/.test(line), line);
    assert.deepEqual(await images(store), []);
    assert.equal(po.requests.length, from, 'the blocked registry was not contacted');
    // Its neighbour is not blocked (most specific prefix wins): pull it, then try to push it into the blocked namespace.
    r = await cowshedAsync(store, ['--registries-conf', file, 'pull', `${po.host}/tiny:v1`], env);
    assert.equal(r.status, 0, r.stderr);
    r = await cowshedAsync(store, ['--registries-conf', file, 'push', `${po.host}/tiny:v1`, `${po.host}/secret/tiny:v1`], env);
    assert.notEqual(r.status, 0);
    line = oneLine(r.stderr);
    assert.match(line, /blocked in/);
  });

  test('unqualified names: unqualified-search-registries in order, then aliases', async () => {
    const file = conf('search.conf', `unqualified-search-registries = ["${empty.host}", "${po.host}"]\n\n[[registry]]\nlocation = "${empty.host}"\ninsecure = true\n\n[[registry]]\nlocation = "${po.host}"\ninsecure = true\n\n[aliases]\n"mytiny" = "${po.host}/tiny"\n`);
    let store = newStore();
    let r = await cowshedAsync(store, ['--registries-conf', file, 'pull', 'tiny:v1'], env);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((await images(store))[0].names, [`${po.host}/tiny:v1`]);
    store = newStore();
    r = await cowshedAsync(store, ['--registries-conf', file, 'pull', 'mytiny:v1'], env);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual((await images(store))[0].names, [`${po.host}/tiny:v1`]);
    store = newStore();
    r = await cowshedAsync(store, ['--registries-conf', file, 'pull', 'absent:v1'], env);
    assert.notEqual(r.status, 0);
    assert.match(oneLine(r.stderr), /absent:v1: not pulled from any of the unqualified-search-registries/);
    assert.deepEqual(await images(store), []);
  });

  test('$HOME/.config/containers/registries.conf and its drop-ins are read; a broken drop-in is named with its line', async () => {
    const dir = join(home, '.config', 'containers');
    mkdirSync(join(dir, 'registries.conf.d'), { recursive: true });
    writeFileSync(join(dir, 'registries.conf'), `[[registry]]\nlocation = "${po.host}"\ninsecure = true\n`);
    writeFileSync(join(dir, 'registries.conf.d', '10-alias.conf'), `[aliases]\n"hometiny" = "${po.host}/tiny"\n`);
    try {
      let store = newStore();
      let r = await cowshedAsync(store, ['pull', 'hometiny:v1'], env);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual((await images(store))[0].names, [`${po.host}/tiny:v1`]);
      const broken = join(dir, 'registries.conf.d', '20-broken.conf');
      writeFileSync(broken, '[aliases]\n"x" = \n');
      store = newStore();
      r = await cowshedAsync(store, ['pull', 'hometiny:v1'], env);
      assert.notEqual(r.status, 0);
      const line = oneLine(r.stderr);
      assert.ok(line.includes(`${broken}:2:`), line);
      assert.deepEqual(await images(store), []);
    } finally {
      removeTree(dir);
    }
  });
});
