# skfwd: run `make help` for the targets.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: help build deps generate generate-check test test-unit test-netns lint docs fuzz demo bench bench-quick vagrant-check vm-box vm-test clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/skfwd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/skfwd ./cmd/skfwd

deps: ## install missing apt packages and Go modules
	@scripts/install-deps.sh

test: deps vagrant-check test-unit test-netns ## run every test (unit, netns integration; needs root)

test-unit: ## unit tests with the race detector
	$(GO) test -race -count=1 ./pkg/... ./cmd/... ./internal/...

DATA_PATHS ?= auto userspace sockmap

test-netns: ## integration tests: real multi-site networks in namespaces, once per data path (root)
	@for m in $(DATA_PATHS); do \
	  echo "== test/netns with data-path $$m"; \
	  SKFWD_TEST_DATA_PATH=$$m $(GO) test -count=1 -timeout 15m -v ./test/netns/ || exit 1; \
	done

generate: ## rebuild the BPF objects (bpf/ -> pkg/loader/skfwd_bpfel.{go,o}) with clang
	$(GO) generate ./pkg/loader/

generate-check: ## fail if the committed BPF objects differ from a fresh build
	@tmp=$$(mktemp -d) && cp pkg/loader/skfwd_bpfel.go pkg/loader/skfwd_bpfel.o $$tmp/ && \
	  $(GO) generate ./pkg/loader/ && \
	  if cmp -s $$tmp/skfwd_bpfel.o pkg/loader/skfwd_bpfel.o && cmp -s $$tmp/skfwd_bpfel.go pkg/loader/skfwd_bpfel.go; then \
	    rm -rf $$tmp; else echo "pkg/loader/skfwd_bpfel.* differ from a fresh build of bpf/: run make generate and commit"; rm -rf $$tmp; exit 1; fi

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

docs: ## regenerate docs/metrics.md from pkg/metrics (a unit test fails when it is stale)
	$(GO) run ./pkg/metrics/cmd/gendoc

fuzz: ## fuzz the tunnel codec and stream frames (30 s each)
	$(GO) test -run '^$$' -fuzz FuzzReadRequest -fuzztime 30s ./pkg/tunnel/
	$(GO) test -run '^$$' -fuzz FuzzReadAnswer -fuzztime 30s ./pkg/tunnel/
	$(GO) test -run '^$$' -fuzz FuzzStreamFrame -fuzztime 30s ./pkg/tunnel/
	$(GO) test -run '^$$' -fuzz FuzzReadAttach -fuzztime 30s ./pkg/tunnel/

DEMO_ARGS ?=

demo: deps build ## a live demo network in namespaces on this machine (root); for Grafana: DEMO_ARGS="-prometheus 127.0.0.1:9099 -hold"
	$(GO) run ./test/demo -skfwd bin/skfwd $(DEMO_ARGS)

bench: deps build ## benchmark vs direct routing and HAProxy (root, ~25 min); raw results in bench/results/
	$(GO) build -o bin/bench ./bench
	bin/bench -skfwd bin/skfwd

bench-quick: deps build ## the benchmark at a few seconds per workload, 1 repetition (root; CI)
	$(GO) test -count=1 ./bench/
	$(GO) build -o bin/bench ./bench
	bin/bench -skfwd bin/skfwd -quick

vagrant-check: ## syntax-check the Vagrantfile
	ruby -c Vagrantfile >/dev/null

vm-box: ## build the Debian 12 libvirt box offline from Debian's archive and register it with vagrant (root; cached)
	@scripts/vm/box.sh

vm-test: ## unit, BPF and netns suites in a Debian 12 VM (kernel 6.1, QEMU emulation, vagrant-libvirt; root)
	@scripts/vm/test.sh

clean: ## remove build output
	rm -rf bin out
