#!/usr/bin/env bash
# Builds the ten-version series of a rebuilt Debian image once and caches it:
#   $CACHE/debian-series-oci   OCI image layout, tags v1..v10; each version is
#                              ONE full layer (a rebuilt image, not a stack).
#                              v1 is the Debian fixture's v1 tree without apt's
#                              lists and .debs; each next
#                              version edits about 2% of the regular files by
#                              a few bytes, adds 3 files and removes 2
#                              (scripts/series-mutate.ts, seeded).
# CACHE is $COWSHED_FIXTURES, default /var/cache/cowshed-fixtures; SEED is
# $COWSHED_SERIES_SEED, default 1. Deterministic given the seed and the
# Debian fixture (which differs per machine: derive digests, never hard-code
# them). Idempotent (stamp file), concurrent runs wait on a lock. Prints the
# layout path on stdout.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${COWSHED_FIXTURES:-/var/cache/cowshed-fixtures}
SEED=${COWSHED_SERIES_SEED:-1}
VERSIONS=10
LAYOUT=$CACHE/debian-series-oci
STAMP=$CACHE/debian-series-oci.stamp
# Bump when the recipe changes so cached series are rebuilt.
RECIPE="2 seed=$SEED"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -d "$LAYOUT" ]; then
  echo "$LAYOUT"
  exit 0
fi

# The Debian fixture first (it takes its own lock).
DEBIAN=$(bash "$HERE/build-debian-image.sh" | tail -n1)

if [ "$(id -u)" != 0 ]; then
  echo "build-debian-series: needs root (owners and modes of the tree)" >&2
  exit 1
fi
command -v umoci >/dev/null || { echo "build-debian-series: umoci not installed (run scripts/setup.sh)" >&2; exit 1; }
NODE=$(command -v node)
[ -x "$HERE/../node_modules/.bin/node" ] && NODE=$HERE/../node_modules/.bin/node

exec 8>"$CACHE/.series.lock"
flock 8
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -d "$LAYOUT" ]; then
  echo "$LAYOUT"
  exit 0
fi

for stale in "$CACHE"/.series.*; do
  [ -d "$stale" ] || continue
  rm -rf --one-file-system "$stale"
done
WORK=$(mktemp -d "$CACHE/.series.XXXXXX")
trap 'rm -rf --one-file-system "$WORK"' EXIT
trap 'exit 130' INT TERM HUP

L=$WORK/layout
umoci init --layout "$L"
umoci unpack --image "$DEBIAN:v1" "$WORK/base" >/dev/null
TREE=$WORK/base/rootfs
# As published Debian images are: no package lists, no downloaded .debs (85 of
# the fixture's 206 MB, which every version would otherwise repack and every
# delta test re-hash).
rm -rf --one-file-system "$TREE"/var/lib/apt/lists/* "$TREE"/var/cache/apt/archives/*.deb
for v in $(seq 1 "$VERSIONS"); do
  if [ "$v" -gt 1 ]; then
    "$NODE" "$HERE/series-mutate.ts" "$TREE" "$v" --seed "$SEED"
  fi
  # A fresh one-layer image per version: the whole tree is its only layer.
  umoci new --image "$L:v$v"
  umoci config --image "$L:v$v" --no-history \
    --created "2024-01-$(printf %02d "$v")T00:00:00Z" \
    --config.cmd /bin/bash \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  umoci unpack --image "$L:v$v" "$WORK/b$v" >/dev/null
  cp -a "$TREE/." "$WORK/b$v/rootfs/"
  umoci repack --image "$L:v$v" --history.created "2024-01-$(printf %02d "$v")T00:00:00Z" \
    --history.created_by "series v$v (seed $SEED)" "$WORK/b$v"
  rm -rf --one-file-system "$WORK/b$v"
  echo "build-debian-series: v$v packed" >&2
done
umoci gc --layout "$L"
chmod -R a+rX "$L"

rm -rf "$LAYOUT"
mv "$L" "$LAYOUT"
echo "$RECIPE" >"$STAMP"
echo "build-debian-series: done" >&2
echo "$LAYOUT"
