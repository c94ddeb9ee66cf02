#!/usr/bin/env node
// The command in a checkout, for tests, benchmarks and scripts: run by the
// Node 24 of node_modules (`npm ci` installs it). It runs the TypeScript
// sources through src/cli/entry.ts (compile cache, --version, then the CLI).
// The installed command is bin/cowshed.
if (Number(process.versions.node.split('.')[0]) < 24) {
  process.stderr.write(`cowshed: needs Node.js 24 or newer (this is ${process.version}); run bin/cowshed, which uses the Node the package depends on\n`);
  process.exit(1);
}
await import('../src/cli/entry.ts');
