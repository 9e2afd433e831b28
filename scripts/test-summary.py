#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' for a meson test log and exits 1
if anything failed.  Usage: test-summary.py BUILD_DIR [BUILD_DIR...]"""
import json
import os
import sys

PASSED = {"OK", "EXPECTEDFAIL"}
SKIPPED = {"SKIP"}

passed = failed = skipped = 0
failures = []
for build in sys.argv[1:]:
    log = os.path.join(build, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        print(f"test-summary: no test log in {build}", file=sys.stderr)
        failed += 1
        continue
    with open(log) as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            r = t.get("result")
            if r in PASSED:
                passed += 1
            elif r in SKIPPED:
                skipped += 1
            else:
                failed += 1
                failures.append(f"{t.get('name')} ({r})")
for name in failures:
    print(f"FAILED: {name}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
