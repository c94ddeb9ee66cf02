// Part of `npm run build`: in the compiled dist/, a static import of a Node
// built-in (`import { x as y } from 'node:fs'`) becomes
// `const { x: y } = process.getBuiltinModule('node:fs')`.
//
// Why: an ES module import of a built-in makes Node build a module facade
// that reads every export of the built-in, and reading `fs.promises` loads
// node:fs/promises and readline with it. That costs about 7 ms for node:fs
// alone, on every start of the installed command (short commands like
// `create` are mostly start-up). getBuiltinModule returns the same object
// without the facade. Built-ins have no live bindings to lose.
//
// Only the three plain forms are rewritten (named, namespace, default); any
// other form is left as it was, which is correct, only slower. The sources
// keep ordinary imports: a checkout runs them as they are.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const IMPORT = /^import (\* as [\w$]+|\{[^}]*\}|[\w$]+) from (['"])(node:[\w/]+)\2;$/gm;

export function rewriteBuiltinImports(js: string): string {
  return js.replace(IMPORT, (whole, what: string, _q: string, id: string) => {
    const call = `process.getBuiltinModule('${id}')`;
    if (what.startsWith('* as ')) return `const ${what.slice(5)} = ${call};`;
    if (!what.startsWith('{')) return `const ${what} = ${call};`;
    const names = what.slice(1, -1).split(',').map((s) => s.trim()).filter(Boolean);
    const parts: string[] = [];
    for (const n of names) {
      const m = /^([\w$]+)(?:\s+as\s+([\w$]+))?$/.exec(n);
      if (!m) return whole; // a form this does not know (a type import tsc left, a string name): keep it
      parts.push(m[2] ? `${m[1]}: ${m[2]}` : m[1]!);
    }
    return `const { ${parts.join(', ')} } = ${call};`;
  });
}

if (import.meta.main) {
  const dir = process.argv[2] ?? 'dist';
  let changed = 0;
  for (const f of (readdirSync(dir, { recursive: true }) as string[]).filter((n) => n.endsWith('.js')).map((n) => join(dir, n))) {
    const before = readFileSync(f, 'utf8');
    const after = rewriteBuiltinImports(before);
    if (after !== before) { writeFileSync(f, after); changed++; }
  }
  process.stdout.write(`dist-builtins: rewrote the built-in imports of ${changed} modules\n`);
}
