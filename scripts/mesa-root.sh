#!/bin/sh
# Builds (once) and caches a Debian 13 "trixie" root file system holding
# Mesa 25's GL clients: glxgears, glxinfo, glmark2 and piglit.  The tests
# and benchmarks run those clients in a private mount namespace chrooted
# into this tree, so vgpu is checked against current Mesa while the host's
# own Mesa 22.3 stays as it is.
#
#   scripts/mesa-root.sh [--print] [DIR]
#
# DIR defaults to $VGPU_MESA_ROOT, else /var/cache/vgpu/trixie-root.  The
# Debian mirror is the one this host's apt already uses: the first URIs:
# (deb822) or deb line of /etc/apt.  With --print, only prints DIR when a
# finished root is there (exit 0) or nothing (exit 1): tests use it to
# decide whether to skip.
#
# Idempotent: a finished root carries a stamp naming the package list; a
# changed list or a half-made tree is rebuilt from scratch, built aside
# and renamed into place so no reader sees a partial tree.
set -eu

SUITE=trixie
PKGS="mesa-utils,glmark2-x11,piglit,libgl1-mesa-dri,libegl-mesa0,x11-utils"
STAMP_TEXT="suite=$SUITE packages=$PKGS"

print=0
if [ "${1:-}" = "--print" ]; then
  print=1
  shift
fi
DIR=${1:-${VGPU_MESA_ROOT:-/var/cache/vgpu/trixie-root}}
STAMP="$DIR/.vgpu-mesa-root"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]; then
  if [ $print -eq 1 ]; then
    echo "$DIR"
  else
    echo "mesa-root: $DIR is ready ($(chroot "$DIR" dpkg-query -W -f='${Version}' libgl1-mesa-dri 2>/dev/null || echo '?'))"
  fi
  exit 0
fi
[ $print -eq 1 ] && exit 1

if [ "$(id -u)" -ne 0 ]; then
  echo "mesa-root: building $DIR needs root (debootstrap, chroot)" >&2
  exit 1
fi

# The host's Debian mirror, never a host named here.
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
  grep -v security | head -n1 || true)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
    /etc/apt/sources.list || true)
fi
if [ -z "$mirror" ]; then
  echo "mesa-root: no Debian mirror found in /etc/apt (a URIs: or deb line)" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "mesa-root: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

parent=$(dirname "$DIR")
mkdir -p "$parent"
tmp="$DIR.part"
rm -rf "$tmp"
echo "mesa-root: debootstrap $SUITE from $mirror into $DIR (a few minutes, ~1 GB)"
if ! debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$tmp" "$mirror" >"$parent/mesa-root.log" 2>&1; then
  echo "mesa-root: debootstrap failed; the last lines of $parent/mesa-root.log:" >&2
  tail -n 15 "$parent/mesa-root.log" >&2
  exit 1
fi
# Nothing in the root needs apt's caches; they are half its size.
rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
printf '%s' "$STAMP_TEXT" >"$tmp/.vgpu-mesa-root"
rm -rf "$DIR"
mv "$tmp" "$DIR"
echo "mesa-root: $DIR is ready ($(chroot "$DIR" dpkg-query -W -f='${Version}' libgl1-mesa-dri))"
