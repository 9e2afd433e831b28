#!/usr/bin/env bash
# make demo: starts vgpud on its embedded configuration in a private runtime
# directory, runs glxgears on vgpu0 and vgpu1 at the same time for about
# ten seconds (each on its own Xvfb screen, so both windows can be captured
# by name), prints which Mesa the clients use and a table per instance, and
# saves a PNG of each window in out/demo/.  Stops everything it started, also on failure or Ctrl-C.
#
# Usage: scripts/demo.sh [BUILD_DIR]   (default build; DEMO_SECONDS=10)
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
VGPUD=$BUILD/src/cli/vgpud
VGPUCTL=$BUILD/src/cli/vgpuctl
VGPU_RUN=$BUILD/src/cli/vgpu-run
XSHOT=$BUILD/tools/vgpu-xshot
OUT=$PWD/out/demo
SECONDS_TO_RUN=${DEMO_SECONDS:-10}
INSTANCES=(vgpu0 vgpu1)

say() { echo "[demo] $*"; }
fail() { echo "[demo] error: $*" >&2; exit 1; }

for p in "$VGPUD" "$VGPUCTL" "$VGPU_RUN"; do
  [ -x "$p" ] || fail "$p is missing: run 'make build' first"
done
for p in Xvfb glxgears python3; do
  command -v "$p" >/dev/null || fail "$p is missing: run 'make deps' first"
done
case $SECONDS_TO_RUN in
  '' | *[!0-9]*) fail "DEMO_SECONDS must be a whole number of seconds" ;;
esac

mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vgpu-demo.XXXXXX")
RUNDIR=$TMP/run
LOG=$TMP/vgpud.log
# Process groups (each started through setsid) to stop at the end, newest
# first: clients, then Xvfb, then vgpud.
GROUPS_STARTED=()
declare -A PID

