#!/usr/bin/env bash
# Installs the Debian packages `make vm-box` and `make vm-test` need on the host, only those
# missing. Kept apart from scripts/install-deps.sh so `make deps` stays light: only the VM
# targets pull in QEMU, libvirt and Vagrant (~250 MiB, all from Debian's archive: vagrant-libvirt
# is a Debian package, so no plugin download). Needs root when something is missing.
set -euo pipefail

packages=(
	qemu-system-x86 qemu-utils                 # the VM, by software emulation (TCG)
	libvirt-daemon-system libvirt-clients      # libvirtd, virtlogd, virsh
	dnsmasq-base iptables ebtables             # libvirt's NAT network with DHCP for the VM
	vagrant vagrant-libvirt rsync openssh-client
	mmdebstrap fdisk                           # make vm-box: the Debian 12 guest from Debian's archive
)
need=()
for pkg in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = installed ] || need+=("$pkg")
done
((${#need[@]})) || exit 0
if [ "$(id -u)" != 0 ]; then
	echo "vm host-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
	exit 1
fi
echo "vm host-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
