# memvisor: `make run` shows the main job, `make test` runs every suite.
# Both bootstrap the Debian packages they need first (as root).
BUILD ?= build

.PHONY: all bootstrap build run test bench clean

all: build

bootstrap:
	@scripts/bootstrap

build: bootstrap
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) >/dev/null
	@ninja -C $(BUILD) >/dev/null || ninja -C $(BUILD)

run: build
	@scripts/run-demo $(BUILD)

test: bootstrap
	@scripts/run-tests

bench: build
	@scripts/run-benchmarks $(BUILD)

clean:
	rm -rf build build-asan build-fuzz .state
