// The build's rewrite of Node built-in imports in dist/ (scripts/dist-builtins.ts):
// the plain forms become process.getBuiltinModule, anything else is kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rewriteBuiltinImports } from '../../scripts/dist-builtins.ts';

test('named, aliased, namespace and default imports of built-ins become process.getBuiltinModule', () => {
  const js = [
    "import { mkdirSync, rmSync as remove } from 'node:fs';",
    'import * as nodeModule from "node:module";',
    "import assert from 'node:assert/strict';",
    "import {\n  spawnSync,\n  execFileSync,\n} from 'node:child_process';",
  ].join('\n');
  assert.equal(rewriteBuiltinImports(js), [
    "const { mkdirSync, rmSync: remove } = process.getBuiltinModule('node:fs');",
    "const nodeModule = process.getBuiltinModule('node:module');",
    "const assert = process.getBuiltinModule('node:assert/strict');",
    "const { spawnSync, execFileSync } = process.getBuiltinModule('node:child_process');",
  ].join('\n'));
});

test('other imports, and forms it does not know, are left as they are', () => {
  const keep = [
    "import { Command } from 'commander';",
    "import { x } from './x.js';",
    "import 'node:fs';",
    "import def, { y } from 'node:fs';",
    "import { type Stats } from 'node:fs';",
    "export { readFileSync } from 'node:fs';",
    "  import { a } from 'node:fs';",
    "const s = \"import { a } from 'node:fs';\";",
  ].join('\n');
  assert.equal(rewriteBuiltinImports(keep), keep);
});
