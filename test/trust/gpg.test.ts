// GPG simple signing both ways with skopeo 1.9 (Debian's: its sigstore
// code is patched out, GPG works end to end): skopeo signs, cowshed
// verifies under signedBy; cowshed signs, skopeo's policy accepts; a wrong
// key is refused by both. Each key lives in a temporary GNUPGHOME.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { removeTree, tempDir } from '../helpers/cli.ts';
import { startRegistry, type RunningRegistry } from '../registry/servers.ts';
import { cli, cliOk, makeGpgKey, oneLineFailure, smallImage, writePolicy, writeRegistriesD, type GpgKey } from './helpers.ts';

describe('GPG simple signing with skopeo', () => {
  let T: string;
  let reg: RunningRegistry;
  let src: string;
  let good: GpgKey;
  let bad: GpgKey;
  let regd: string;
  let lookaside: string;
  let goodPolicy: string;
  let badPolicy: string;

  const skopeo = (args: string[], env: Record<string, string> = {}) => spawnSync('skopeo', args, { encoding: 'utf8', env: { ...process.env, ...env } });

  before(async () => {
    T = tempDir('cowshed-gpg-');
    reg = await startRegistry(join(T, 'registry'));
    src = join(T, 'src-store');
    smallImage(src, T, 'small:v1', 'a');
    smallImage(src, T, 'small:v2', 'b');
    good = makeGpgKey(T, 'good');
    bad = makeGpgKey(T, 'bad');
    lookaside = join(T, 'lookaside');
    // The older names (sigstore, sigstore-staging) are what skopeo 1.9 reads for sure; cowshed reads both.
    regd = writeRegistriesD(join(T, 'registries.d'), `  sigstore: file://${lookaside}\n  sigstore-staging: file://${lookaside}\n`);
    goodPolicy = writePolicy(join(T, 'good.json'), { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: good.publicKeyring }] });
    badPolicy = writePolicy(join(T, 'bad.json'), { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: bad.publicKeyring }] });
    cliOk(src, ['push', '--tls-verify=false', 'small:v1', `${reg.host}/plain:v1`]);
  });
  after(async () => {
    await reg?.stop();
    if (T) removeTree(T);
  });

  it('skopeo copy --sign-by, then cowshed pull under signedBy accepts it; a wrong key is refused', () => {
    const r = skopeo(['--registries.d', regd, 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--sign-by', good.fingerprint,
      `docker://${reg.host}/plain:v1`, `docker://${reg.host}/skopeo-signed:v1`], { GNUPGHOME: good.home });
    assert.equal(r.status, 0, r.stderr);
    const dirs = readdirSync(lookaside, { recursive: true }) as string[];
    assert.ok(dirs.some((d) => /^skopeo-signed@sha256=[0-9a-f]{64}\/signature-1$/.test(d)), `lookaside holds ${dirs.join(', ')}`);
    const store = join(T, 'pull-good');
    const ok = cli(store, ['pull', '--tls-verify=false', '--signature-policy', goodPolicy, '--registries.d', regd, `${reg.host}/skopeo-signed:v1`]);
    assert.equal(ok.status, 0, ok.stderr);
    const info = JSON.parse(cliOk(store, ['inspect', `${reg.host}/skopeo-signed:v1`])) as { signatures: Array<{ kind: string; key: string }> };
    assert.equal(info.signatures[0]!.kind, 'gpg');
    assert.equal(info.signatures[0]!.key, good.fingerprint);
    const refused = join(T, 'pull-bad');
    const line = oneLineFailure(cli(refused, ['pull', '--tls-verify=false', '--signature-policy', badPolicy, '--registries.d', regd, `${reg.host}/skopeo-signed:v1`]));
    assert.match(line, /does not verify: .*signature-1: signed by a key the policy does not trust/);
    assert.equal(existsSync(join(refused, 'meta.db')) ? (JSON.parse(cliOk(refused, ['images', '--json'])) as unknown[]).length : 0, 0);
  });

  it('cowshed push --sign-by, then skopeo --policy accepts it; a wrong key is refused by skopeo', () => {
    const pushed = cli(src, ['push', '--tls-verify=false', '--registries.d', regd, '--sign-by', good.fingerprint, 'small:v2', `${reg.host}/cowshed-signed:v1`], { GNUPGHOME: good.home });
    assert.equal(pushed.status, 0, pushed.stderr);
    const accepted = skopeo(['--policy', goodPolicy, '--registries.d', regd, 'copy', '--src-tls-verify=false', `docker://${reg.host}/cowshed-signed:v1`, `dir:${join(T, 'out-good')}`]);
    assert.equal(accepted.status, 0, accepted.stderr);
    const refused = skopeo(['--policy', badPolicy, '--registries.d', regd, 'copy', '--src-tls-verify=false', `docker://${reg.host}/cowshed-signed:v1`, `dir:${join(T, 'out-bad')}`]);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /not trusted|no public key|signature/i);
    // And cowshed reads its own signature back under the same policy.
    assert.equal(cli(join(T, 'pull-own'), ['pull', '--tls-verify=false', '--signature-policy', goodPolicy, '--registries.d', regd, `${reg.host}/cowshed-signed:v1`]).status, 0);
  });

  it('an image with no signature in the lookaside is refused under signedBy', () => {
    const line = oneLineFailure(cli(join(T, 'pull-none'), ['pull', '--tls-verify=false', '--signature-policy', goodPolicy, '--registries.d', regd, `${reg.host}/plain:v1`]));
    assert.match(line, /signatures required by .*good\.json:\d+ .* but none found \(no signature in the lookaside of registries\.d\)/);
  });
});
