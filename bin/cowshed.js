#!/usr/bin/env node
// Entry point. The CLI is TypeScript run by Node's type stripping (Node >= 24);
// the compile cache keeps stripped and compiled modules between runs, which
// roughly halves start-up for short commands.
import * as nodeModule from 'node:module';

if (Number(process.versions.node.split('.')[0]) < 24) {
  process.stderr.write(`cowshed: needs Node.js 24 or newer (this is ${process.version}); run it as "npx cowshed" in the repository, which uses the Node it pins\n`);
  process.exit(1);
}
nodeModule.enableCompileCache?.();
await import('../src/cli/main.ts');
