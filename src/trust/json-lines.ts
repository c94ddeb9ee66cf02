// A strict JSON reader that remembers where things are: containers-policy.json
// errors name the file and line, and duplicated keys are refused (as
// containers/image refuses them). Values are plain JSON values; `lineOf`
// gives the line of an object's key or of an array's element.

import { CowshedError } from '../util/errors.ts';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface Located {
  value: Json;
  /** Line (1-based) where `holder[key]` was written; the holder's own line for key undefined. */
  lineOf(holder: object, key?: string | number): number;
}

const MAX_DEPTH = 64;

export function parseJsonLocated(text: string, file: string): Located {
  const lines = new WeakMap<object, Map<string | number, number>>();
  let i = 0;
  let line = 1;
  const bad = (why: string): never => { throw new CowshedError('EFORMAT', `${file}:${line}: invalid JSON: ${why}`); };
  const ws = (): void => {
    for (; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10) line++;
      else if (c !== 32 && c !== 9 && c !== 13) return;
    }
  };
  const str = (): string => {
    if (text[i] !== '"') bad(`expected a string at column ${col()}`);
    const start = i;
    i++;
    for (; i < text.length; i++) {
      const c = text[i];
      if (c === '\\') { i++; continue; }
      if (c === '"') break;
      if (c === '\n' || c.charCodeAt(0) < 0x20) bad('control character in a string');
    }
    if (i >= text.length) bad('unterminated string');
    i++;
    try { return JSON.parse(text.slice(start, i)) as string; } catch { return bad('bad escape in a string'); }
  };
  const col = (): number => i - text.lastIndexOf('\n', i - 1);
  const value = (depth: number): Json => {
    if (depth > MAX_DEPTH) bad('nested too deeply');
    ws();
    const c = text[i];
    if (c === '{') {
      const o: { [k: string]: Json } = Object.create(null) as { [k: string]: Json };
      const where = new Map<string | number, number>([['', line]]);
      lines.set(o, where);
      i++;
      ws();
      if (text[i] === '}') { i++; return o; }
      for (;;) {
        ws();
        const keyLine = line;
        const k = str();
        if (Object.hasOwn(o, k)) bad(`duplicate key ${JSON.stringify(k)}`);
        ws();
        if (text[i] !== ':') bad(`expected ':' after ${JSON.stringify(k)}`);
        i++;
        o[k] = value(depth + 1);
        where.set(k, keyLine);
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return o; }
        bad(`expected ',' or '}' at column ${col()}`);
      }
    }
    if (c === '[') {
      const a: Json[] = [];
      const where = new Map<string | number, number>([['', line]]);
      lines.set(a, where);
      i++;
      ws();
      if (text[i] === ']') { i++; return a; }
      for (;;) {
        ws();
        where.set(a.length, line);
        a.push(value(depth + 1));
        ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return a; }
        bad(`expected ',' or ']' at column ${col()}`);
      }
    }
    if (c === '"') return str();
    const m = /^(?:true|false|null|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)/.exec(text.slice(i, i + 400));
    if (!m) return bad(i >= text.length ? 'unexpected end of file' : `unexpected ${JSON.stringify(text[i])} at column ${col()}`);
    i += m[0].length;
    return JSON.parse(m[0]) as Json;
  };
  const v = value(0);
  ws();
  if (i < text.length) bad(`unexpected ${JSON.stringify(text[i])} after the end of the document`);
  return {
    value: v,
    lineOf(holder, key) {
      const m = lines.get(holder);
      return m?.get(key ?? '') ?? m?.get('') ?? 1;
    },
  };
}

export const isObject = (v: Json | undefined): v is { [k: string]: Json } => typeof v === 'object' && v !== null && !Array.isArray(v);
