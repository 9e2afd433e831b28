#!/bin/sh
# Installs the Debian 12 packages vgpu needs to build, test, benchmark and
# run its demo.  The one list of dependencies; README.md says why each is
# there.  Idempotent: does nothing (quickly) when everything is present.
#
# QEMU 10 and libvirt 11 (the VM tests) come from Debian's backports suite
# of this release, added from the Debian mirror this host's apt already
# uses (never a host named here) into a sources file of its own.  Their
# packages are asked for one by one (PACKAGE/SUITE): `-t SUITE` would also move
# packages that have newer versions there, Mesa among them (22.3 -> 25),
# and every client's and renderer's baseline with it.
set -eu

BUILD="meson ninja-build pkg-config gcc libc6-dev clang libclang-rt-14-dev \
  libglib2.0-dev libjson-glib-dev libvirglrenderer-dev libpixman-1-dev \
  libseccomp-dev libsystemd-dev libcmocka-dev libpng-dev libx11-dev libgl-dev libmicrohttpd-dev"
RUNTIME="libvirglrenderer1 libgl1-mesa-dri libegl1 libegl-mesa0 mesa-utils \
  virgl-server xvfb x11-utils glmark2-x11 glmark2-es2-drm piglit python3 procps util-linux debootstrap"
# The operators' tests: a real Prometheus scrapes the metrics endpoint, and
# headless Chromium renders the dashboard (with a font for its text).
OPS="prometheus chromium fonts-dejavu-core"
# The VM tests' guest: a Debian kernel with its virtio-gpu modules, a static
# busybox for the initramfs, cpio to pack it, kmod to resolve the modules.
GUEST="linux-image-amd64 busybox-static cpio kmod"
PKGS="$BUILD $RUNTIME $OPS $GUEST"

# From backports, each with the lowest version the tests need (QEMU 7.2
# refuses vhost-user-gpu without KVM; 10.0 accepts it under TCG).
# qemu-system-gui holds QEMU's reference back-end, vhost-user-gpu.
# libvirt 11's daemons and virsh for the libvirt tests, which start the
# daemons by hand where no systemd runs (its libvirt-qemu account has
# Debian's fixed uid 64055, inside vgpud's default worker-uid-range:
# vgpud sets that id aside).
BPO_PKGS="qemu-system-x86:1:10 qemu-system-gui:1:10 \
  libvirt-daemon:11 libvirt-daemon-driver-qemu:11 libvirt-clients:11 \
  libvirt-daemon-log:11 libvirt-daemon-lock:11"
# What must keep its Debian 12 version: the Mesa every baseline was taken on.
MESA_PKG=libgl1-mesa-dri
MESA_WANT="22.3.*"
BPO_LIST=/etc/apt/sources.list.d/vgpu-backports.sources
bpo_skip=""

# One dpkg-query for every package: "NAME VERSION" of those installed.
# shellcheck disable=SC2016 # a dpkg-query format, not shell
installed_list() {
  # shellcheck disable=SC2086
  dpkg-query -W -f='${Package} ${db:Status-Abbrev} ${Version}\n' "$@" 2>/dev/null |
    awk '$2 == "ii" { print $1, $3 }' || true
}
installed_version() {
  installed_list "$1" | awk 'NR == 1 { print $2 }'
}

# shellcheck disable=SC2046,SC2086
have=$(installed_list $PKGS $(for pv in $BPO_PKGS; do echo "${pv%%:*}"; done))
version_of() {
  echo "$have" | awk -v p="$1" '$1 == p { print $2; exit }'
}
missing=""
for p in $PKGS; do
  [ -n "$(version_of "$p")" ] || missing="$missing $p"
