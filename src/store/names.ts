// Image names: `repo[:tag]` as podman and skopeo write them; a missing tag
// means `latest`. Images can also be named by their id (manifest digest) or a
// unique prefix of its hex.
import { fail } from '../util/errors.ts';

const NAME_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Normalise `repo[:tag]` to `repo:tag`, refusing what a registry would refuse. */
export function normalizeName(input: string): string {
  let repo = input;
  let tag = 'latest';
  const slash = input.lastIndexOf('/');
  const colon = input.lastIndexOf(':');
  if (colon > slash) {
    repo = input.slice(0, colon);
    tag = input.slice(colon + 1);
  }
  if (!NAME_RE.test(repo)) fail('EINVAL', `invalid image name ${JSON.stringify(input)}: use lowercase letters, digits, and . _ - / separators`);
  if (!TAG_RE.test(tag)) fail('EINVAL', `invalid tag ${JSON.stringify(tag)} in ${JSON.stringify(input)}`);
  return `${repo}:${tag}`;
}

/** The name given to an import without one: the source directory or file's base name. */
export function defaultNameFor(sourcePath: string, tag?: string): string {
  const base = sourcePath.replace(/\/+$/, '').split('/').pop() ?? 'image';
  const repo = base.toLowerCase().replace(/\.(tar|tgz|tar\.gz|tar\.zst|oci)$/, '').replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '') || 'image';
  return normalizeName(`${repo}:${tag && TAG_RE.test(tag) ? tag : 'latest'}`);
}
