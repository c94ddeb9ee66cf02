// run's mount flags as podman spells them: what each form means, and the
// one-line errors for what it does not accept.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { parseMountFlag, parseTmpfsFlag, parseVolumeFlag, resolveInContainer, checkDuplicates } from '../../src/volumes/mounts.ts';
import { isCowshedError } from '../../src/util/errors.ts';
import { tempDir, removeTree } from '../helpers/cli.ts';

const throwsCode = (fn: () => unknown, code: string, msg: RegExp): void => {
  assert.throws(fn, (e: unknown) => isCowshedError(e) && e.code === code && msg.test(e.message));
};

describe('mount flags', () => {
  let dir: string;
  before(() => {
    dir = tempDir();
    mkdirSync(join(dir, 'real'));
    symlinkSync(join(dir, 'real'), join(dir, 'link'));
  });
  after(() => removeTree(dir));

  test('-v: host paths are binds resolved once, names are volumes, a lone path an anonymous volume', () => {
    assert.deepEqual(parseVolumeFlag(`${join(dir, 'link')}:/data:ro,z`), { type: 'bind', source: join(dir, 'real'), destination: '/data', readonly: true, options: [], copy: true });
    assert.deepEqual(parseVolumeFlag('cache:/var/cache/'), { type: 'volume', source: 'cache', destination: '/var/cache', readonly: false, options: [], copy: true });
    assert.deepEqual(parseVolumeFlag('cache:/c:nocopy,nosuid,rshared'), { type: 'volume', source: 'cache', destination: '/c', readonly: false, options: ['nosuid', 'rshared'], copy: false });
    assert.deepEqual(parseVolumeFlag('/anon'), { type: 'volume', destination: '/anon', readonly: false, options: [], copy: true });
    assert.deepEqual(parseVolumeFlag('/anon:ro'), { type: 'volume', destination: '/anon', readonly: true, options: [], copy: true });
    throwsCode(() => parseVolumeFlag('cache:relative'), 'EINVAL', /must be an absolute path/);
    throwsCode(() => parseVolumeFlag('cache:/'), 'EINVAL', /cannot mount over the container's root/);
    throwsCode(() => parseVolumeFlag('../x:/d'), 'ENOENT', /does not exist/);
    throwsCode(() => parseVolumeFlag('bad/name:/d'), 'EINVAL', /invalid volume name/);
    throwsCode(() => parseVolumeFlag('v:/d:bogus'), 'EINVAL', /unknown option "bogus"/);
    throwsCode(() => parseVolumeFlag('v:/d:U'), 'EUNSUPPORTED', /not supported/);
  });

  test('--mount: podman keys', () => {
    assert.deepEqual(parseMountFlag(`type=bind,source=${join(dir, 'link')},target=/b,readonly`), { type: 'bind', source: join(dir, 'real'), destination: '/b', readonly: true, options: [], copy: true });
    assert.deepEqual(parseMountFlag('type=volume,src=v,dst=/v,ro=false'), { type: 'volume', source: 'v', destination: '/v', readonly: false, options: [], copy: true });
    assert.deepEqual(parseMountFlag('type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1777'), { type: 'tmpfs', destination: '/t', readonly: false, options: ['size=64m', 'mode=1777'], copy: true });
    throwsCode(() => parseMountFlag('type=nfs,dst=/x'), 'EINVAL', /type must be bind, volume or tmpfs/);
    throwsCode(() => parseMountFlag('type=bind,dst=/x'), 'EINVAL', /src= is required/);
    throwsCode(() => parseMountFlag('src=v,dst=/x'), 'EINVAL', /type=.* is required/);
    throwsCode(() => parseMountFlag('type=volume,src=v,dst=/x,tmpfs-size=1m'), 'EINVAL', /for type=tmpfs/);
    throwsCode(() => parseMountFlag('type=tmpfs,dst=/x,tmpfs-mode=999'), 'EINVAL', /octal/);
  });

  test('--tmpfs and duplicates', () => {
    assert.deepEqual(parseTmpfsFlag('/run:size=1m,mode=755,noexec'), { type: 'tmpfs', destination: '/run', readonly: false, options: ['size=1m', 'mode=755', 'noexec'], copy: true });
    throwsCode(() => parseTmpfsFlag('/run:size=1m,uid=x'), 'EINVAL', /unknown option "uid=x"/);
    throwsCode(() => checkDuplicates([parseTmpfsFlag('/x'), parseVolumeFlag('v:/x/')]), 'EINVAL', /\/x: more than one mount/);
  });

  test('destinations resolve inside the root: absolute and .. symlinks stay in it', () => {
    const root = join(dir, 'root');
    mkdirSync(join(root, 'etc'), { recursive: true });
    symlinkSync('/etc', join(root, 'abs'));
    symlinkSync('../../../../etc/../..', join(root, 'up'));
    symlinkSync(dir, join(root, 'host'));
    assert.deepEqual(resolveInContainer(root, '/abs/x'), { path: '/etc/x', host: join(root, 'etc/x'), exists: false });
    assert.deepEqual(resolveInContainer(root, '/up/etc'), { path: '/etc', host: join(root, 'etc'), exists: true });
    assert.deepEqual(resolveInContainer(root, '/host/real'), { path: `${dir}/real`, host: join(root, dir, 'real'), exists: false });
  });
});
