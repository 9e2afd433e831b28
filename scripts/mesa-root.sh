#!/bin/sh
# Builds (once) and caches a Debian 13 "trixie" root file system holding
# Mesa 25's GL clients: glxgears, glxinfo, glmark2 and piglit.  The tests
# and benchmarks run those clients in a private mount namespace chrooted
# into this tree (scripts/in-mesa-root.sh), so vgpu is checked against
# current Mesa while the host's own Mesa 22.3 stays as it is.
#
#   scripts/mesa-root.sh [DIR]             build DIR unless it is ready
#   scripts/mesa-root.sh --if-possible [DIR]
#       the same, but a machine that cannot build it (no Debian mirror
#       reachable, not root) only gets a note and exit 0: `make check`
#       uses this, and the tests that need the root then skip, saying why
#   scripts/mesa-root.sh --print [DIR]     prints DIR when it is ready (exit
#       0), else nothing (exit 1)
#   scripts/mesa-root.sh --why-not [DIR]   exit 0 and one line when the
#       root cannot be built here (the reason), exit 1 when it can
#
# DIR defaults to $VGPU_MESA_ROOT, else /var/cache/vgpu/trixie-root.  The
# Debian mirror is $VGPU_DEBIAN_MIRROR, else the one this host's apt uses
# (the first URIs: of /etc/apt/sources.list.d/*.sources, else the first deb
# line of /etc/apt/sources.list, security archives left out).
#
# Idempotent and safe to run concurrently: a finished root carries a stamp
# naming the suite and package list; a missing stamp (a half-made tree) or
# a changed list means a rebuild from scratch.  The build happens aside,
# in DIR.part, under a lock, and is renamed into place only when complete,
# so no reader ever sees a partial tree.  The first build downloads ~700 MB
# and takes a few minutes; afterwards this script returns at once.
set -eu

SUITE=trixie
# VGPU_ROOT_PACKAGES replaces the list for a root of another purpose
# (scripts/check-virgl1.sh), kept in a DIR of its own.
PKGS=${VGPU_ROOT_PACKAGES:-mesa-utils,glmark2-x11,piglit,libgl1-mesa-dri,libegl-mesa0,x11-utils}
STAMP_TEXT="suite=$SUITE packages=$PKGS"

mode=build
case "${1:-}" in
  --print | --why-not | --if-possible)
    mode=${1#--}
    shift
    ;;
  -*)
    echo "usage: $0 [--if-possible | --print | --why-not] [DIR]" >&2
    exit 2
    ;;
esac
DIR=${1:-${VGPU_MESA_ROOT:-/var/cache/vgpu/trixie-root}}
STAMP="$DIR/.vgpu-mesa-root"

ready() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ]
}

mesa_version() {
  # shellcheck disable=SC2016 # a dpkg-query format, not shell
  chroot "$DIR" dpkg-query -W -f='${Version}' libgl1-mesa-dri 2>/dev/null || echo unknown
}

# The host's Debian mirror, never a host named here.
find_mirror() {
  if [ -n "${VGPU_DEBIAN_MIRROR:-}" ]; then
    echo "$VGPU_DEBIAN_MIRROR"
    return
  fi
  m=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    m=$(awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$m" ] && break
  done
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  echo "${m%/}"
}

# Why the root cannot be built here, or nothing when it can.
why_not() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "building the Mesa 25 root needs root (debootstrap, chroot)"
    return
  fi
  mirror=$(find_mirror)
  if [ -z "$mirror" ]; then
    echo "no Debian mirror in /etc/apt (a URIs: or deb line) and VGPU_DEBIAN_MIRROR is unset"
    return
  fi
  release="$mirror/dists/$SUITE/InRelease"
  if command -v wget >/dev/null 2>&1; then
    wget -q --spider --tries=1 --timeout=15 "$release" && return
  elif command -v curl >/dev/null 2>&1; then
    curl -fsI --max-time 15 -o /dev/null "$release" && return
  else
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' \
      "$release" 2>/dev/null && return
  fi
  from="this host's apt"
  [ -n "${VGPU_DEBIAN_MIRROR:-}" ] && from=VGPU_DEBIAN_MIRROR
  echo "no Debian mirror reachable: $release (the mirror of $from) did not answer"
}

