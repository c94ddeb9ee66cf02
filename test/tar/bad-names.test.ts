// Names Linux cannot hold, in a layer (issue 11, "Bad input"): a NUL inside
// a PAX path or link target, an empty name (read as ".", as GNU tar does), a name over 255 bytes, a path
// over 4095 bytes, a PAX hdrcharset nobody defined. Each import is refused
// with one line naming the entry (bytes that are not printable ASCII as
// \xNN, so the line stays one line and exact), and the store is unchanged.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cowshed, cowshedOk, removeTree, tempDir } from '../helpers/cli.ts';
import { tarArchive, type RawEntry } from '../reliability/tar-bytes.ts';

const B = (s: string): Buffer => Buffer.from(s, 'latin1');

/** A PAX extended header body: "LEN key=value\n" records, value as bytes. */
function pax(records: Array<[string, Buffer]>): Buffer {
  return Buffer.concat(records.map(([k, v]) => {
    const rest = Buffer.concat([B(` ${k}=`), v, B('\n')]);
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len++;
    return Buffer.concat([B(String(len)), rest]);
  }));
}

const file = (name: string, body = 'x\n'): RawEntry => ({ name, type: 'file', body: B(body) });
const paxed = (records: Array<[string, Buffer]>, e: RawEntry): RawEntry[] => [{ name: 'PaxHeader', type: 'pax', body: pax(records) }, e];

const CASES: Array<{ what: string; entries: RawEntry[]; message: RegExp }> = [
  { what: 'a NUL inside a PAX path', entries: paxed([['path', B('caf\xe9\0x')]], file('placeholder')), message: /member name "caf\\xe9\\x00x" holds a NUL byte/ },
  { what: 'a NUL inside a PAX link target', entries: paxed([['linkpath', B('cible-\xff\0')]], { name: 'lien', type: 'symlink', linkname: 'x' }), message: /link target of "lien" "cible-\\xff\\x00" holds a NUL byte/ },
  // GNU tar substitutes "." for an empty name: a file there cannot be the image's root.
  { what: 'an empty name (a file)', entries: [file('')], message: /"\.": the root must be a directory/ },
  { what: 'a name over 255 bytes (GNU long name)', entries: [{ name: '././@LongLink', type: 'gnu-longname', body: B(`d/${'\xe9'.repeat(256)}\0`) }, file('placeholder')], message: new RegExp(`member name "d/${'\\\\xe9'.repeat(256)}" has a name longer than 255 bytes`) },
  { what: 'a path over 4095 bytes', entries: paxed([['path', B(Array.from({ length: 21 }, () => '\xe9'.repeat(200)).join('/'))]], file('placeholder')), message: /member name "(\\xe9){64}…" is longer than 4095 bytes/ },
  { what: 'an unknown PAX hdrcharset', entries: paxed([['hdrcharset', B('KOI8-R')], ['path', B('\xf0\xd2\xc9')]], file('placeholder')), message: /unknown PAX hdrcharset "KOI8-R"/ },
];

describe('names Linux cannot hold: refused in one line, naming the entry, the store unchanged', () => {
  let work: string;
  let store: string;
  let images: string;
  let objects: number;
  before(() => {
    work = tempDir('cowshed-bad-names-');
    store = join(work, 'store');
    writeFileSync(join(work, 'ok.tar'), tarArchive([file('ok')]));
    cowshedOk(store, 'import', `tar:${join(work, 'ok.tar')}`, 'ok:1');
    images = cowshedOk(store, 'images', '--json');
    objects = readdirSync(join(store, 'objects')).length;
  });
  after(() => { if (work) removeTree(work); });

  for (const c of CASES) {
    test(c.what, () => {
      const archive = join(work, `${c.what.replace(/\W+/g, '-')}.tar`);
      writeFileSync(archive, tarArchive(c.entries));
      const r = cowshed(store, 'import', `tar:${archive}`, 'bad:1');
      assert.notEqual(r.status, 0, 'imported');
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^cowshed: /);
      assert.match(lines[0]!, c.message);
      assert.match(lines[0]!, /^[\x20-\x7e…]*$/, 'printable: the name escaped');
      assert.equal(cowshedOk(store, 'images', '--json'), images);
      assert.equal(readdirSync(join(store, 'objects')).length, objects);
      assert.deepEqual(readdirSync(join(store, 'tmp')), []);
    });
  }
});