done
bpo_missing=""
for pv in $BPO_PKGS; do
  p=${pv%%:*}
  min=${pv#*:}
  v=$(version_of "$p")
  if [ -z "$v" ] || ! dpkg --compare-versions "$v" ge "$min"; then
    bpo_missing="$bpo_missing $p"
  fi
done

count=$(($(echo "$PKGS" | wc -w) + $(echo "$BPO_PKGS" | wc -w)))
if [ -z "$missing" ] && [ -z "$bpo_missing" ]; then
  echo "deps: all $count dependencies present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "deps: missing packages:$missing$bpo_missing" >&2
  echo "deps: run 'make deps' as root (or with password-less sudo) to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# shellcheck disable=SC1091
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
BPO_SUITE="$CODENAME-backports"

# Prints a deb822 stanza for $BPO_SUITE, made from the first stanza of the
# host's *.sources files that serves suite $CODENAME itself: its URIs,
# Components and Signed-By (a key file's path), nothing else.
backports_stanza() {
  for f in /etc/apt/sources.list.d/*.sources; do
    if [ ! -f "$f" ] || [ "$f" = "$BPO_LIST" ]; then continue; fi
    awk -v want="$CODENAME" -v suite="$BPO_SUITE" '
      function flush() {
        if (!done && deb && has && uris != "") {
          print "Types: deb"
          print "URIs: " uris
          print "Suites: " suite
          print "Components: " (comps != "" ? comps : "main")
          if (key != "") print "Signed-By: " key
          done = 1
        }
        deb = has = 0; uris = comps = key = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { next }   # continuation lines (an inline key): not copied
      {
        field = tolower($1)
        if (field == "types:") { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
        else if (field == "suites:") { for (i = 2; i <= NF; i++) if ($i == want) has = 1 }
        else if (field == "uris:") { uris = $2; for (i = 3; i <= NF; i++) uris = uris " " $i }
        else if (field == "components:") { comps = $2; for (i = 3; i <= NF; i++) comps = comps " " $i }
        else if (field == "signed-by:" && NF == 2 && $2 ~ /^\//) key = $2
      }
      END { flush() }' "$f"
  done | awk '/^Types:/ { n++ } n == 1'
}

# The one-line format's equivalent, for hosts with only /etc/apt/sources.list.
backports_line() {
  [ -f /etc/apt/sources.list ] || return 0
  awk -v want="$CODENAME" -v suite="$BPO_SUITE" '
    $1 == "deb" {
      i = 2; opts = ""
      if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts " " $i; i++ }; opts = opts " " $i; i++ }
      if ($(i + 1) == want) {
        line = "deb" opts " " $i " " suite
        for (j = i + 2; j <= NF; j++) line = line " " $j
        print line; exit
      }
    }' /etc/apt/sources.list
}

# Is $BPO_SUITE already among apt's sources (ours or the host's)?
have_backports() {
  grep -qsE "(^|[[:space:]])$BPO_SUITE([[:space:]]|$)" /etc/apt/sources.list \
    /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

if [ -n "$bpo_missing" ] && [ "$CODENAME" = bookworm ] && ! have_backports; then
  stanza=$(backports_stanza)
  if [ -n "$stanza" ]; then
    printf '# Added by vgpu (scripts/install-deps.sh) for QEMU 10 and libvirt\n# 11, installed per package.\n%s\n' \
      "$stanza" | $SUDO tee "$BPO_LIST.tmp" >/dev/null
    $SUDO mv "$BPO_LIST.tmp" "$BPO_LIST"
  else
    line=$(backports_line)
    if [ -n "$line" ]; then
      BPO_LIST=/etc/apt/sources.list.d/vgpu-backports.list
      echo "$line" | $SUDO tee "$BPO_LIST" >/dev/null
    fi
  fi
  if [ -f "$BPO_LIST" ]; then
    echo "deps: added $BPO_SUITE to apt's sources ($BPO_LIST)"
  else
    bpo_skip="no Debian entry for $CODENAME in apt's sources to add $BPO_SUITE from"
  fi
fi

# Without QEMU 10 only the real-guest tests cannot run (they skip, saying
# so): a host whose mirror has no backports still gets everything else.
no_qemu() {
  echo "deps: QEMU 10 and libvirt 11 are not installed: $1; the real-guest tests will skip" >&2
  echo "deps: done, but for QEMU 10 and libvirt 11"
  exit 0
}

echo "deps: installing:$missing$bpo_missing"
if ! $SUDO apt-get update -q; then
  echo "deps: apt-get update reported errors (above); going on with the lists it has" >&2
fi
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  if ! $SUDO apt-get install -y -q --no-install-recommends $missing; then
    echo "deps: apt-get could not install:$missing" >&2
    exit 1
  fi
fi

if [ -n "$bpo_missing" ]; then
  [ -z "$bpo_skip" ] || no_qemu "$bpo_skip"
  targets=""
  for p in $bpo_missing; do
    # On a later release the plain suite already has new enough versions.
    if [ "$CODENAME" = bookworm ]; then targets="$targets $p/$BPO_SUITE"; else targets="$targets $p"; fi
  done
  mesa_before=$(installed_version $MESA_PKG)
  # apt takes a dependency from the named suite only where it can; one
  # whose suite version is required exactly or by a newer version than the
  # release has (qemu-system-common, qemu-system-data, seabios) must be
  # named too.  Found by simulating, a few rounds at most; Mesa is never
  # added, and a plan that would move Mesa is refused before anything is
  # changed.
  MESA_RE='libgl1-mesa-dri|libegl-mesa0|libgbm1|libglapi-mesa|libglx-mesa0'
  round=0
  while :; do
    # shellcheck disable=SC2086
    if plan=$($SUDO apt-get install -s -q --no-install-recommends $targets 2>&1); then
      break
    fi
    round=$((round + 1))
    more=$(echo "$plan" | sed -n 's/^.*Depends: \([a-z0-9][a-z0-9.+-]*\) .*$/\1/p' | sort -u |
      grep -vxE "$MESA_RE" || true)
    if [ "$CODENAME" != bookworm ] || [ -z "$more" ] || [ $round -gt 4 ]; then
      echo "$plan" >&2
      no_qemu "apt-get cannot install$targets"
    fi
    for p in $more; do targets="$targets $p/$BPO_SUITE"; done
  done
  if echo "$plan" | grep -qE "^Inst ($MESA_RE) "; then
    echo "$plan" | grep -E "^Inst ($MESA_RE) " >&2
    no_qemu "installing$targets would change Mesa (above), so it was not done"
  fi
  # shellcheck disable=SC2086
  if ! $SUDO apt-get install -y -q --no-install-recommends $targets; then
    echo "deps: apt-get could not install:$targets" >&2
    exit 1
  fi
  mesa_after=$(installed_version $MESA_PKG)
  # shellcheck disable=SC2254 # MESA_WANT is a pattern
  case "$mesa_after" in
    $MESA_WANT) ;;
    *)
      echo "deps: $MESA_PKG is now '$mesa_after' (was '$mesa_before'), not $MESA_WANT" >&2
      exit 1
      ;;
  esac
fi
echo "deps: done"
