#!/usr/bin/env bash
# make vm-box: builds a Debian 12 (bookworm) box for vagrant-libvirt offline, from Debian's
# archive only (the host's own apt sources), with Debian 12's own kernel, and registers it with
# vagrant. Cached: when a box built by this same script from the same sources is registered,
# nothing is done. Prints nothing on stdout but the box's name, so callers can capture it.
#
#   SKFWD_VM_CACHE   where the box and the VM's disks live (default /var/cache/skfwd-vm)
#   SKFWD_VM_MIRROR  a Debian mirror URI to use instead of the host's bookworm apt sources
#   SKFWD_VM_REBUILD=1  build even when an up-to-date box exists (e.g. to take a newer kernel)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${SKFWD_VM_CACHE:-/var/cache/skfwd-vm}
label=skfwd-root
# What the guest needs besides a bootable system: the netns suite drives `ip netns`, the
# metrics test runs a real Prometheus (and promtool), vagrant's rsync synced folder needs
# rsync, and bpftool shows the kernel's BPF features in the report.
guest_packages=(
	linux-image-amd64 initramfs-tools grub-pc e2fsprogs
	systemd-sysv udev dbus openssh-server sudo procps
	iproute2 rsync bpftool prometheus
)

log() { echo "vm-box: $*" >&2; }
die() { log "$*"; exit 1; }

# apt_sources prints the host's apt source files that point at bookworm: the guest is built from
# exactly the archive (and snapshot, if pinned) the host installs from.
apt_sources() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && grep -Eq '^[^#]*\bbookworm\b' "$f" && echo "$f"
	done
	return 0
}

# mirrors prints the mmdebstrap mirror arguments, one per line.
mirrors() {
	if [ -n "${SKFWD_VM_MIRROR:-}" ]; then
		echo "$SKFWD_VM_MIRROR"
		return
	fi
	local found
	found=$(apt_sources)
	[ -n "$found" ] || die "no bookworm entry in /etc/apt/sources.list{,.d/}: set SKFWD_VM_MIRROR=http://deb.debian.org/debian (a Debian mirror) to build the Debian 12 guest"
	echo "$found"
}

# box_key names a box by everything it is built from, so a change to this script or to the
# sources gives a new box (and the old one is dropped).
box_key() {
	{
		cat "$0"
		mirrors | while read -r m; do if [ -f "$m" ]; then cat "$m"; else echo "$m"; fi; done
	} | sha256sum | cut -c1-12
}

registered() { vagrant box list --machine-readable 2>/dev/null | grep -q ",box-name,$1\$"; }

# --- the build, in a scratch directory removed (with its mounts and loop device) on any exit ---
work='' loopdev='' mnt=''
cleanup() {
	set +e
	if [ -n "$mnt" ] && mountpoint -q "$mnt"; then umount -R "$mnt"; fi
	if [ -n "$loopdev" ]; then
		partx -d "$loopdev" 2>/dev/null
		losetup -d "$loopdev"
	fi
	[ -n "$work" ] && rm -rf "$work"
}

build_rootfs() {
	local -a args=()
	local m
	while read -r m; do args+=("$m"); done < <(mirrors)
	log "mmdebstrap bookworm (${guest_packages[*]})"
	mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${guest_packages[*]}")" \
		bookworm "$mnt" "${args[@]}"
}

make_disk() {
	local raw=$1
	truncate -s 8G "$raw"
	echo 'start=2048, type=83, bootable' | sfdisk --quiet --label dos "$raw"
	loopdev=$(losetup --find --show --partscan "$raw")
	# The partition node can appear late (or not at all inside containers): ask for it.
	[ -e "${loopdev}p1" ] || partx -a "$loopdev" 2>/dev/null || true
	for _ in $(seq 50); do [ -e "${loopdev}p1" ] && break; sleep 0.1; done
	[ -e "${loopdev}p1" ] || die "no partition device ${loopdev}p1 after losetup --partscan"
	mkfs.ext4 -q -L "$label" "${loopdev}p1"
	mount "${loopdev}p1" "$mnt"
}

