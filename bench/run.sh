#!/bin/sh
# Entry point for `make bench`: runs bench/bench.py with the system Python,
# then bench/sched.py (GPU-time scheduling; BENCH_SCHED=0 leaves it out,
# BENCH_SCHED=only runs just that), then bench/metrics.py (the cost of the
# metrics endpoint; BENCH_METRICS=0 leaves it out, BENCH_METRICS=only runs
# just that), and with BENCH_VM=1 also bench/vm3d.py (3D in a real guest),
# or with BENCH_VM=only just that (and sched.py or metrics.py only with
# BENCH_SCHED=1 or BENCH_METRICS=1).
# Environment knobs are documented in bench/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
if [ "${BENCH_VM:-0}" = only ]; then
  sched=${BENCH_SCHED:-0} metrics=${BENCH_METRICS:-0}
else
  sched=${BENCH_SCHED:-1} metrics=${BENCH_METRICS:-1}
fi
case "$sched" in
  only) exec "$PYTHON" "$here/sched.py" ;;
esac
case "$metrics" in
  only) exec "$PYTHON" "$here/metrics.py" ;;
esac
case "${BENCH_VM:-0}" in
  only) "$PYTHON" "$here/vm3d.py" ;;
  1) "$PYTHON" "$here/bench.py" "$@" && "$PYTHON" "$here/vm3d.py" ;;
  *) "$PYTHON" "$here/bench.py" "$@" ;;
esac
case "$sched" in
  0) ;;
  *) "$PYTHON" "$here/sched.py" ;;
esac
case "$metrics" in
  0) ;;
  *) exec "$PYTHON" "$here/metrics.py" ;;
esac
