#!/bin/sh
# Runs a program of the cached Debian 13 root (scripts/mesa-root.sh) with
# Mesa 25's virpipe driver, connected to a vtest socket of this host:
#
#   scripts/in-mesa-root.sh [--root DIR] SOCKET -- PROGRAM [ARGS...]
#
# The program runs chrooted in a private mount namespace that sees this
# host's /dev, /proc, /sys, the X sockets and SOCKET, bound both at the path
# VTEST_SOCKET_NAME names and at /tmp/.virgl_test.  DISPLAY, and the
# environment variables named in VGPU_PASS_ENV (space-separated), pass
# through; the rest of the environment is the root's own.  Needs root.
set -eu

usage() {
  echo "usage: $0 [--root DIR] SOCKET -- PROGRAM [ARGS...]" >&2
  exit 2
}

root=${VGPU_MESA_ROOT:-/var/cache/vgpu/trixie-root}
if [ "${1:-}" = "--root" ]; then
  [ $# -ge 2 ] || usage
  root=$2
  shift 2
fi
[ $# -ge 3 ] && [ "$2" = "--" ] || usage
sock=$1
shift 2

if [ ! -f "$root/.vgpu-mesa-root" ]; then
  echo "in-mesa-root: no finished Mesa root at $root (run scripts/mesa-root.sh)" >&2
  exit 1
fi
if [ ! -S "$sock" ]; then
  echo "in-mesa-root: $sock is not a socket" >&2
  exit 1
fi

pass="DISPLAY=${DISPLAY:-}"
for v in ${VGPU_PASS_ENV:-}; do
  eval "val=\${$v-}"
  pass="$pass $v=$val"
done

# The inner shell runs in the new namespace: mounts made there vanish with
# it.  Paths are passed as arguments, never pasted into the script.
exec unshare --mount --propagation private sh -eu -c '
root=$1 sock=$2 pass=$3
shift 3
for d in dev proc sys tmp/.X11-unix; do
  mkdir -p "$root/$d"
  mount --rbind "/$d" "$root/$d"
done
mkdir -p "$root/run/vgpu"
: >"$root/run/vgpu/vtest.sock"
mount --bind "$sock" "$root/run/vgpu/vtest.sock"
: >"$root/tmp/.virgl_test"
mount --bind "$sock" "$root/tmp/.virgl_test"
# shellcheck disable=SC2086
exec chroot "$root" env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 $pass \
  GALLIUM_DRIVER=virpipe VTEST_SOCKET_NAME=/run/vgpu/vtest.sock "$@"
' in-mesa-root "$root" "$sock" "$pass" "$@"
