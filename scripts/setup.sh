#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need, once:
# npm packages (Node 24 among them) and the Debian tools used as judges.
# Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x node_modules/.bin/node ] || [ package.json -nt node_modules/.package-lock.json ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
fi

# command name -> Debian package
declare -A tools=(
  [umoci]=umoci [skopeo]=skopeo [fsck.erofs]=erofs-utils [fsverity]=fsverity
  [getfattr]=attr [debootstrap]=debootstrap [podman]=podman [runc]=runc
  [mkfs.btrfs]=btrfs-progs [mkfs.xfs]=xfsprogs [zstd]=zstd [setcap]=libcap2-bin
  [docker-registry]=docker-registry [htpasswd]=apache2-utils [xz]=xz-utils [bzip2]=bzip2 [zfs-fuse]=zfs-fuse [zsh]=zsh
  [gpg]=gpg [openssl]=openssl [python3]=python3 [ostree]=ostree [rsync]=rsync
)
missing=()
for t in "${!tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing+=("${tools[$t]}")
done
# The trust tests decrypt sigstore keys with an independent implementation (hashlib.scrypt + PyNaCl).
/usr/bin/python3 -c 'import nacl.secret' >/dev/null 2>&1 || missing+=(python3-nacl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
