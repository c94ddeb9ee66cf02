// cowshed as users get it: `npm pack`, then `npm install -g` into a temporary
// prefix and `npm install` into a temporary project. The installed command
// must start with the system Node (20 on Debian 12) first on PATH, using the
// Node 24 the package depends on; a project imports the library from
// 'cowshed', runs the README's library example and type-checks it with
// `module: nodenext`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, debianFixture, removeTree, tempDir } from '../helpers/cli.ts';

const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { name: string; version: string };
/** Only system directories: the system's node (if any) is the `node` a user's shell finds. */
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const NPM = ['--no-audit', '--no-fund', '--prefer-offline'];

let work: string;
let tarball: string;
let prefix: string;
let project: string;
let layout: string;

interface Run { status: number; stdout: string; stderr: string; how: string }
function run(cmd: string, args: string[], opts: { cwd?: string; path?: string } = {}): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: opts.path ?? SYSTEM_PATH };
  delete env.COWSHED_NODE;
  delete env.NODE_OPTIONS;
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, how: r.error ? r.error.message : r.signal ? `killed by ${r.signal}` : `exit ${r.status}` };
}
function ok(cmd: string, args: string[], opts: { cwd?: string; path?: string } = {}): string {
  const r = run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.how}: ${r.stderr}`);
  return r.stdout;
}
/** npm with the test runner's PATH (npm itself may need a newer node than the system's). */
const npm = (args: string[], cwd: string): string => ok('npm', args, { cwd, path: process.env.PATH });

const systemNode = (): string | undefined => {
  const r = run('sh', ['-c', 'command -v node && node --version']);
  return r.status === 0 ? r.stdout.trim().replace('\n', ' ') : undefined;
};

before(() => {
  work = tempDir('cowshed-package-');
  layout = debianFixture().layout;
  // prepack builds dist/ (tsc) first.
  const out = npm(['pack', '--json', '--pack-destination', work], REPO);
  const packed = JSON.parse(out.slice(out.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
  tarball = join(work, packed[0]!.filename);
  const files = packed[0]!.files.map((f) => f.path);
  // Only what a user needs: the launcher, compiled JavaScript and types; no sources, tests or benchmarks.
  assert.ok(files.includes('bin/cowshed') && files.includes('dist/index.js') && files.includes('dist/index.d.ts') && files.includes('dist/cli/entry.js'), files.join(' '));
  assert.deepEqual(files.filter((f) => !/^(bin\/cowshed|dist\/.*\.(js|d\.ts)|package\.json|README\.md|LICENSE)$/.test(f)), []);

  prefix = join(work, 'prefix');
  npm(['install', '-g', '--prefix', prefix, ...NPM, tarball], work);
  project = join(work, 'project');
  execFileSync('mkdir', ['-p', project]);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  npm(['install', ...NPM, tarball], project);
});

after(() => {
  if (work) removeTree(work);
});

test('the installed command starts with the system Node first on PATH and runs the Node 24 it depends on', () => {
  const cmd = join(prefix, 'bin', 'cowshed');
  const path = `${join(prefix, 'bin')}:${SYSTEM_PATH}`;
  console.log(`# system node: ${systemNode() ?? 'none'}`);
  assert.equal(ok('cowshed', ['--version'], { path }), `cowshed version ${PKG.version}\n`);
  // The Node it runs is the package's own dependency (nested in a global install), not the system's.
  const node = join(prefix, 'lib', 'node_modules', 'cowshed', 'node_modules', 'node', 'bin', 'node');
  assert.ok(existsSync(node), `${node} (the "node" dependency) is missing`);
  assert.match(ok(node, ['--version']), /^v2[4-9]\./);
  assert.equal(realpathSync(cmd), join(prefix, 'lib', 'node_modules', 'cowshed', 'bin', 'cowshed'));
  // The build took Node's built-ins with process.getBuiltinModule (scripts/dist-builtins.ts): no module imports one.
  const dist = join(prefix, 'lib', 'node_modules', 'cowshed', 'dist');
  const imported = (readdirSync(dist, { recursive: true }) as string[]).filter((f) => f.endsWith('.js'))
    .filter((f) => /^import [^;]* from ['"]node:/m.test(readFileSync(join(dist, f), 'utf8')));
  assert.deepEqual(imported, []);

  const store = join(work, 'store-global');
  ok('cowshed', ['--store', store, 'import', `oci:${layout}:v1`, 'debian:v1'], { path });
  const id = ok('cowshed', ['--store', store, 'create', '--name', 'c1', 'debian:v1'], { path }).trim();
  assert.match(id, /^[0-9a-f]{64}$/);
  assert.match(ok('cowshed', ['--store', store, 'ps', '-a'], { path }), new RegExp(`^${id.slice(0, 12)} +debian:v1 .* c1$`, 'm'));
  // A container's root is really mounted: the image's files are there.
  const root = ok('cowshed', ['--store', store, 'mount', 'c1'], { path }).trim().split('\n').pop()!;
  assert.match(readFileSync(join(root, 'etc', 'os-release'), 'utf8'), /Debian GNU\/Linux 12/);
  ok('cowshed', ['--store', store, 'rm', '-f', 'c1'], { path });
  // Errors and exit codes are the CLI's, not a crash of an older Node.
  const bad = run('cowshed', ['--store', store, 'create', 'no-such:image'], { path });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^cowshed: [^\n]*no-such:image[^\n]*\n$/);
});

