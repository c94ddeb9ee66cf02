// The executable entry of the cowshed command: bin/cowshed (the installed
// command) runs it with the Node.js 24 the package depends on, bin/cowshed.js
// in a checkout. It turns on Node's compile cache before any other module is
// loaded (later runs reuse the compiled code of every module: start-up is
// what a short command like `create` mostly costs) and answers --version
// without loading the command line at all.
import * as nodeModule from 'node:module';
import { readFileSync } from 'node:fs';

if (Number(process.versions.node.split('.')[0]) < 24) {
  process.stderr.write(`cowshed: needs Node.js 24 or newer (this is ${process.version}); use the cowshed command the npm package installs, which runs the Node it depends on\n`);
  process.exit(1);
}
nodeModule.enableCompileCache?.();

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
  // src/cli/entry.ts and dist/cli/entry.js are both two levels below package.json.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  process.stdout.write(`cowshed version ${pkg.version}\n`);
} else {
  await import('./main.ts');
}
