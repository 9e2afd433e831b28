#!/bin/sh
# Runs a program of the cached Debian 13 root (scripts/mesa-root.sh) with
# Mesa 25's virpipe driver, connected to a vtest socket of this host:
#
#   scripts/in-mesa-root.sh [--root DIR] [--cwd DIR] SOCKET -- PROGRAM [ARGS...]
#
# The program runs chrooted in a private mount namespace that sees this
# host's /dev, /proc, /sys and X sockets (/tmp/.X11-unix), a private /tmp
# and /run, and SOCKET bound both at /run/vgpu/vtest.sock, which
# VTEST_SOCKET_NAME names, and at /tmp/.virgl_test.  PROGRAM is looked up
# in the root (PATH=/usr/bin:/bin), and starts in --cwd (a directory of the
# root, default /).  DISPLAY, and the environment variables named in
# VGPU_PASS_ENV (space-separated names), pass through; the rest of the
# environment is the root's own.  Nothing is written to the root itself, so
# any number of these may run at once.  Needs root.  The program replaces
# this script (exec all the way), so it keeps its process id and its exit
# status is the program's; 125 when it could not be started.
set -eu

usage() {
  echo "usage: $0 [--root DIR] [--cwd DIR] SOCKET -- PROGRAM [ARGS...]" >&2
  exit 2
}
fail() {
  echo "in-mesa-root: $*" >&2
  exit 125
}

root=${VGPU_MESA_ROOT:-/var/cache/vgpu/trixie-root}
cwd=/
while :; do
  case "${1:-}" in
    --root)
      [ $# -ge 2 ] || usage
      root=$2
      shift 2
      ;;
    --cwd)
      [ $# -ge 2 ] || usage
      cwd=$2
      shift 2
      ;;
    *) break ;;
  esac
done
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
sock=$1
shift 2

[ "$(id -u)" -eq 0 ] || fail "needs root (it mounts and chroots)"
[ -f "$root/.vgpu-mesa-root" ] || fail "no finished Mesa root at $root (run scripts/mesa-root.sh)"
[ -S "$sock" ] || fail "$sock is not a socket"
[ -d "$root/$cwd" ] || fail "$cwd is not a directory of $root"

# NAME=value arguments for env(1) inside the root, put before the program
# (values are passed as arguments, never evaluated).
for v in ${VGPU_PASS_ENV:-}; do
  case $v in
    '' | [0-9]* | *[!A-Za-z0-9_]*) fail "VGPU_PASS_ENV: '$v' is not a variable name" ;;
  esac
  if val=$(printenv "$v"); then
    set -- "$v=$val" "$@"
  fi
done
if [ -n "${DISPLAY:-}" ]; then
  set -- "DISPLAY=$DISPLAY" "$@"
fi

# The inner shell runs in the new namespace: mounts made there vanish with
# it.  Paths are passed as arguments, never pasted into the script.
# shellcheck disable=SC2016 # the inner script expands its own arguments
exec unshare --mount --propagation private sh -eu -c '
root=$1 sock=$2 cwd=$3
shift 3
mount --rbind /dev "$root/dev"
mount --rbind /proc "$root/proc"
mount --rbind /sys "$root/sys"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
if [ -d /tmp/.X11-unix ]; then
  mkdir "$root/tmp/.X11-unix"
  mount --rbind /tmp/.X11-unix "$root/tmp/.X11-unix"
fi
mkdir "$root/run/vgpu"
: >"$root/run/vgpu/vtest.sock"
mount --bind "$sock" "$root/run/vgpu/vtest.sock"
: >"$root/tmp/.virgl_test"
mount --bind "$sock" "$root/tmp/.virgl_test"
exec chroot "$root" env -i -C "$cwd" PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
  GALLIUM_DRIVER=virpipe VTEST_SOCKET_NAME=/run/vgpu/vtest.sock "$@"
' in-mesa-root "$root" "$sock" "$cwd" "$@"
