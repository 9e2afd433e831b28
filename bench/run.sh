#!/bin/sh
# Entry point for `make bench`: runs bench/bench.py with the system Python.
# Environment knobs are documented in bench/README.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
exec "$PYTHON" "$here/bench.py" "$@"
