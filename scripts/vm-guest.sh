#!/bin/sh
# Builds (once) and caches the guest of the real-guest tests: this host's
# Debian kernel and a small busybox initramfs holding the kernel's
# virtio-gpu modules (and 9p's, for guests that mount a host directory)
# and tests/vm/fbpattern, linked statically.
#
#   scripts/vm-guest.sh [DIR]                build DIR unless it is ready
#   scripts/vm-guest.sh --if-possible [DIR]  the same, but a machine that
#       lacks the parts (no Debian kernel, no static busybox, no C
#       compiler) only gets a note and exit 0: `make check` uses this
#   scripts/vm-guest.sh --print [DIR]        prints DIR when it is ready
#       (exit 0), else nothing (exit 1)
#
# DIR: $VGPU_VM_GUEST, else /var/cache/vgpu/vm-guest for root, else
# ${XDG_CACHE_HOME:-~/.cache}/vgpu/vm-guest.  It holds vmlinuz, initrd.gz,
# where the kernel can boot as a PVH guest (CONFIG_PVH) also vmlinux, the
# kernel taken out of its xz or gzip wrapper (QEMU then loads it directly:
# a TCG guest spent about 20 s of its 40 s boot decompressing itself), and
# a stamp naming what they were built from (this script, fbpattern.c,
# the kernel and busybox versions): while the stamp matches, this script
# returns at once; otherwise the files are rebuilt aside and renamed into
# place, under a lock.
#
# The guest's /init (kernel command line "vgpu.mode=2d"): loads the
# modules, waits for the virtio-gpu framebuffer, unbinds the framebuffer
# console, draws the pattern, prints "vgpu-guest: pattern written" with
# fbpattern's geometry line on the serial console, then idles until the
# host stops the VM.  Every line it prints starts with "vgpu-guest:".
#
# With "vgpu.mode=3d vgpu.gl=PATH" (and drm_kms_helper.fbdev_emulation=0:
# no framebuffer, so it waits for /dev/dri/card0 instead), /init mounts the
# read-only 9p export tagged "rootfs" (the host's own /, which holds Mesa
# and PATH) at /mnt with proc, sys, dev and a tmpfs /run, and in a chroot
# there runs PATH offscreen on the render node, then "PATH --kms" on card0,
# which holds its mode until the host stops the VM; each output line is
# printed as "vgpu-guest: gl: LINE", and "gl offscreen done" and
# "gl kms ended" follow each run.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
SRC="$HERE/../tests/vm/fbpattern.c"

mode=build
case "${1:-}" in
  --print | --if-possible)
    mode=${1#--}
    shift
    ;;
  -*)
    echo "usage: $0 [--if-possible | --print] [DIR]" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" -eq 0 ]; then
  DEF=/var/cache/vgpu/vm-guest
else
  DEF=${XDG_CACHE_HOME:-$HOME/.cache}/vgpu/vm-guest
fi
DIR=${1:-${VGPU_VM_GUEST:-$DEF}}
STAMP="$DIR/.vgpu-vm-guest"
CC=${CC_GUEST:-cc}
BUSYBOX=/bin/busybox
MODULES="virtio_pci virtio_gpu 9pnet_virtio 9p"

# The newest Debian kernel that has its modules here.
KVER=""
for k in $(for f in /boot/vmlinuz-*; do echo "${f#/boot/vmlinuz-}"; done | sort -V); do
  if [ -f "/boot/vmlinuz-$k" ] && [ -d "/lib/modules/$k" ]; then KVER=$k; fi
done

