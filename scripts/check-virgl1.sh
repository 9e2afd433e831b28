#!/bin/sh
# make check-virgl1: builds and checks vgpu against virglrenderer 1.x, the
# one of Debian 13 "trixie", without touching this host's libraries.
#
#   scripts/check-virgl1.sh [--strace]
#
# 1. Builds (once) and caches a trixie root file system holding vgpu's build
#    dependencies, virglrenderer 1.x and Mesa 25's glxgears: the same
#    scripts/mesa-root.sh as the Mesa 25 root of `make check` (host mirror,
#    built aside and renamed into place), with its own package list and
#    directory, $VGPU_BUILD_ROOT, else /var/cache/vgpu/trixie-build-root.
#    It is a root apart so that the Mesa root of `make check` stays small.
# 2. In a private mount namespace chrooted into it (this source tree bound
#    at /src, a private /tmp and /run, the host's X sockets bound in), builds
#    vgpu with gcc, ASan and UBSan in build-virgl1, prints the virglrenderer
#    version and what meson found in it, and runs the unit suite.
# 3. End to end, still inside the root: vgpud of that build serves glxgears
#    (Mesa 25, virpipe) on instance vgpu0 of its embedded configuration, on
#    a screen of an Xvfb started here; passes when glxgears renders through
#    virgl, vgpud counted the frames, and its instance socket answers.  The
#    same glxgears through the root's virgl_test_server gives a frame rate
#    to compare with (printed, not judged: this build is sanitized).
#
# --strace: the workers run under strace -f, and the system calls the
# seccomp filter refused (EPERM) are listed at the end (the allow-list of
# src/worker/sandbox.c is checked this way).
# GEARS_TIMEOUT (default 180) bounds the seconds glxgears may take to
# print its first frame rate.  Needs root.
# Exit status: 0 passed, 1 failed, 77 skipped (not root, Xvfb or unshare
# missing, the root not built and no Debian mirror reachable), with the
# reason.
set -eu

cd "$(dirname "$0")/.."
SRC=$(pwd)
ROOT=${VGPU_BUILD_ROOT:-/var/cache/vgpu/trixie-build-root}
STRACE=0
if [ "${1:-}" = "--strace" ]; then
  STRACE=1
  shift
fi
[ $# -eq 0 ] || {
  echo "usage: $0 [--strace]" >&2
  exit 2
}
GEARS_TIMEOUT=${GEARS_TIMEOUT:-180}
case $GEARS_TIMEOUT in
  '' | *[!0-9]*)
    echo "check-virgl1: GEARS_TIMEOUT must be a whole number" >&2
    exit 2
    ;;
esac

say() { echo "[check-virgl1] $*"; }
fail() {
  echo "[check-virgl1] error: $*" >&2
  exit 1
}

# What this machine lacks is a skip (exit 77, with the reason), not a failure.
skip() {
  echo "[check-virgl1] SKIP: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, mounts, chroot)"
command -v Xvfb >/dev/null || skip "Xvfb is missing: run 'make deps' first"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"

t0=$(date +%s)
# vgpu's build dependencies (scripts/install-deps.sh) as trixie names them,
# less clang (gcc builds the sanitized binaries), plus Mesa 25's glxgears,
# virglrenderer 1.x's own virgl_test_server (a frame rate to compare with)
# and strace.
VGPU_ROOT_PACKAGES="meson,ninja-build,pkgconf,gcc,libc6-dev,libglib2.0-dev,libjson-glib-dev"
# (debootstrap does not resolve virtual packages: these provide the
# gir1.2-gio-2.0-dev and gir1.2-gobject-2.0-dev libjson-glib-dev needs)
VGPU_ROOT_PACKAGES="$VGPU_ROOT_PACKAGES,gir1.2-glib-2.0,gir1.2-glib-2.0-dev"
VGPU_ROOT_PACKAGES="$VGPU_ROOT_PACKAGES,libvirglrenderer-dev,libvirglrenderer1,libseccomp-dev"
VGPU_ROOT_PACKAGES="$VGPU_ROOT_PACKAGES,libsystemd-dev,libcmocka-dev,libpng-dev,libx11-dev,libgl-dev,libpixman-1-dev,libmicrohttpd-dev"
VGPU_ROOT_PACKAGES="$VGPU_ROOT_PACKAGES,mesa-utils,libgl1-mesa-dri,libegl-mesa0,virgl-server,python3,procps,strace"
export VGPU_ROOT_PACKAGES
if ! sh scripts/mesa-root.sh --print "$ROOT" >/dev/null &&
  reason=$(sh scripts/mesa-root.sh --why-not "$ROOT"); then
  skip "the trixie build root cannot be built here: $reason"
fi
sh scripts/mesa-root.sh "$ROOT"
t_root=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-virgl1.XXXXXX")
XPID=""
cleanup() {
  [ -n "$XPID" ] && kill "$XPID" 2>/dev/null && wait "$XPID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# An Xvfb of this host; the root sees its socket through /tmp/.X11-unix.
Xvfb -displayfd 3 -screen 0 640x480x24 -nolisten tcp 3>"$TMP/display" >/dev/null 2>&1 &
XPID=$!
for _ in $(seq 200); do
  [ -s "$TMP/display" ] && break
  kill -0 "$XPID" 2>/dev/null || fail "Xvfb did not start"
  sleep 0.1
done
[ -s "$TMP/display" ] || fail "Xvfb did not report its display"
display=:$(tr -dc 0-9 <"$TMP/display")
say "Xvfb $display"

# The inner shell runs in the new namespace: its mounts vanish with it.
# /dev/dri stays out of the root (there is none here; on a host with one,
# an empty directory hides it), so EGL takes llvmpipe surfaceless as in
# `make check`.  Paths are passed as arguments, never pasted into scripts.
rc=0
# shellcheck disable=SC2016 # the inner script expands its own arguments
unshare --mount --propagation private sh -eu -c '
root=$1 src=$2 display=$3 seconds=$4 strace=$5
mount --rbind /dev "$root/dev"
if [ -d "$root/dev/dri" ]; then
  mount -t tmpfs -o mode=0755 tmpfs "$root/dev/dri"
fi
mount --rbind /proc "$root/proc"
mount --rbind /sys "$root/sys"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mkdir "$root/tmp/.X11-unix"
mount --rbind /tmp/.X11-unix "$root/tmp/.X11-unix"
mkdir -p "$root/src"
mount --bind "$src" "$root/src"
exec chroot "$root" env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME=/tmp LANG=C.UTF-8 \
  DISPLAY="$display" GEARS_TIMEOUT="$seconds" VGPU_STRACE="$strace" \
  sh /src/scripts/check-virgl1-inside.sh
' check-virgl1 "$ROOT" "$SRC" "$display" "$GEARS_TIMEOUT" "$STRACE" || rc=$?
t_end=$(date +%s)
say "durations: root $((t_root - t0)) s, build and checks $((t_end - t_root)) s, total $((t_end - t0)) s"
[ "$rc" -eq 0 ] || fail "failed (exit $rc)"
say "passed"