case $mode in
  print)
    if ready; then
      echo "$DIR"
      exit 0
    fi
    exit 1
    ;;
  why-not)
    reason=$(why_not)
    [ -n "$reason" ] || exit 1
    echo "$reason"
    exit 0
    ;;
esac

if ready; then
  echo "mesa-root: $DIR is ready (Mesa $(mesa_version))"
  exit 0
fi
reason=$(why_not)
if [ -n "$reason" ]; then
  if [ "$mode" = if-possible ]; then
    echo "mesa-root: not built: $reason; the tests that need Mesa 25 will skip"
    exit 0
  fi
  echo "mesa-root: cannot build $DIR: $reason" >&2
  exit 1
fi
mirror=$(find_mirror)

# make deps installs it; this is for a run of this script alone.
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "mesa-root: installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 &&
    ! { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null; }; then
    echo "mesa-root: apt-get could not install debootstrap" >&2
    exit 1
  fi
fi

parent=$(dirname "$DIR")
mkdir -p "$parent"
tmp="$DIR.part"
log="$DIR.log"

# One builder at a time; a second one waits, then finds the root ready.
exec 9>"$DIR.lock"
if ! flock -n 9; then
  echo "mesa-root: another build of $DIR is under way; waiting for it"
  flock 9
fi
if ready; then
  echo "mesa-root: $DIR is ready (Mesa $(mesa_version))"
  exit 0
fi

# Removes a tree that a failed debootstrap may have left with /proc or
# /sys mounted in it: unmount first (deepest first), and never cross into
# another file system while deleting.
remove_tree() {
  [ -e "$1" ] || return 0
  awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$1"
}
remove_tree "$tmp"
trap 'remove_tree "$tmp"' EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
echo "mesa-root: building $DIR: debootstrap $SUITE from $mirror (~700 MB to download, 2.5 GB on disk, a few minutes; log in $log)"
# The full output goes to the log; the terminal gets one line per phase.
status=$( (debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$tmp" "$mirror" 2>&1 || echo "debootstrap-exit=$?") |
  tee "$log" | awk -v t0="$start" '
    function say(text,   now, cmd) {
      cmd = "date +%s"; cmd | getline now; close(cmd)
      printf("mesa-root: [%4ds] %s\n", now - t0, text) > "/dev/stderr"
    }
    /^debootstrap-exit=/ { print; next }
    /^[EW]: / { print "mesa-root: " $0 > "/dev/stderr"; next }
    /^I: / {
      phase = $2
      if (phase == "Validating") phase = "Retrieving"
      if (phase !~ /^(Retrieving|Extracting|Installing|Unpacking|Configuring)$/) phase = "Preparing"
      if (phase != last) { say(phase " ..."); last = phase; n = 0 }
      else if (phase != "Preparing" && ++n % 150 == 0) say(phase " ... (" n " steps)")
    }
    END { if (last != "") say("done") }')
if [ -n "$status" ] || ! [ -x "$tmp/usr/bin/glxgears" ]; then
  echo "mesa-root: debootstrap failed (${status:-no glxgears in the tree}); the last lines of $log:" >&2
  tail -n 15 "$log" >&2
  exit 1
fi
# Nothing in the root needs apt's caches; they are a third of its size.
rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
printf '%s' "$STAMP_TEXT" >"$tmp/.vgpu-mesa-root"
remove_tree "$DIR"
mv "$tmp" "$DIR"
trap - EXIT
echo "mesa-root: $DIR is ready (Mesa $(mesa_version)) after $(($(date +%s) - start)) s"
