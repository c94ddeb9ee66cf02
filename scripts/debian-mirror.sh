#!/usr/bin/env bash
# Prints the Debian mirror the host's apt already uses for the main archive
# of a suite (default bookworm), so debootstrap fetches from wherever apt
# works on this machine. The repository names no mirror host.
#
#   scripts/debian-mirror.sh [SUITE]
#
# Reads, in order: deb822 stanzas in $APT_DIR/sources.list.d/*.sources
# (Types:, URIs:, Suites:, Components:, Enabled:) and one-line entries
# (`deb [options] URI SUITE COMPONENT…`) in $APT_DIR/sources.list and
# $APT_DIR/sources.list.d/*.list. An entry qualifies when it is a `deb`
# entry whose suite is exactly SUITE (not SUITE-security, SUITE-updates, nor
# a third-party suite such as nodistro) with the component main, over
# http(s) or file:. When apt has already fetched that entry's Release file
# and its Origin is not Debian, the entry is a third-party repository that
# reuses the suite name, and is skipped.
#
# COWSHED_DEBIAN_MIRROR, when set, wins. APT_DIR (default /etc/apt) and
# APT_LISTS (default /var/lib/apt/lists) exist for tests.
# Exits 1 with one line on stderr when nothing qualifies.
set -euo pipefail

SUITE=${1:-bookworm}
APT_DIR=${APT_DIR:-/etc/apt}
APT_LISTS=${APT_LISTS:-/var/lib/apt/lists}

if [ -n "${COWSHED_DEBIAN_MIRROR:-}" ]; then
  echo "$COWSHED_DEBIAN_MIRROR"
  exit 0
fi

# Candidate URIs, one per line, in the order apt lists them.
candidates() {
  local f
  for f in "$APT_DIR"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Stanzas are separated by blank lines; '#' lines are comments; field
    # names are case-insensitive; a field may continue on indented lines.
    awk -v suite="$SUITE" '
      function flush(   i, n, u, s, c, t, ok) {
        if (!seen) return
        if (tolower(f["enabled"]) == "no") { reset(); return }
        ok = 0; n = split(f["types"], t, /[ \t]+/); for (i = 1; i <= n; i++) if (t[i] == "deb") ok = 1
        if (!ok) { reset(); return }
        ok = 0; n = split(f["suites"], s, /[ \t]+/); for (i = 1; i <= n; i++) if (s[i] == suite) ok = 1
        if (!ok) { reset(); return }
        ok = 0; n = split(f["components"], c, /[ \t]+/); for (i = 1; i <= n; i++) if (c[i] == "main") ok = 1
        if (!ok) { reset(); return }
        n = split(f["uris"], u, /[ \t]+/); for (i = 1; i <= n; i++) if (u[i] != "") print u[i]
        reset()
      }
      function reset() { delete f; seen = 0; last = "" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { if (last != "") f[last] = f[last] " " $0; next }
      {
        k = tolower(substr($0, 1, index($0, ":") - 1)); v = substr($0, index($0, ":") + 1)
        gsub(/^[ \t]+|[ \t]+$/, "", v); f[k] = v; last = k; seen = 1
      }
      END { flush() }
    ' "$f"
  done
  for f in "$APT_DIR"/sources.list "$APT_DIR"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      { sub(/#.*/, "") }
      $1 != "deb" { next }
      {
        i = 2
        # [ options ] may be one word or several.
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        uri = $i; s = $(i + 1)
        if (s != suite) next
        for (j = i + 2; j <= NF; j++) if ($j == "main") { print uri; next }
      }
    ' "$f"
  done
}

# apt's name for an entry's Release file: the URI without its scheme, "/" as "_".
release_origin() {
  local uri=$1 base f
  base=${uri#*://}
  base=${base%/}
  base=${base//\//_}
  for f in "$APT_LISTS/${base}_dists_${SUITE}_InRelease" "$APT_LISTS/${base}_dists_${SUITE}_Release"; do
    if [ -f "$f" ]; then
      sed -n 's/^Origin: *//p' "$f" | head -n1
      return
    fi
  done
}

while read -r uri; do
  case $uri in
    http://* | https://* | file:/*) ;;
    *) continue ;;
  esac
  origin=$(release_origin "$uri")
  if [ -n "$origin" ] && [ "$origin" != Debian ]; then continue; fi
  echo "${uri%/}"
  exit 0
done < <(candidates)

echo "debian-mirror: no apt source serves Debian $SUITE main (looked in $APT_DIR/sources.list and $APT_DIR/sources.list.d/); add one, or set COWSHED_DEBIAN_MIRROR to a Debian mirror URL" >&2
exit 1