test('a project that installed the package runs its cowshed and imports the library with Node 24', () => {
  // The "node" dependency is hoisted beside cowshed in a project.
  const node = join(project, 'node_modules', 'node', 'bin', 'node');
  assert.ok(existsSync(node), `hoisted node missing: ${readdirSync(join(project, 'node_modules')).join(' ')}`);
  assert.equal(ok(join(project, 'node_modules', '.bin', 'cowshed'), ['--version']), `cowshed version ${PKG.version}\n`);
  writeFileSync(join(project, 'lib.mjs'), [
    "import { Store, CowshedError, isCowshedError, df } from 'cowshed';",
    'const store = await Store.open(process.argv[2]);',
    "try { await store.importImage('oci:/nonexistent:v1', 'x:1'); } catch (e) { console.log(isCowshedError(e), e instanceof CowshedError, e.code); }",
    'console.log(df(store).images.length);',
    'store.close();',
  ].join('\n'));
  const out = ok(node, ['lib.mjs', join(work, 'store-lib')], { cwd: project });
  assert.equal(out, 'true true ENOENT\n0\n');
});

/** The README's library example, with a test store and the Debian fixture for its two example paths. */
function readmeExample(store: string): string {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## As a library'));
  const code = section.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(code, 'README has a ```ts block under "As a library"');
  assert.ok(code.includes("'/var/lib/cowshed'") && code.includes("'oci:/srv/images/app:1.4'"), 'the example paths this test replaces');
  return code.replace("'/var/lib/cowshed'", JSON.stringify(store)).replace("'oci:/srv/images/app:1.4'", JSON.stringify(`oci:${layout}:v1`));
}

test('the README library example runs from the project and type-checks with module: nodenext', () => {
  const store = join(work, 'store-readme');
  writeFileSync(join(project, 'example.ts'), readmeExample(store));
  const node = join(project, 'node_modules', 'node', 'bin', 'node');
  const out = ok(node, ['example.ts'], { cwd: project });
  assert.match(out, /\[ \{ kind: 'A', path: '\/result\.txt' \} \]/);
  const images = ok(join(project, 'node_modules', '.bin', 'cowshed'), ['--store', store, 'images'], { cwd: project });
  assert.match(images, /^app +1\.4-job1 /m);

  // Type-check the example and a file that must NOT type-check (proves the types are real, not any).
  writeFileSync(join(project, 'wrong.ts'), [
    "import { Store, createContainer } from 'cowshed';",
    "const c = await createContainer(await Store.open('/x'), 'i');",
    '// @ts-expect-error: an id is a string',
    'const n: number = c.id;',
    "// @ts-expect-error: there is no such export",
    "import { noSuchExport } from 'cowshed';",
    'console.log(n, noSuchExport);',
  ].join('\n'));
  writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      module: 'nodenext', moduleResolution: 'nodenext', target: 'es2024', strict: true, noEmit: true,
      allowImportingTsExtensions: true, types: ['node'], typeRoots: [join(REPO, 'node_modules', '@types')],
    },
    files: ['example.ts', 'wrong.ts'],
  }));
  const tsc = run(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project });
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
  // And it does fail on a type error in a consumer.
  writeFileSync(join(project, 'wrong.ts'), "import { Store } from 'cowshed';\nconst s: string = await Store.open('/x');\nconsole.log(s);\n");
  const bad = run(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stdout, /wrong\.ts.*error TS2322/);
});
