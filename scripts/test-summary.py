#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' for meson test logs and exits 1
if anything failed.  Usage: test-summary.py [--no-summary] BUILD_DIR...
--no-summary names the failures but leaves the summary line out (.ci/run
prints it itself as its last line)."""
import json
import os
import sys

# meson's result values
PASSED = {"OK", "EXPECTEDFAIL"}
SKIPPED = {"SKIP"}
FAILED = {"FAIL", "TIMEOUT", "ERROR", "UNEXPECTEDPASS"}

args = sys.argv[1:]
summary = "--no-summary" not in args
builds = [a for a in args if a != "--no-summary"]

passed = failed = skipped = 0
failures = []
for build in builds:
    log = os.path.join(build, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        # no log: the build or meson itself failed before any test ran
        print(f"test-summary: no test log in {build}", file=sys.stderr)
        failed += 1
        continue
    with open(log) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                t = json.loads(line)
            except json.JSONDecodeError:
                failed += 1
                failures.append(f"(unreadable line in {log})")
                continue
            r = t.get("result")
            if r in PASSED:
                passed += 1
            elif r in SKIPPED:
                skipped += 1
            else:
                # FAILED and anything unknown: never count it as a pass
                failed += 1
                failures.append(f"{t.get('name')} ({r})")
for name in failures:
    print(f"FAILED: {name}")
if summary:
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