configure_guest() {
	local root=$1 kernel
	kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -1)
	kernel=${kernel#vmlinuz-}
	echo "LABEL=$label / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"
	echo skfwd-vm >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tskfwd-vm\n' >"$root/etc/hosts"
	printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/50-dhcp.network"

	chroot "$root" useradd --create-home --shell /bin/bash vagrant
	echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
	chmod 0440 "$root/etc/sudoers.d/vagrant"
	# Vagrant's well-known insecure key, shipped in Debian's vagrant package; vagrant swaps it
	# for a fresh key on first boot.
	local pub
	pub=$(find /usr/share/rubygems-integration/all/gems -path '*/vagrant-*/keys/vagrant.pub' 2>/dev/null | head -1)
	[ -n "$pub" ] || die "vagrant's insecure public key (keys/vagrant.pub) not found: apt-get install vagrant"
	install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
	install -m 0600 -o 1000 -g 1000 "$pub" "$root/home/vagrant/.ssh/authorized_keys"

	chroot "$root" systemctl enable --quiet systemd-networkd
	# Under software emulation every background job costs test time: the system Prometheus
	# (the test runs its own) and apt's and the filesystems' timers stay off.
	chroot "$root" systemctl mask --quiet prometheus.service apt-daily.timer apt-daily-upgrade.timer \
		e2scrub_all.timer fstrim.timer systemd-networkd-wait-online.service

	mount --bind /dev "$root/dev"
	mount -t proc proc "$root/proc"
	mount -t sysfs sysfs "$root/sys"
	chroot "$root" grub-install --target=i386-pc --modules="part_msdos ext2" "$loopdev" 2>&1 | grep -Ev '^(Installing for|Installation finished)' >&2 || true
	[ -e "$root/boot/grub/i386-pc/core.img" ] || die "grub-install failed"
	# A fixed grub.cfg: grub-mkconfig in a chroot would name the loop device as root.
	cat >"$root/boot/grub/grub.cfg" <<-EOF
		set timeout=0
		search --no-floppy --label $label --set=root
		linux /boot/vmlinuz-$kernel root=LABEL=$label ro console=tty0 console=ttyS0,115200n8
		initrd /boot/initrd.img-$kernel
		boot
	EOF
	umount "$root/sys" "$root/proc" "$root/dev"
	# shellcheck disable=SC2016 # ${Version} is dpkg-query's, not the shell's
	log "guest kernel $kernel (Debian $(chroot "$root" dpkg-query -W -f='${Version}' "linux-image-$kernel"))"
}

pack_box() {
	local raw=$1 out=$2 dir=$work/box
	mkdir -p "$dir"
	qemu-img convert -c -O qcow2 "$raw" "$dir/box.img"
	echo '{"provider":"libvirt","format":"qcow2","virtual_size":8}' >"$dir/metadata.json"
	cat >"$dir/Vagrantfile" <<-'EOF'
		# skfwd's Debian 12 test box (scripts/vm/box.sh); the project's Vagrantfile sets the rest.
		Vagrant.configure("2") do |config|
		end
	EOF
	tar -C "$dir" -cf "$out.tmp" metadata.json Vagrantfile box.img
	mv "$out.tmp" "$out"
}

main() {
	[ "$(id -u)" = 0 ] || die "needs root (loop devices, mounts, chroot): run it with sudo"
	"$here/host-deps.sh" >&2
	mkdir -p "$cache/box"
	exec 9>"$cache/box/lock"
	flock 9
	local key name file
	key=$(box_key)
	name=skfwd/debian12-$key
	file=$cache/box/debian12-$key.box
	if [ "${SKFWD_VM_REBUILD:-0}" != 1 ] && [ -s "$file" ]; then
		registered "$name" || vagrant box add --name "$name" "$file" >&2
		echo "$name" >"$cache/box/current"
		echo "$name"
		return
	fi

	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	local started=$SECONDS
	work=$(mktemp -d "$cache/box/build.XXXXXX")
	mnt=$work/root
	mkdir "$mnt"
	make_disk "$work/disk.raw"
	build_rootfs
	configure_guest "$mnt"
	# Blocks freed in the image (apt's downloaded packages) still hold data and would bloat
	# the compressed box: discard them, which punches holes in the loop device's file.
	fstrim "$mnt"
	umount "$mnt"
	partx -d "$loopdev" 2>/dev/null || true
	losetup -d "$loopdev"
	loopdev=
	pack_box "$work/disk.raw" "$file"

	# Drop boxes of earlier builds, then register this one.
	local old
	for old in $(vagrant box list --machine-readable | awk -F, '$3 == "box-name" && $4 ~ /^skfwd\/debian12-/ {print $4}'); do
		vagrant box remove --force --all "$old" >&2 || true
	done
	find "$cache/box" -maxdepth 1 -name 'debian12-*.box' ! -name "debian12-$key.box" -delete
	# ... and their images vagrant-libvirt uploaded to make vm-test's storage pool.
	if [ -d "$cache/pool" ]; then
		find "$cache/pool" -maxdepth 1 -name 'skfwd-VAGRANTSLASH-debian12-*' ! -name "*-${key}_*" -delete
	fi
	vagrant box add --force --name "$name" "$file" >&2
	echo "$name" >"$cache/box/current"
	log "built $name in $((SECONDS - started)) s: $file ($(du -h "$file" | cut -f1))"
	echo "$name"
}

main "$@"
