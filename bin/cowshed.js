#!/usr/bin/env node
// Entry point. The CLI is TypeScript run by Node's type stripping (Node >= 24);
// the compile cache keeps stripped and compiled modules between runs, which
// roughly halves start-up for short commands.
import { enableCompileCache } from 'node:module';

enableCompileCache?.();
await import('../src/cli/main.ts');
