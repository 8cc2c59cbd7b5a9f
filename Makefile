# CascadeSeg: `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
DEBS := pocl-opencl-icd ocl-icd-opencl-dev opencl-headers libzstd-dev libnifti-dev zlib1g-dev clinfo
DATA_DEBS := mricron-data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps data-deps build test demo bench fuzz tools clean

# Installs the Debian packages the build and the OpenCL runtime need, only when missing.
deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

data-deps:
	@dpkg -s $(DATA_DEBS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DATA_DEBS); }

build: deps
	swift build -c release

test: deps
	swift build --build-tests
	swift test

clean:
	rm -rf .build
