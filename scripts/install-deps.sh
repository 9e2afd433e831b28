#!/bin/sh
# Installs the Debian 12 packages vgpu needs to build, test, benchmark and
# run its demo.  The one list of dependencies; README.md says why each is
# there.  Idempotent: does nothing (quickly) when everything is present.
set -eu

BUILD="meson ninja-build pkg-config gcc clang libclang-rt-14-dev \
  libglib2.0-dev libjson-glib-dev libvirglrenderer-dev libpixman-1-dev \
  libseccomp-dev libsystemd-dev libcmocka-dev libpng-dev libx11-dev libgl-dev"
RUNTIME="libvirglrenderer1 libgl1-mesa-dri libegl1 libegl-mesa0 mesa-utils \
  virgl-server xvfb x11-utils glmark2-x11 piglit python3 procps util-linux debootstrap"
PKGS="$BUILD $RUNTIME"

missing=""
for p in $PKGS; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    "install ok installed") ;;
    *) missing="$missing $p" ;;
  esac
done

count=$(echo "$PKGS" | wc -w)
if [ -z "$missing" ]; then
  echo "deps: all $count dependencies present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "deps: missing packages:$missing" >&2
  echo "deps: run 'make deps' as root (or with password-less sudo) to install them" >&2
  exit 1
fi
echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
  echo "deps: apt-get could not install:$missing" >&2
  exit 1
fi
echo "deps: done"
