#!/bin/sh
# The part of scripts/check-virgl1.sh that runs inside the trixie build
# root, with the source tree at /src: build, unit suite, glxgears through
# vgpud.  Not meant to be run by hand.
set -eu

B=/src/build-virgl1
say() { echo "[check-virgl1] $*"; }
fail() {
  echo "[check-virgl1] error: $*" >&2
  exit 1
}
[ -f /src/meson.build ] || fail "run scripts/check-virgl1.sh, not this script"

# The Makefile's sanitizer settings (SAN_ENV).
export ASAN_OPTIONS=abort_on_error=0:strict_string_checks=1
export LSAN_OPTIONS=suppressions=/src/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

say "virglrenderer $(pkg-config --modversion virglrenderer) (Debian $(dpkg-query -W -f='${Version}' libvirglrenderer1)), Mesa $(dpkg-query -W -f='${Version}' libgl1-mesa-dri), $(gcc --version | head -n 1)"
opts="-Db_sanitize=address,undefined -Db_lundef=false --buildtype=debugoptimized -Dwerror=true"
export CC=gcc
# shellcheck disable=SC2086 # opts is a list of options
if [ -f "$B/meson-private/coredata.dat" ]; then
  meson setup --reconfigure "$B" /src $opts >"$B.setup.log" 2>&1 || {
    cat "$B.setup.log"
    fail "meson setup failed"
  }
else
  mkdir -p "$B"
  meson setup "$B" /src $opts >"$B.setup.log" 2>&1 || {
    cat "$B.setup.log"
    fail "meson setup failed"
  }
fi
rm -f "$B.setup.log"
say "what meson found in this virglrenderer:"
grep -E '^#define (HAVE_VIRGL[A-Z0-9_]*|VGPU_VIRGL_[A-Z0-9_]+) ' "$B/vgpu-config.h" | sed 's/^#define /  /'
ninja -C "$B" >"$B/ninja.out" 2>&1 || {
  tail -n 60 "$B/ninja.out"
  fail "build failed"
}
say "built: $(grep -c 'warning:' "$B/ninja.out" || true) compiler warnings"

say "unit suite"
urc=0
meson test -C "$B" --suite unit --print-errorlogs --num-processes 1 >"$B/unit.out" 2>&1 || urc=$?
grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Expected Fail|Unexpected Pass|Timeout):' "$B/unit.out"
[ "$urc" -eq 0 ] || {
  tail -n 80 "$B/unit.out"
  fail "unit suite failed"
}

# glxgears prints a frame rate every 5 s of rendering; it runs until it has
# printed one (or ended), at most GEARS_TIMEOUT s: under a sanitized build
# on a loaded machine its start-up alone can take several seconds, so a
# fixed run time would count frames by luck.
# gears SOCKET OUTPUT [ARGS]: exit status 0 when a rate was printed.
gears() {
  gsock=$1 gout=$2
  shift 2
  GALLIUM_DRIVER=virpipe VTEST_SOCKET_NAME=$gsock glxgears "$@" >"$gout" 2>&1 &
  gpid=$!
  gend=$(($(date +%s) + GEARS_TIMEOUT))
  while kill -0 "$gpid" 2>/dev/null && ! grep -q 'frames in' "$gout" &&
    [ "$(date +%s)" -lt "$gend" ]; do
    sleep 0.2
  done
  # SIGTERM: a command started with & in a script ignores SIGINT.
  kill -TERM "$gpid" 2>/dev/null || true
  wait "$gpid" 2>/dev/null || true
  grep -q 'frames in' "$gout"
}

say "end to end: vgpud of this build serving Mesa 25 glxgears until it prints a frame rate (at most ${GEARS_TIMEOUT} s)"
RUN=/tmp/vgpu-run
LOG=/tmp/vgpud.log
if [ "${VGPU_STRACE:-0}" = 1 ]; then
  mkdir -m 1777 /tmp/strace
  cat >/tmp/strace-worker <<EOF
