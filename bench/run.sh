#!/bin/sh
# Entry point for `make bench`: runs bench/bench.py with the system Python,
# and with BENCH_VM=1 also bench/vm3d.py (3D in a real guest), or with
# BENCH_VM=only just that.
# Environment knobs are documented in bench/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
case "${BENCH_VM:-0}" in
  only) exec "$PYTHON" "$here/vm3d.py" ;;
  1) "$PYTHON" "$here/bench.py" "$@" && exec "$PYTHON" "$here/vm3d.py" ;;
  *) exec "$PYTHON" "$here/bench.py" "$@" ;;
esac
