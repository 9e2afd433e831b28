#!/bin/sh
# Entry point for `make bench`: runs bench/bench.py with the system Python,
# then bench/sched.py (GPU-time scheduling; BENCH_SCHED=0 leaves it out,
# BENCH_SCHED=only runs just that), and with BENCH_VM=1 also bench/vm3d.py
# (3D in a real guest), or with BENCH_VM=only just that (and sched.py only
# with BENCH_SCHED=1).
# Environment knobs are documented in bench/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if [ "${BENCH_VM:-0}" = only ]; then sched=${BENCH_SCHED:-0}; else sched=${BENCH_SCHED:-1}; fi
case "$sched" in
  only) exec "$PYTHON" "$here/sched.py" ;;
esac
case "${BENCH_VM:-0}" in
  only) "$PYTHON" "$here/vm3d.py" ;;
  1) "$PYTHON" "$here/bench.py" "$@" && "$PYTHON" "$here/vm3d.py" ;;
  *) "$PYTHON" "$here/bench.py" "$@" ;;
esac
case "$sched" in
  0) ;;
  *) exec "$PYTHON" "$here/sched.py" ;;
esac