# shellcheck disable=SC2317 # run by the traps below
cleanup() {
  local rc=$? i pg
  trap - EXIT INT TERM
  say "stopping everything the demo started"
  for ((i = ${#GROUPS_STARTED[@]} - 1; i >= 0; i--)); do
    kill -TERM -- "-${GROUPS_STARTED[i]}" 2>/dev/null || true
  done
  for pg in "${GROUPS_STARTED[@]}"; do
    for _ in $(seq 50); do
      kill -0 -- "-$pg" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pg" 2>/dev/null || true
  done
  wait "${GROUPS_STARTED[@]}" 2>/dev/null || true
  # The runtime directory goes; vgpud's log stays where the user can read it.
  [ -f "$LOG" ] && cp "$LOG" "$OUT/vgpud.log"
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in a new session (its own process group).
start() {
  local name=$1
  shift
  setsid "$@" &
  GROUPS_STARTED+=("$!")
  PID[$name]=$!
}

# A sleep the shell can be interrupted in: traps run at once, not after it.
pause() {
  sleep "$1" &
  wait "$!"
}

wait_for() { # wait_for SECONDS WHAT TEST...
  local limit=$1 what=$2
  shift 2
  for _ in $(seq $((limit * 10))); do
    "$@" && return 0
    pause 0.1
  done
  fail "timed out waiting for $what"
}

say "starting vgpud (embedded configuration) in $RUNDIR, log $LOG"
start vgpud "$VGPUD" --foreground --runtime-dir "$RUNDIR" >"$LOG" 2>&1
# shellcheck disable=SC2317 # called through wait_for
vgpud_ready() {
  if ! kill -0 "${PID[vgpud]}" 2>/dev/null; then
    tail -n 20 "$LOG" >&2
    fail "vgpud stopped during start-up (its log is above)"
  fi
  test -S "$RUNDIR/control.sock"
}
wait_for 30 "vgpud (see $LOG)" vgpud_ready
"$VGPUCTL" --runtime-dir "$RUNDIR" list

# One Xvfb per instance: both programs name their window "glxgears", and a
# screen each keeps the capture by name unambiguous.  -displayfd lets Xvfb
# pick a free display number itself.
declare -A DISPLAY_OF
for inst in "${INSTANCES[@]}"; do
  start "xvfb_$inst" Xvfb -displayfd 3 -screen 0 640x480x24 -nolisten tcp \
    3>"$TMP/display-$inst" >/dev/null 2>&1
  wait_for 20 "Xvfb for $inst" test -s "$TMP/display-$inst"
  DISPLAY_OF[$inst]=:$(tr -dc 0-9 <"$TMP/display-$inst")
  say "Xvfb ${DISPLAY_OF[$inst]} is $inst's screen"
done

# Which Mesa the clients use, and how vgpu-run connects it (vgpu-run(1)).
mesa=$(dpkg-query -W -f='${Version}' libgl1-mesa-dri 2>/dev/null || echo unknown)
say "client Mesa: this host's, libgl1-mesa-dri $mesa (vgpu serves Mesa 22.3 through a private"
say "  mount namespace for its fixed /tmp/.virgl_test, and Mesa 24/25 through VTEST_SOCKET_NAME"
say "  with vtest protocol 3; README.md, 'Supported Mesa versions')"
"$VGPU_RUN" --runtime-dir "$RUNDIR" --instance "${INSTANCES[0]}" --verbose -- true 2>&1 |
  sed -n 's/^vgpu-run: \(Mesa driver\|no Mesa driver\)/[demo] vgpu-run: \1/p'

say "running glxgears on ${INSTANCES[*]} at the same time for $SECONDS_TO_RUN s"
for inst in "${INSTANCES[@]}"; do
  # timeout -s INT: glxgears prints its last frame rate and exits cleanly
  DISPLAY=${DISPLAY_OF[$inst]} start "gears_$inst" "$VGPU_RUN" --runtime-dir "$RUNDIR" \
    --instance "$inst" -- timeout -s INT $((SECONDS_TO_RUN + 1)) glxgears -info \
    >"$TMP/gears-$inst.out" 2>&1
done

pause $((SECONDS_TO_RUN * 6 / 10))
for inst in "${INSTANCES[@]}"; do
  say "vgpuctl --json show $inst"
  "$VGPUCTL" --runtime-dir "$RUNDIR" --json show "$inst" >"$TMP/show-$inst.json"
  if [ -x "$XSHOT" ]; then
    "$XSHOT" --display "${DISPLAY_OF[$inst]}" --name glxgears --output "$OUT/$inst.png" \
      >/dev/null || rm -f "$OUT/$inst.png"
  fi
done

for inst in "${INSTANCES[@]}"; do
  wait "${PID[gears_$inst]}" || true
done

# The table: renderer and frame rate from glxgears' own output, the rest
# from vgpud as vgpuctl reported it mid-run.
table() { # table INSTANCE
  local inst=$1 out=$TMP/gears-$1.out renderer fps shot
  renderer=$(sed -n 's/^GL_RENDERER *= *//p' "$out" | head -n 1)
  glversion=$(sed -n 's/^GL_VERSION *= *//p' "$out" | head -n 1)
  fps=$(grep -o '= [0-9.]* FPS' "$out" | awk '{ s += $2; n++ } END { if (n) printf "%.0f", s / n }' || true)
  shot="(vgpu-xshot not built or no window)"
  [ -f "$OUT/$inst.png" ] && shot=$OUT/$inst.png
  python3 - "$TMP/show-$inst.json" "${renderer:-(none: see the output below)}" "${fps:--}" "$shot" \
    "${glversion:--}" <<'PY'
import json, sys
path, renderer, fps, shot, glversion = sys.argv[1:]
s = json.load(open(path))["instance"]
u, l = s["usage"], s["limits"]

def size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024

def limit(v):
    return str(v) if v else "unlimited"

rows = [("renderer", renderer), ("GL version (Mesa)", glversion), ("frames per second", fps),
        ("VRAM used / limit", f"{size(u['vram'])} / {size(l['vram']) if l['vram'] else 'unlimited'}"),
        ("resources", f"{u['resources']} / {limit(l['resources'])}"),
        ("clients", f"{u['clients']} / {limit(l['clients'])}"),
        ("screenshot", shot)]
print(f"== {s['name']} (profile {s['profile']}) ==")
for k, v in rows:
    print(f"  {k:<18} {v}")
PY
  if [ -z "$renderer" ] || [ -z "$fps" ]; then
    sed 's/^/  | /' "$out"
  fi
  echo
}

echo
ok=0
for inst in "${INSTANCES[@]}"; do
  table "$inst"
  grep -q '^GL_RENDERER *= *virgl' "$TMP/gears-$inst.out" || ok=1
done
for inst in "${INSTANCES[@]}"; do
  [ -f "$OUT/$inst.png" ] && say "screenshot of $inst: $OUT/$inst.png"
done
say "vgpud's log: $OUT/vgpud.log"
[ "$ok" -eq 0 ] || fail "a program did not render through virgl (see above)"
exit 0
