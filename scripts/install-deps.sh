#!/usr/bin/env bash
# Installs the Debian packages skfwd's build, tests and demo need, only those missing, so it is
# cheap to run before every `make test`. Needs root (apt-get) when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have ruby || need+=(ruby)          # Vagrantfile syntax check
have git || need+=(git)
have prometheus || need+=(prometheus) # the metrics integration test runs a real Prometheus (and promtool)
have clang || need+=(clang)        # make generate: compiles bpf/ (CI checks the committed objects)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -e /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
have haproxy || need+=(haproxy)    # make bench: the HAProxy 2.6 gateway chain
have iperf3 || need+=(iperf3)      # make bench: bulk throughput

if ((${#need[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "install-deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! have go; then
	echo "install-deps: no Go toolchain on PATH (expected /usr/local/go/bin)" >&2
	exit 1
fi
go mod download
