#!/usr/bin/env bash
# Builds the real Debian test image once and caches it outside the repo:
#   $CACHE/debian-oci          OCI image layout, tags v1 (debootstrap minbase
#                              bookworm, one gzip layer, Cmd /bin/bash) and v2
#                              (v1 + one layer installing curl, ca-certificates, less)
#   $CACHE/debian-rootfs.tar   the v1 rootfs as a plain tarball (for tar: imports)
# CACHE is $COWSHED_FIXTURES, default /var/cache/cowshed-fixtures.
# The mirror is the one the host's apt uses (scripts/debian-mirror.sh).
# Idempotent (stamp file); a half-finished earlier run leaves only a .build.*
# temp dir, which the next run deletes. Prints the layout path on stdout.
set -euo pipefail

CACHE=${COWSHED_FIXTURES:-/var/cache/cowshed-fixtures}
LAYOUT=$CACHE/debian-oci
ROOTFS_TAR=$CACHE/debian-rootfs.tar
STAMP=$CACHE/debian-oci.stamp
# Bump when the recipe changes so cached images are rebuilt.
RECIPE=2

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -d "$LAYOUT" ] && [ -f "$ROOTFS_TAR" ]; then
  echo "$LAYOUT"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "build-debian-image: needs root (debootstrap, chroot)" >&2
  exit 1
fi
for t in debootstrap umoci tar; do
  command -v "$t" >/dev/null || { echo "build-debian-image: $t not installed (run scripts/setup.sh)" >&2; exit 1; }
done

mkdir -p "$CACHE"
# Several test runs may ask for the image at once: one builds, the others wait.
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -d "$LAYOUT" ] && [ -f "$ROOTFS_TAR" ]; then
  echo "$LAYOUT"
  exit 0
fi

# The mirror the host's apt uses for Debian bookworm main (or
# $COWSHED_DEBIAN_MIRROR): the repository names no host, so this works
# wherever apt works. Stops with one line when there is none.
MIRROR=$(bash "$(dirname "$0")/debian-mirror.sh" bookworm)

# Unmounts everything below a directory, deepest first: an interrupted run can
# leave /proc, /sys, /dev mounted inside a rootfs (ours, or debootstrap's own),
# and rm -rf must never walk into those.
unmount_under() {
  awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" || true; done
}
for stale in "$CACHE"/.build.*; do
  [ -e "$stale" ] || continue
  unmount_under "$stale"
  rm -rf --one-file-system "$stale"
done
WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
cleanup() {
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

L=$WORK/debian-oci
echo "build-debian-image: debootstrap bookworm from $MIRROR (about a minute)" >&2
umoci init --layout "$L"
umoci new --image "$L:v1"
umoci config --image "$L:v1" --no-history \
  --config.cmd /bin/bash \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umoci unpack --image "$L:v1" "$WORK/b1"
debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
# The host's resolv.conf was copied in for the install; the image should not carry it.
rm -f "$WORK/rootfs/etc/resolv.conf"
# Copy into the bundle keeping owners, modes, hardlinks, xattrs and mtimes.
cp -a "$WORK/rootfs/." "$WORK/b1/rootfs/"
umoci repack --image "$L:v1" --history.created_by "debootstrap --variant=minbase bookworm" "$WORK/b1"

umoci unpack --image "$L:v1" "$WORK/b2"
R=$WORK/b2/rootfs
# The tarball is made from the unpacked v1 image, not from debootstrap's
# output: the layer's mtimes are rounded to whole seconds (Go's archive/tar),
# and `import tar:` must give exactly what `import oci:…:v1` gives.
tar -C "$R" --format=pax --xattrs --xattrs-include='*' --numeric-owner --sort=name \
  -cf "$WORK/debian-rootfs.tar" .

echo "build-debian-image: v2 layer (curl ca-certificates less)" >&2
cp /etc/resolv.conf "$R/etc/resolv.conf"
for m in proc sys dev; do
  mount --rbind "/$m" "$R/$m"
  mount --make-rslave "$R/$m"
done
chroot "$R" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c '
  set -e
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends curl ca-certificates less >/dev/null
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old
' >"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; exit 1; }
for m in dev sys proc; do umount -R "$R/$m"; done
rm -f "$R/etc/resolv.conf"
umoci repack --image "$L:v2" --history.created_by "apt-get install curl ca-certificates less" "$WORK/b2"
umoci gc --layout "$L"
# umoci writes blobs 0600; tests running as another user still need to read them.
chmod -R a+rX "$L"

# Replace the old outputs (if any) only now that the new ones are complete.
rm -rf "$LAYOUT" "$ROOTFS_TAR"
mv "$L" "$LAYOUT"
mv "$WORK/debian-rootfs.tar" "$ROOTFS_TAR"
echo "$RECIPE" >"$STAMP"
echo "build-debian-image: done" >&2
echo "$LAYOUT"
