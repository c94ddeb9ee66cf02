// mount --verify of a signed image: it succeeds, then fails with one line
// naming the link after one byte of each link of the chain is changed on
// disk (signature, manifest, config, diff IDs, tar-split, an object, the
// composefs image), and succeeds again once the byte is put back.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { cli, cliOk, oneLineFailure, smallImage, writePolicy, writeRegistriesD } from './helpers.ts';

describe('mount --verify: the whole chain, a tamper test per link', () => {
  let T: string;
  let reg: RunningRegistry;
  let store: string;
  let policy: string;
  let name: string;
  let info: { id: string; composefs: string; configDigest: string; layers: Array<{ diffId: string }> };

  const verify = () => cli(store, ['mount', '--verify', '--signature-policy', policy, name]);
  function assertVerifies(): void {
    const r = verify();
    assert.equal(r.status, 0, r.stderr);
    cliOk(store, ['umount', name]);
  }
  /** Flips one byte of a file, runs fn, puts the byte back. */
  function flipped(file: string, fn: () => void, offset?: number): void {
    const orig = readFileSync(file);
    const bad = Buffer.from(orig);
    const at = offset ?? orig.length >> 1;
    bad[at] = bad[at]! ^ 0x01;
    writeFileSync(file, bad);
    try { fn(); } finally { writeFileSync(file, orig); }
  }
  function sql<T>(q: string, ...args: string[]): T[] {
    const db = new DatabaseSync(join(store, 'meta.db'));
    try { return db.prepare(q).all(...args) as T[]; } finally { db.close(); }
  }

  before(async () => {
    T = tempDir('cowshed-verify-');
    reg = await startRegistry(join(T, 'registry'));
    const src = join(T, 'src');
    smallImage(src, T, 'small:v1', 'a');
    writeFileSync(join(T, 'pw'), 'pw\n');
    cliOk(src, ['generate-sigstore-key', '--output-prefix', join(T, 'key'), '--passphrase-file', join(T, 'pw')]);
    name = `${reg.host}/signed:v1`;
    cliOk(src, ['push', '--tls-verify=false', '--sign-by-sigstore-private-key', join(T, 'key.private'), '--sign-passphrase-file', join(T, 'pw'), 'small:v1', name]);
    policy = writePolicy(join(T, 'policy.json'), { default: [{ type: 'sigstoreSigned', keyPath: join(T, 'key.pub') }] });
    const regd = writeRegistriesD(join(T, 'registries.d'), '  use-sigstore-attachments: true\n');
    store = join(T, 'store');
    cliOk(store, ['pull', '--tls-verify=false', '--signature-policy', policy, '--registries.d', regd, name]);
    info = JSON.parse(cliOk(store, ['inspect', name])) as typeof info;
  });
  after(async () => {
    await reg?.stop();
    if (T) removeTree(T);
  });

  it('verifies the untouched chain, including the signed composefs digest, in userspace', () => {
    const r = verify();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /1 signature accepted .*composefs [0-9a-f]{12} \(as signed\); this kernel has no fs-verity: every digest verified in userspace/);
    cliOk(store, ['umount', name]);
  });

  it('signature: one changed byte in the stored signature', () => {
    const [row] = sql<{ signature: string }>('SELECT signature FROM signatures');
    const orig = row!.signature;
    const bad = orig.slice(0, 20) + (orig[20] === 'A' ? 'B' : 'A') + orig.slice(21);
    const db = new DatabaseSync(join(store, 'meta.db'));
    try {
      db.prepare('UPDATE signatures SET signature = ?').run(bad);
      assert.match(oneLineFailure(verify()), /signature does not verify: the store's copy of .* is not signed by the policy's key/);
      db.prepare('UPDATE signatures SET signature = ?').run(orig);
    } finally { db.close(); }
    assertVerifies();
  });

  it('signature: none kept for the image', () => {
    const db = new DatabaseSync(join(store, 'meta.db'));
    try {
      db.exec('CREATE TABLE saved AS SELECT * FROM signatures; DELETE FROM signatures');
      assert.match(oneLineFailure(verify()), /signatures required by .* but none found \(the store kept no signature for this image/);
      db.exec('INSERT INTO signatures SELECT * FROM saved; DROP TABLE saved');
    } finally { db.close(); }
    assertVerifies();
  });

  it('manifest: one changed byte of the manifest blob', () => {
    flipped(join(store, 'blobs', 'sha256', info.id.slice(7)), () => {
      assert.match(oneLineFailure(verify()), /^cowshed: image sha256:[0-9a-f]{64}: manifest: sha256:[0-9a-f]{64} is corrupt: changed on disk/);
    });
    assertVerifies();
  });

  it('config: one changed byte of the config blob', () => {
    flipped(join(store, 'blobs', 'sha256', info.configDigest.slice(7)), () => {
      assert.match(oneLineFailure(verify()), /: config: sha256:[0-9a-f]{64} is corrupt: changed on disk/);
    });
    assertVerifies();
  });

  it('diff IDs: a layer recorded with another diff ID', () => {
    const db = new DatabaseSync(join(store, 'meta.db'));
    const orig = info.layers[0]!.diffId;
    try {
      db.prepare('UPDATE layers SET diff_id = ? WHERE image_id = ?').run(`sha256:${'0'.repeat(64)}`, info.id);
      assert.match(oneLineFailure(verify()), /: diff IDs: the config's rootfs\.diff_ids do not match/);
      db.prepare('UPDATE layers SET diff_id = ? WHERE image_id = ?').run(orig, info.id);
    } finally { db.close(); }
    assertVerifies();
  });

  it('tar-split: one changed byte of the tar-split record', () => {
    const [row] = sql<{ split_digest: string }>('SELECT split_digest FROM layers WHERE image_id = ?', info.id);
    flipped(join(store, 'blobs', 'sha256', row!.split_digest.slice(7)), () => {
      assert.match(oneLineFailure(verify()), /: tar-split record of layer 1: sha256:[0-9a-f]{64} is corrupt: changed on disk/);
    });
    assertVerifies();
  });

  it('objects: one changed byte of a file object', () => {
    const [row] = sql<{ digest: string }>('SELECT o.digest FROM image_objects io JOIN objects o ON o.digest = io.digest WHERE io.image_id = ? ORDER BY o.size DESC LIMIT 1', info.id);
    const hex = row!.digest;
    flipped(join(store, 'objects', hex.slice(0, 2), hex.slice(2)), () => {
      assert.match(oneLineFailure(verify()), new RegExp(`: objects: object ${hex} is corrupt: changed on disk`));
    });
    assertVerifies();
  });

  it('composefs image: one changed byte of the EROFS image (run --verify refuses it too)', () => {
    flipped(join(store, 'images', info.composefs), () => {
      assert.match(oneLineFailure(verify()), /: composefs image: [0-9a-f]{64} is corrupt: changed on disk/);
      assert.match(oneLineFailure(cli(store, ['run', '--verify', '--signature-policy', policy, '--rm', name, '--', '/bin/true'])), /: composefs image: .* is corrupt: changed on disk/);
    }, 1500);
    assertVerifies();
  });
});
