# vgpu: the two commands a new user runs are `make demo` and `make check`.
# Everything else is here for developers and CI.

MESON ?= meson
BUILD ?= build
BUILD_SAN ?= build-san
BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 60
# check: how long each fuzz target runs inside `make check`
CHECK_FUZZ_SECONDS ?= 20
# .ci/run passes --no-summary and prints the summary itself, last
SUMMARY_ARGS ?=
# check leaves the piglit conformance suite to `make conformance`; .ci/run
# empties this to run both in one pass
CHECK_ARGS ?= --no-suite conformance

# Sanitizer runs: Mesa, LLVM, EGL and virglrenderer keep allocations until
# exit; tests/lsan.supp names those libraries (never our code).
SAN_ENV = ASAN_OPTIONS=abort_on_error=0:strict_string_checks=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# $(call meson_setup,DIR,OPTIONS): an existing build directory is
# reconfigured with the same options, so a changed option or a half-made
# directory is repaired instead of reused as it is.
meson_setup = if [ -f $(1)/meson-private/coredata.dat ]; then \
    $(MESON) setup --reconfigure $(1) $(2) >/dev/null; \
  else \
    $(MESON) setup $(1) $(2); \
  fi

SAN_OPTS = -Db_sanitize=address,undefined -Db_lundef=false -Dfuzzing=true \
  --buildtype=debugoptimized

.PHONY: all deps mesa-root vm-guest build build-san check check-virgl1 conformance demo bench fuzz install clean help

all: build

help:
	@echo "make demo    set up, build, and show real GL programs on two vGPUs"
	@echo "make check   set up, build with ASan/UBSan, run every test but the piglit set"
	@echo "make conformance  the piglit set (hundreds of tests, ~10 min) against stored results"
	@echo "make check-virgl1  build and test against virglrenderer 1.x in a cached Debian 13 root"
	@echo "make bench   benchmarks against native llvmpipe and virgl_test_server, then GPU-time sharing (BENCH_SCHED=0|only) and the metrics endpoint's cost (BENCH_METRICS=0|only; BENCH_VM=1: also 3D in a QEMU guest)"
	@echo "make fuzz    run the libFuzzer targets for FUZZ_SECONDS (default 60)"
	@echo "make mesa-root  build (once, cached) the Debian 13 root with Mesa 25's clients"
	@echo "make vm-guest   build (once, cached) the kernel and initramfs of the real-guest tests"
	@echo "make deps | build | install | clean"

deps:
	@sh scripts/install-deps.sh

# The Debian 13 root with Mesa 25's clients that the client-compatibility
# tests and the benchmarks use (scripts/mesa-root.sh): built once, from this
# host's Debian mirror, then cached.  Where no mirror is reachable it is
# left out with a note, and the tests that need it skip saying so.
mesa-root:
	@sh scripts/mesa-root.sh --if-possible

# The real-guest tests' kernel and initramfs (scripts/vm-guest.sh): built
# once from this host's Debian kernel and busybox, then cached.  Where
# those are missing it is left out with a note, and the real-guest tests
# fail naming what is missing.
vm-guest: deps
	@sh scripts/vm-guest.sh --if-possible

build: deps
	@$(call meson_setup,$(BUILD),--buildtype=release -Db_ndebug=false)
	ninja -C $(BUILD)

# One clang build with ASan+UBSan serves the unit, integration and fuzz
# suites, so everything `make check` runs is sanitized.
build-san: deps
	@export CC=clang; $(call meson_setup,$(BUILD_SAN),$(SAN_OPTS) -Dwerror=true)
	ninja -C $(BUILD_SAN)

# meson's own exit status is ignored: the summary decides, from the log.
check: build-san mesa-root vm-guest
	@rm -f $(BUILD_SAN)/meson-logs/testlog.json
	-$(SAN_ENV) VGPU_FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS) \
	  $(MESON) test -C $(BUILD_SAN) --print-errorlogs --num-processes 1 $(CHECK_ARGS)
	@python3 scripts/test-summary.py $(SUMMARY_ARGS) $(BUILD_SAN)

# The piglit set of tests/integration/piglit-expected.txt, every line.
conformance: build-san
	@rm -f $(BUILD_SAN)/meson-logs/testlog.json
	-$(SAN_ENV) $(MESON) test -C $(BUILD_SAN) --print-errorlogs --suite conformance
	@python3 scripts/test-summary.py $(SUMMARY_ARGS) $(BUILD_SAN)

# The same sources built and run against Debian 13's virglrenderer 1.x in a
# cached trixie root (build-virgl1 inside it): unit suite and glxgears
# through vgpud.  Needs root; the host's libraries stay as they are.
check-virgl1: deps
	@sh scripts/check-virgl1.sh; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 77 ]

demo: build
	@bash scripts/demo.sh $(BUILD)

bench: build mesa-root
	@sh bench/run.sh

fuzz: deps
	@export CC=clang; $(call meson_setup,$(BUILD_FUZZ),$(SAN_OPTS))
	ninja -C $(BUILD_FUZZ)
	$(SAN_ENV) VGPU_FUZZ_SECONDS=$(FUZZ_SECONDS) \
	  $(MESON) test -C $(BUILD_FUZZ) --suite fuzz --print-errorlogs --timeout-multiplier 0

install: build
	$(MESON) install -C $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ) build-virgl1 build-nosched out