why_not() {
  if [ -z "$KVER" ]; then
    echo "no kernel in /boot with its modules in /lib/modules (make deps installs linux-image-amd64)"
  elif [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then # ldd fails on static ones
    echo "$BUSYBOX is not a static busybox (make deps installs busybox-static)"
  elif ! command -v "$CC" >/dev/null 2>&1; then
    echo "no C compiler ($CC) for the guest's fbpattern"
  elif ! command -v modprobe >/dev/null 2>&1 || ! command -v cpio >/dev/null 2>&1; then
    echo "modprobe or cpio is missing (make deps installs kmod and cpio)"
  fi
}

stamp_text() {
  # shellcheck disable=SC2016 # a dpkg-query format, not shell
  bb=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
  sum=$(cat "$0" "$SRC" | sha256sum | cut -d' ' -f1)
  echo "kernel=$KVER busybox=$bb sources=$sum"
}

ready() {
  [ -n "$KVER" ] && [ -f "$STAMP" ] && [ -f "$DIR/vmlinuz" ] && [ -f "$DIR/initrd.gz" ] &&
    [ "$(cat "$STAMP")" = "$(stamp_text)" ]
}

if [ "$mode" = print ]; then
  ready && echo "$DIR"
  exit $?
fi
reason=$(why_not)
if [ -n "$reason" ]; then
  if [ "$mode" = if-possible ]; then
    echo "vm-guest: not built: $reason; the real-guest tests will say so"
    exit 0
  fi
  echo "vm-guest: $reason" >&2
  exit 1
fi
if ready; then
  echo "vm-guest: ready ($DIR, kernel $KVER)"
  exit 0
fi

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
if ready; then
  echo "vm-guest: ready ($DIR, kernel $KVER)"
  exit 0
fi
STAGE=$(mktemp -d "$DIR/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT="$STAGE/root"
mkdir -p "$ROOT/bin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/tmp" "$ROOT/mnt" \
  "$ROOT/lib/modules"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for app in sh cat echo insmod mount sleep ls basename readlink grep cut dmesg poweroff chroot sed; do
  ln -s busybox "$ROOT/bin/$app"
done

# Each module with what it needs first, in load order, each once;
# built-in ones have no insmod line.
for m in $MODULES; do
  modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' >"$STAGE/ko"
: >"$ROOT/lib/modules/order"
while read -r ko; do
  name=$(basename "$ko")
  case "$ko" in
    *.ko.xz) xz -dc "$ko" >"$ROOT/lib/modules/${name%.xz}" && name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$ko" >"$ROOT/lib/modules/${name%.zst}" && name=${name%.zst} ;;
    *) cp "$ko" "$ROOT/lib/modules/$name" ;;
  esac
  echo "$name" >>"$ROOT/lib/modules/order"
done <"$STAGE/ko"
grep -q '^virtio-gpu.ko$' "$ROOT/lib/modules/order" || {
  echo "vm-guest: kernel $KVER has no virtio-gpu module" >&2
  exit 1
}

"$CC" -O2 -Wall -static -o "$ROOT/bin/fbpattern" "$SRC"

cat >"$ROOT/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "vgpu-guest: $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
stop() { say "$*"; while :; do sleep 3600; done; }
mode=
gl=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vgpu.mode=*) mode=${arg#vgpu.mode=} ;;
    vgpu.gl=*) gl=${arg#vgpu.gl=} ;;
  esac
done
say "init mode=$mode"
# insmod, unlike modprobe, does not read the kernel command line: hand each
# module its "module.param=value" words (drm_kms_helper.fbdev_emulation=0).
cmdline=$(cat /proc/cmdline)
for ko in $(cat /lib/modules/order); do
  name=$(echo "${ko%.ko}" | sed 's/-/_/g')
  params=
  for arg in $cmdline; do
    case "$arg" in "$name".*=*) params="$params ${arg#"$name".}" ;; esac
  done
  # shellcheck disable=SC2086 # one word per parameter
  insmod "/lib/modules/$ko" $params 2>/dev/null || say "insmod $ko failed"
done
# The driver binds asynchronously: wait (at most 20 s) for its framebuffer
# (3d mode: for its card; the kernel then runs without fbdev emulation).
dev=/dev/fb0
[ "$mode" != 3d ] || dev=/dev/dri/card0
n=0
while [ ! -e $dev ] && [ $n -lt 200 ]; do
  sleep 0.1
  n=$((n + 1))