#!/bin/sh
exec strace -f -qq -o /tmp/strace/worker.\$\$ $B/src/worker/vgpu-worker "\$@"
EOF
  chmod 755 /tmp/strace-worker
  export VGPU_WORKER=/tmp/strace-worker
fi
"$B/src/cli/vgpud" --foreground --runtime-dir "$RUN" >"$LOG" 2>&1 &
vpid=$!
stop_vgpud() {
  kill "$vpid" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
}
trap stop_vgpud EXIT
for _ in $(seq 300); do
  [ -S "$RUN/control.sock" ] && break
  kill -0 "$vpid" 2>/dev/null || {
    cat "$LOG"
    fail "vgpud stopped during start-up"
  }
  sleep 0.1
done
[ -S "$RUN/control.sock" ] || fail "vgpud did not listen within 30 s"
sock=$RUN/vgpu0/vtest.sock
[ -S "$sock" ] || fail "no instance socket $sock"

gears "$sock" /tmp/gears.out -info || {
  cat /tmp/gears.out
  tail -n 30 "$LOG"
  fail "glxgears printed no frame rate within ${GEARS_TIMEOUT} s"
}
sed -n 's/^GL_\(RENDERER\|VERSION\) *= */  GL_\1 = /p' /tmp/gears.out
grep 'frames in' /tmp/gears.out | sed 's/^/  /'
grep -q '^GL_RENDERER *= *virgl' /tmp/gears.out || {
  cat /tmp/gears.out
  tail -n 30 "$LOG"
  fail "glxgears did not render through virgl"
}
"$B/src/cli/vgpuctl" --runtime-dir "$RUN" status | sed 's/^/  /'
show=$("$B/src/cli/vgpuctl" --runtime-dir "$RUN" --json show vgpu0)
frames=$(printf '%s' "$show" | python3 -c 'import json, sys; print(json.load(sys.stdin)["instance"]["usage"]["frames"])')
say "vgpud counted $frames frames on vgpu0"
[ "$frames" -gt 0 ] || {
  sed 's/^/  glxgears| /' /tmp/gears.out
  tail -n 15 "$LOG" | sed 's/^/  vgpud| /'
  fail "vgpud counted no frames"
}
# The instance socket still answers once the client has gone.
python3 - "$sock" <<'PY' || fail "the instance socket does not accept connections"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.close()
PY
say "instance socket $sock accepts connections"
if grep -E 'protocol violation|crash|ERROR' "$LOG" >/dev/null; then
  grep -E 'protocol violation|crash|ERROR' "$LOG"
  fail "vgpud logged errors"
fi
stop_vgpud
trap - EXIT

# The reference: the same glxgears through this virglrenderer's own server.
if command -v virgl_test_server >/dev/null; then
  ref=/tmp/virgl-test.sock
  virgl_test_server --use-egl-surfaceless --socket-path="$ref" >/tmp/reference.log 2>&1 &
  rpid=$!
  for _ in $(seq 100); do
    [ -S "$ref" ] && break
    sleep 0.1
  done
  gears "$ref" /tmp/gears-reference.out || true
  kill "$rpid" 2>/dev/null || true
  wait "$rpid" 2>/dev/null || true
  say "for comparison, the same glxgears through virgl_test_server $(pkg-config --modversion virglrenderer):"
  grep 'frames in' /tmp/gears-reference.out | sed 's/^/  /' || echo "  (no frames: see /tmp/reference.log)"
fi

if [ "${VGPU_STRACE:-0}" = 1 ]; then
  say "system calls of the workers that failed with EPERM (the seccomp filter's answer):"
  cat /tmp/strace/worker.* | sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*= -1 EPERM.*/\1/p' | sort | uniq -c | sed 's/^/  /'
  say "all system calls of the workers:"
  cat /tmp/strace/worker.* | sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' | sort -u | tr '\n' ' '
  echo
fi
