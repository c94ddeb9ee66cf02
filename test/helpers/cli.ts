// Running the real CLI (as users and outside tests do) against a test store,
// and cleaning up what a test store mounted.
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, existsSync, symlinkSync, readlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = join(REPO, 'bin', 'cowshed.js');

export interface CliResult { status: number; stdout: string; stderr: string }

export function cowshed(store: string, ...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [MAIN, '--store', store, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Like cowshed() but fails the test with the CLI's stderr when the command fails. */
export function cowshedOk(store: string, ...args: string[]): string {
  const r = cowshed(store, ...args);
  if (r.status !== 0) throw new Error(`cowshed ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

export function tempDir(prefix = 'cowshed-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Unmount everything mounted below dir (deepest first), then remove it. */
export function removeTree(dir: string): void {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4]).filter((m): m is string => !!m && (m === dir || m.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try { execFileSync('umount', [m], { stdio: 'ignore' }); } catch { execFileSync('umount', ['-l', m], { stdio: 'ignore' }); }
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * The fixture cache: $COWSHED_FIXTURES, default /var/cache/cowshed-fixtures.
 * What is built there (debootstrap from the live mirror) differs on every
 * machine and every rebuild: read digests, sizes and dates out of it, never
 * write them into a test.
 */
export function fixturesDir(): string {
  return process.env.COWSHED_FIXTURES || '/var/cache/cowshed-fixtures';
}

/** The Debian fixture (built once, cached in fixturesDir()). */
export function debianFixture(): { layout: string; rootfsTar: string } {
  const out = execFileSync('bash', [join(REPO, 'scripts', 'build-debian-image.sh')], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, COWSHED_FIXTURES: fixturesDir() },
  });
  const layout = out.trim().split('\n').pop()!;
  return { layout, rootfsTar: join(dirname(layout), 'debian-rootfs.tar') };
}

/** A blob of an OCI layout by digest (`sha256:…`). */
export function layoutBlob(layout: string, digest: string): Buffer {
  return readFileSync(join(layout, 'blobs', ...digest.split(':')));
}

export interface LayoutManifest {
  digest: string;
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number; mediaType: string }>;
}

/** The manifest a tag of an OCI layout names (via index.json), with its digest. */
export function layoutManifest(layout: string, tag: string): LayoutManifest {
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as
    { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!desc) throw new Error(`${layout} has no tag ${tag}`);
  return { digest: desc.digest, ...JSON.parse(layoutBlob(layout, desc.digest).toString('utf8')) as Omit<LayoutManifest, 'digest'> };
}

/**
 * Shared data beside the repository (`../shared/…`: test vectors, corpora).
 * CI puts shared/ beside its clone; where it is absent, `skip` says why and
 * tests using it skip.
 */
export function sharedPath(...parts: string[]): { path: string; skip: string | false } {
  const path = join(REPO, '..', 'shared', ...parts);
  return { path, skip: existsSync(path) ? false : `${path} is absent (shared data is kept beside the repository, not in it)` };
}

/** Last line of a command's stdout (mount prints the path last). */
export const lastLine = (s: string): string => s.trim().split('\n').pop()!;

/**
 * An `oci:` reference podman can pull. podman names an image pulled from an
 * OCI layout after the layout's path, and a reference must be lowercase, so a
 * layout under a path such as mktemp's `/tmp/tmp.AbC123` is refused. Point a
 * lowercase symlink (named by a hash of the path, so repeated calls share it)
 * at such a layout.
 */
export function podmanOciRef(layout: string, tag: string): string {
  if (/^[a-z0-9/._-]+$/.test(layout)) return `oci:${layout}:${tag}`;
  const link = join(tmpdir(), `cowshed-oci-${createHash('sha256').update(layout).digest('hex').slice(0, 16)}`);
  let current: string | undefined;
  try { current = readlinkSync(link); } catch { /* absent */ }
  if (current !== layout) {
    rmSync(link, { force: true });
    symlinkSync(layout, link);
  }
  return `oci:${link}:${tag}`;
}