done
# card0's device is the PCI function; the driver binds its virtio device.
drv=none
for d in /sys/bus/virtio/drivers/virtio_gpu/virtio*; do
  [ -e "$d" ] && [ -e /sys/class/drm/card0 ] && drv=virtio_gpu
done
say "card0 driver=$drv"
dmesg | grep -E '\[drm\]|virtio_gpu|fb0' | while read -r line; do echo "vgpu-guest: dmesg $line"; done
[ "$drv" = virtio_gpu ] || stop "FAILED: virtio_gpu did not bind"
[ -e $dev ] || stop "FAILED: no $dev"
if [ "$mode" = 3d ]; then
  [ -n "$gl" ] || stop "FAILED: no vgpu.gl= on the kernel command line"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose rootfs /mnt ||
    stop "FAILED: cannot mount the 9p root"
  for fs in proc sysfs:sys devtmpfs:dev tmpfs:run; do
    mount -t "${fs%%:*}" "${fs%%:*}" "/mnt/${fs#*:}" || stop "FAILED: cannot mount /mnt/${fs#*:}"
  done
  say "9p root mounted"
  glrun() {
    chroot /mnt /usr/bin/env -i PATH=/usr/bin:/bin HOME=/run XDG_CACHE_HOME=/run \
      MESA_SHADER_CACHE_DISABLE=true "$gl" "$@" 2>&1 |
      while read -r line; do echo "vgpu-guest: gl: $line"; done
  }
  glrun /dev/dri/renderD128
  say "gl offscreen done"
  glrun --kms /dev/dri/card0 3600
  stop "gl kms ended"
fi
# The console must not draw over the pattern.
for v in /sys/class/vtconsole/vtcon*; do
  grep -q 'frame buffer' "$v/name" 2>/dev/null && echo 0 >"$v/bind"
done
if [ "$mode" = 2d ]; then
  geometry=$(fbpattern draw /dev/fb0) || stop "FAILED: fbpattern draw"
  echo "vgpu-guest: $geometry"
  say "pattern written"
fi
stop "idle"
INIT
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -6 >"$STAGE/initrd.gz"
cp "/boot/vmlinuz-$KVER" "$STAGE/vmlinuz"
if grep -qx 'CONFIG_PVH=y' "/boot/config-$KVER" 2>/dev/null; then
  python3 - "$STAGE/vmlinuz" "$STAGE/vmlinux.packed" >/dev/null <<'PY' || true
import sys
data = open(sys.argv[1], "rb").read()
for magic in (b"\xfd7zXZ\x00", b"\x1f\x8b\x08"):  # xz, gzip
    at = data.find(magic)
    if at > 0:
        open(sys.argv[2], "wb").write(data[at:])
        break
PY
  if [ -f "$STAGE/vmlinux.packed" ]; then
    # one stream: the bzImage's trailer follows it
    if xz -dc --single-stream "$STAGE/vmlinux.packed" >"$STAGE/vmlinux" 2>/dev/null ||
      gzip -dc "$STAGE/vmlinux.packed" >"$STAGE/vmlinux" 2>/dev/null; then :; fi
    if [ "$(head -c 4 "$STAGE/vmlinux" 2>/dev/null | od -An -c | tr -d ' ')" != 177ELF ]; then
      rm -f "$STAGE/vmlinux"
    fi
  fi
fi
rm -f "$STAMP" "$DIR/vmlinux"
mv "$STAGE/vmlinuz" "$DIR/vmlinuz"
[ ! -f "$STAGE/vmlinux" ] || mv "$STAGE/vmlinux" "$DIR/vmlinux"
mv "$STAGE/initrd.gz" "$DIR/initrd.gz"
stamp_text >"$STAMP"
echo "vm-guest: built $DIR (kernel $KVER$([ -f "$DIR/vmlinux" ] && echo ", PVH vmlinux"), initrd $(du -k "$DIR/initrd.gz" | cut -f1) KiB)"
