#!/usr/bin/env bash
# Runs inside the VM, as root, from the synced folder (scripts/vm/test.sh calls it over ssh):
# the test binaries built on the host (out/vm/, listed in out/vm/manifest as "suite package
# binary"), each from its package directory as `go test` would, so relative paths to testdata,
# docs and dashboards resolve. The netns suite runs once per data path with the prebuilt,
# race-enabled out/vm/skfwd. Prints the kernel each suite ran on and a summary; exits non-zero
# when a suite failed.
#
#   guest-run.sh SUITES MODES [BPF_SKIP] [NETNS_SKIP] [NETNS_RUN]
#     SUITES      "unit bpf netns" (any subset)
#     MODES       netns data paths: "userspace auto sockmap" (any subset)
#     BPF_SKIP    -test.skip pattern for the BPF suite ("" = skip nothing)
#     NETNS_SKIP  -test.skip pattern for the netns suite ("" = skip nothing)
#     NETNS_RUN   -test.run pattern for the netns suite ("" = every test)
set -uo pipefail

suites=${1:-unit bpf netns}
modes=${2:-userspace auto sockmap}
bpf_skip=${3:-}
netns_skip=${4:-}
netns_run=${5:-}
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=$top/out/vm
[ -f "$dir/manifest" ] || { echo "guest-run: no $dir/manifest (run make vm-test on the host)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "guest-run: needs root" >&2; exit 2; }

kernel=$(uname -r)
# Debian's real patch level is only in /proc/version ("Debian 6.1.158-1"): uname -r says 6.1.0-NN.
debian=$(grep -o 'Debian [0-9][^ )]*' /proc/version | tail -1)
echo "guest: Linux $kernel${debian:+ ($debian)}, $(nproc) vCPU, $(awk '/MemTotal/ {printf "%d MiB", $2/1024}' /proc/meminfo)"
if command -v bpftool >/dev/null; then
	echo "guest: bpftool feature probe (the program and map types skfwd uses):"
	probe=$(bpftool feature probe kernel 2>&1)
	rc=$?
	grep -E '(program_type sk_skb|map_type (sockmap|sockhash|ringbuf)) ' <<<"$probe" | sed 's/^/  /' ||
		echo "  bpftool feature probe kernel: exit $rc: $(tail -1 <<<"$probe")"
fi

summary=()
failed=0
run() { # run SUITE PKGDIR BINARY LABEL ENV... -- ARGS...
	local suite=$1 pkg=$2 bin=$3 label=$4 start rc
	shift 4
	local -a env=()
	while [ "$1" != -- ]; do env+=("$1"); shift; done
	shift
	echo
	echo "== $suite $label on Linux $kernel${debian:+ ($debian)}"
	start=$SECONDS
	(cd "$top/$pkg" && env "${env[@]}" "$dir/$bin" "$@")
	rc=$?
	local verdict=ok
	[ $rc = 0 ] || { verdict="FAIL (exit $rc)"; failed=1; }
	echo "== $suite $label: $verdict in $((SECONDS - start)) s"
	summary+=("$(printf '%-6s %-40s %-18s %5d s  %s' "$suite" "$label" "$kernel" $((SECONDS - start)) "$verdict")")
}

want() { [[ " $suites " == *" $1 "* ]]; }

while read -r suite pkg bin; do
	case $suite in
	unit)
		want unit || continue
		run unit "$pkg" "$bin" "$pkg" -- -test.count=1 -test.timeout=10m
		;;
	bpf)
		want bpf || continue
		run bpf "$pkg" "$bin" "$pkg" -- -test.count=1 -test.timeout=10m -test.v ${bpf_skip:+-test.skip "$bpf_skip"}
		;;
	netns)
		want netns || continue
		for m in $modes; do
			run netns "$pkg" "$bin" "$pkg data-path $m" SKFWD_TEST_DATA_PATH="$m" SKFWD_TEST_SKFWD_BIN="$dir/skfwd" -- \
				-test.count=1 -test.timeout=15m -test.v ${netns_skip:+-test.skip "$netns_skip"} ${netns_run:+-test.run "$netns_run"}
		done
		;;
	esac
done <"$dir/manifest"

echo
echo "== summary (guest)"
printf '%s\n' "${summary[@]}"
exit $failed
