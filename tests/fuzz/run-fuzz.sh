#!/bin/sh
# Runs a libFuzzer target on its corpus for VGPU_FUZZ_SECONDS (default 20).
# New inputs go to a scratch directory, so the committed corpus only changes
# when someone chooses to add to it.
set -eu
target=$1 corpus=$2
secs=${VGPU_FUZZ_SECONDS:-20}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
exec "$target" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix="${VGPU_FUZZ_ARTIFACTS:-$scratch}/" "$scratch" "$corpus"
