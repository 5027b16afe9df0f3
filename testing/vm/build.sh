#!/usr/bin/env bash
# Builds the artifacts of the Alcubierre test VM: a small Debian bookworm guest
# with Linux's own NVMe/TCP and iSCSI initiators (see README.md beside this file).
#
# Usage: testing/vm/build.sh [--force]
#
# Everything goes to ${ALCUBIERRE_VM_CACHE:-/var/tmp/alcubierre-vm} (outside the
# repository). The script is idempotent: when the artifacts exist and their stamp
# matches this script's VM_BUILD_VERSION (and the hashes of the two guest init
# scripts), it returns at once. Bump VM_BUILD_VERSION to force a rebuild
# everywhere, or pass --force / delete the cache directory to rebuild here.
#
# Two stages:
#   1. rootfs tree (debootstrap + packages + pruning) and the kernel. Slow
#      (about a minute, network). Keyed on VM_BUILD_VERSION only.
#   2. guest init + initrd + ext4 image. A few seconds. Keyed on
#      VM_BUILD_VERSION and the hashes of guest-init.sh and initrd-init.sh, so
#      editing an init script does not redo stage 1.
set -euo pipefail

VM_BUILD_VERSION="alcubierre-vm-3"

SUITE=bookworm
# Guest packages (installed without recommends on top of --variant=minbase).
GUEST_PACKAGES=(
	linux-image-amd64 kmod
	nvme-cli fio open-iscsi multipath-tools
	iproute2 util-linux procps
	xfsprogs # the CSI node plugin's xfs volumes (mkfs.xfs, xfs_growfs)
	busybox-static # only its static binary is used, for the initrd
	python3-os-brick # os-brick, as a compute host's Nova uses it (the Cinder driver's attach test)
	dmidecode sg3-utils python3-psutil # what os-brick runs and imports besides the above
)
# Modules that must resolve (with all their dependencies) after pruning.
CHECK_MODULES=(
	virtio_pci virtio_blk virtio_net ext4 xfs crc32c_generic 9p 9pnet_virtio
	nvme-tcp nvme-fabrics nvmet nvmet-tcp null_blk loop
	iscsi_tcp sd_mod sg dm-multipath dm-round-robin dm-service-time
	target_core_mod target_core_iblock iscsi_target_mod configfs
)
# Modules the initrd loads to mount the root disk (virtio-blk, ext4).
INITRD_MODULES=(virtio_pci virtio_blk crc32c_generic ext4)
# Kernel module trees that the tests never need (relative to kernel/).
PRUNE_MODULES=(
	sound
	drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet
	drivers/net/usb drivers/net/can drivers/infiniband drivers/usb
	drivers/iio drivers/staging drivers/hid drivers/comedi drivers/isdn
	drivers/mmc drivers/mtd drivers/video drivers/hwmon drivers/bluetooth
	drivers/thunderbolt drivers/input drivers/watchdog drivers/platform
	drivers/nfc drivers/leds drivers/power drivers/pinctrl drivers/gnss
	net/wireless net/mac80211 net/bluetooth net/nfc
)
# Fixed initiator identities, so target-side ACLs in tests can name them.
GUEST_HOSTNQN="nqn.2014-08.org.nvmexpress:uuid:a1c0b1e2-0000-4000-8000-000000000001"
GUEST_HOSTID="a1c0b1e2-0000-4000-8000-000000000001"
GUEST_INITIATOR_IQN="iqn.2004-10.com.alcubierre:vm-guest"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ALCUBIERRE_VM_CACHE:-/var/tmp/alcubierre-vm}
GUEST_INIT_SRC=$HERE/guest-init.sh
INITRD_INIT_SRC=$HERE/initrd-init.sh

FORCE=0
case "${1:-}" in
"") ;;
--force) FORCE=1 ;;
-h | --help)
	sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "build.sh: unknown argument '$1' (usage: build.sh [--force])" >&2
	exit 2
	;;
esac

log() { echo "build.sh: $*" >&2; }
die() {
	echo "build.sh: error: $*" >&2
	exit 1
}

for f in "$GUEST_INIT_SRC" "$INITRD_INIT_SRC"; do
	[[ -f $f ]] || die "missing $f"
done

stage1_key() { printf 'version=%s\n' "$VM_BUILD_VERSION"; }
stage2_key() {
	stage1_key
	printf 'guest-init=%s\n' "$(sha256sum <"$GUEST_INIT_SRC" | cut -d' ' -f1)"
	printf 'initrd-init=%s\n' "$(sha256sum <"$INITRD_INIT_SRC" | cut -d' ' -f1)"
}
ARTIFACTS=(vmlinuz initrd.img rootfs.img kernel-version)

up_to_date() {
	[[ $FORCE == 0 && -f $CACHE/stamp ]] || return 1
	[[ "$(cat "$CACHE/stamp")" == "$(stage2_key)" ]] || return 1
	local a
	for a in "${ARTIFACTS[@]}"; do
		[[ -s $CACHE/$a ]] || return 1
	done
}

# Fast path: no lock, no root needed.
if up_to_date; then
	exit 0
fi

[[ $(id -u) == 0 ]] || die "the test VM is not built and building it needs root (debootstrap, chroot): run scripts/setup as root"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
# Someone else may have built it while we waited for the lock.
if up_to_date; then
	exit 0
fi

START=$EPOCHREALTIME
elapsed() { awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- host tools

# The host's Debian mirror, taken from its apt sources (deb822 or one-line).
host_mirror() {
	local m=""
	if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
		m=$(awk '/^URIs:/ { print $2 }' /etc/apt/sources.list.d/*.sources |
			grep -v -e security -e backports | grep -m1 '/debian/\?$' || true)
	fi
	if [[ -z $m && -f /etc/apt/sources.list ]]; then
		m=$(awk '$1 == "deb" && $2 !~ /^\[/ && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
	fi
	echo "$m"
}
MIRROR=${ALCUBIERRE_VM_MIRROR:-$(host_mirror)}
[[ -n $MIRROR ]] || die "no Debian mirror for bookworm in /etc/apt/sources.list{,.d/}; set ALCUBIERRE_VM_MIRROR"

have_backports() {
	local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
	local f
	for f in "${files[@]}"; do
		[[ -f $f ]] && grep -Eq '^[^#]*bookworm-backports' "$f" && return 0
	done
	return 1
}

APT_UPDATED=0
apt_install() {
	if [[ $APT_UPDATED == 0 ]]; then
		log "apt-get update"
		apt-get update -qq >&2 || die "apt-get update failed"
		APT_UPDATED=1
	fi
	log "installing on the host: $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
		die "apt-get install $* failed"
}

ensure_host_tools() {
	local -A need=(
		[debootstrap]=debootstrap [mkfs.ext4]=e2fsprogs [cpio]=cpio [xz]=xz-utils
		[flock]=util-linux [setpriv]=util-linux [readelf]=binutils
		[chroot]=coreutils [awk]=gawk
	)
	local missing=() cmd
	for cmd in "${!need[@]}"; do
		command -v "$cmd" >/dev/null || missing+=("${need[$cmd]}")
	done
	[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
	if ((${#missing[@]})); then
		# shellcheck disable=SC2046 # word splitting of the de-duplicated list is intended
		apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
	fi
	if ! command -v qemu-system-x86_64 >/dev/null; then
		# bookworm's own QEMU 7.2 conflicts with the qemu-utils 10 from backports.
		if ! have_backports; then
			log "adding bookworm-backports ($MIRROR) to /etc/apt/sources.list.d/bookworm-backports.sources"
			cat >/etc/apt/sources.list.d/bookworm-backports.sources <<-EOF
				Types: deb
				URIs: $MIRROR
				Suites: bookworm-backports
				Components: main
				Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
			EOF
			APT_UPDATED=0
		fi
		apt_install -t bookworm-backports qemu-system-x86
	fi
}

# ---------------------------------------------------------------- stage 1

ROOT_MOUNTS=()
unmount_chroot() {
	local i
	for ((i = ${#ROOT_MOUNTS[@]} - 1; i >= 0; i--)); do
		umount -l "${ROOT_MOUNTS[$i]}" 2>/dev/null || true
	done
	ROOT_MOUNTS=()
}
trap unmount_chroot EXIT

in_root() {
	DEBIAN_FRONTEND=noninteractive LC_ALL=C LANG=C \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$ROOT" "$@"
}

# Decompresses the vmlinux ELF embedded in a bzImage (like the kernel's
# scripts/extract-vmlinux, for xz, zstd and gzip payloads).
extract_vmlinux() {
	local img=$1 out=$2 magic decomp off
	for spec in '\xfd7zXZ\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -dcq' '\x1f\x8b\x08:gzip -dc'; do
		magic=${spec%%:*}
		decomp=${spec#*:}
		command -v "${decomp%% *}" >/dev/null || continue
		while read -r off; do
			# Trailing data after the stream makes the decompressor fail; the
			# ELF check below decides.
			# shellcheck disable=SC2086 # $decomp is a command with options
			tail -c "+$((off + 1))" "$img" | $decomp >"$out" 2>/dev/null || true
			if [[ "$(head -c4 "$out" | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]]; then
				return 0
			fi
		done < <(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1)
	done
	rm -f "$out"
	return 1
}

build_stage1() {
	local t0=$EPOCHREALTIME
	ROOT=$CACHE/rootfs.new
	rm -rf "$ROOT" "$CACHE/rootfs.stamp"
	mkdir -p "$ROOT"

	log "debootstrap $SUITE (minbase) from $MIRROR"
	debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $CACHE/debootstrap.log"

	# No docs, man pages or translations from here on.
	cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-alcubierre-nodoc" <<-'EOF'
		path-exclude=/usr/share/doc/*
		path-exclude=/usr/share/man/*
		path-exclude=/usr/share/info/*
		path-exclude=/usr/share/locale/*
		path-exclude=/usr/share/lintian/*
		path-exclude=/usr/share/linda/*
		path-exclude=/usr/share/bash-completion/*
		path-exclude=/usr/share/zsh/*
	EOF
	cat >"$ROOT/etc/apt/apt.conf.d/01-alcubierre" <<-'EOF'
		APT::Install-Recommends "false";
		APT::Install-Suggests "false";
		Acquire::Languages "none";
	EOF
	# No services are started in the chroot.
	printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
	chmod 755 "$ROOT/usr/sbin/policy-rc.d"
	# The guest boots with our own initrd, so no initramfs is generated.
	in_root dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
	ln -sf /bin/true "$ROOT/usr/sbin/update-initramfs"

	mount -t proc proc "$ROOT/proc"
	ROOT_MOUNTS+=("$ROOT/proc")
	cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

	log "installing guest packages: ${GUEST_PACKAGES[*]}"
	{
		in_root apt-get update &&
			in_root apt-get install -y --no-install-recommends "${GUEST_PACKAGES[@]}"
	} >"$CACHE/apt-guest.log" 2>&1 || die "installing guest packages failed; see $CACHE/apt-guest.log"
	in_root apt-get clean
	unmount_chroot

	local kver
	kver=$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -1)
	[[ -n $kver && -f $ROOT/boot/vmlinuz-$kver ]] || die "no kernel found in the guest"
	log "guest kernel $kver"

	log "pruning kernel modules"
	local p
	for p in "${PRUNE_MODULES[@]}"; do
		rm -rf "${ROOT:?}/lib/modules/$kver/kernel/$p"
	done
	in_root depmod -a "$kver"
	local m
	for m in "${CHECK_MODULES[@]}"; do
		in_root modprobe -S "$kver" --show-depends "$m" >/dev/null 2>&1 ||
			die "module $m (or one of its dependencies) is missing from the guest"
	done

	log "configuring the guest"
	echo alcubierre-vm >"$ROOT/etc/hostname"
	cat >"$ROOT/etc/hosts" <<-'EOF'
		127.0.0.1	localhost
		127.0.1.1	alcubierre-vm
		10.0.2.2	vm-host
		::1		localhost ip6-localhost ip6-loopback
	EOF
	: >"$ROOT/etc/resolv.conf"
	: >"$ROOT/etc/fstab"
	# /etc/target: LIO's db_root, for tests that run an iSCSI target in the guest.
	mkdir -p "$ROOT/etc/nvme" "$ROOT/etc/iscsi" "$ROOT/etc/target" "$ROOT/host"
	echo "$GUEST_HOSTNQN" >"$ROOT/etc/nvme/hostnqn"
	echo "$GUEST_HOSTID" >"$ROOT/etc/nvme/hostid"
	echo "InitiatorName=$GUEST_INITIATOR_IQN" >"$ROOT/etc/iscsi/initiatorname.iscsi"
	# iscsiadm would try systemctl to start iscsid; the guest init starts it.
	sed -i 's|^iscsid.startup = .*|iscsid.startup = /sbin/iscsid|' "$ROOT/etc/iscsi/iscsid.conf"
	# No root password; root's shell works on the console if anyone needs it.
	sed -i 's|^root:[^:]*:|root::|' "$ROOT/etc/shadow"

	log "copying the kernel out"
	cp "$ROOT/boot/vmlinuz-$kver" "$CACHE/vmlinuz.new"
	cp "$ROOT/boot/config-$kver" "$CACHE/config.new"
	# An uncompressed vmlinux boots through QEMU's PVH entry, which skips the
	# decompressor (slow under TCG). Only used when it has the PVH ELF note.
	rm -f "$CACHE/vmlinux" "$CACHE/vmlinux.new"
	if extract_vmlinux "$CACHE/vmlinuz.new" "$CACHE/vmlinux.new" &&
		readelf -n "$CACHE/vmlinux.new" 2>/dev/null | grep -Eq 'Xen.*(0x00000012|PHYS32_ENTRY)'; then
		log "extracted a PVH-bootable vmlinux"
	else
		log "no PVH-bootable vmlinux could be extracted; the guest boots the bzImage"
		rm -f "$CACHE/vmlinux.new"
	fi

	log "slimming the guest"
	rm -rf "$ROOT"/usr/share/{doc,man,info,locale,lintian,linda,bash-completion,zsh}/* \
		"$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
		"$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old \
		"$ROOT"/var/log/* "$ROOT"/boot/vmlinuz-* "$ROOT"/boot/System.map-* \
		"$ROOT"/usr/share/initramfs-tools "$ROOT"/etc/initramfs-tools \
		"$ROOT"/tmp/* "$ROOT"/var/tmp/*
	mkdir -p "$ROOT/usr/share/locale"

	echo "$kver" >"$CACHE/kernel-version.new"
	rm -rf "$CACHE/rootfs"
	mv "$ROOT" "$CACHE/rootfs"
	ROOT=$CACHE/rootfs
	mv "$CACHE/vmlinuz.new" "$CACHE/vmlinuz"
	mv "$CACHE/config.new" "$CACHE/config"
	[[ -f $CACHE/vmlinux.new ]] && mv "$CACHE/vmlinux.new" "$CACHE/vmlinux"
	mv "$CACHE/kernel-version.new" "$CACHE/kernel-version"
	stage1_key >"$CACHE/rootfs.stamp"
	log "stage 1 (rootfs + kernel) took $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
}

# ---------------------------------------------------------------- stage 2

build_initrd() {
	local kver=$1 out=$2 stage
	stage=$(mktemp -d "$CACHE/initrd.XXXXXX")
	mkdir -p "$stage"/{bin,dev,proc,sys,newroot,modules}
	cp "$ROOT/bin/busybox" "$stage/bin/busybox"
	install -m 0755 "$INITRD_INIT_SRC" "$stage/init"
	mknod -m 600 "$stage/dev/console" c 5 1
	mknod -m 666 "$stage/dev/null" c 1 3

	# Modules in dependency order, each once.
	local -A seen=()
	local m line ko base
	: >"$stage/modules/order"
	for m in "${INITRD_MODULES[@]}"; do
		while read -r line; do
			[[ $line == insmod\ * ]] || continue
			ko=$(awk '{ print $2 }' <<<"$line")
			base=${ko##*/}
			[[ -n ${seen[$base]:-} ]] && continue
			seen[$base]=1
			cp "$ROOT$ko" "$stage/modules/$base"
			echo "$base" >>"$stage/modules/order"
		done < <(in_root modprobe -S "$kver" --show-depends "$m")
	done
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out"
	rm -rf "$stage"
}

build_stage2() {
	local t0=$EPOCHREALTIME kver
	ROOT=$CACHE/rootfs
	kver=$(cat "$CACHE/kernel-version")

	install -m 0755 "$GUEST_INIT_SRC" "$ROOT/sbin/alcubierre-vm-init"

	log "building the initrd"
	build_initrd "$kver" "$CACHE/initrd.img.new"

	log "building the ext4 root image"
	local used_mb size_mb
	used_mb=$(du -sm --apparent-size "$ROOT" | cut -f1)
	# Room for tests that write to the root fs (-snapshot keeps it throwaway).
	size_mb=$((used_mb * 13 / 10 + 256))
	rm -f "$CACHE/rootfs.img.new"
	mkfs.ext4 -q -F -L alcubierre-root -O ^has_journal -i 8192 -m 0 \
		-d "$ROOT" "$CACHE/rootfs.img.new" "${size_mb}M" >/dev/null ||
		die "mkfs.ext4 -d failed"

	mv "$CACHE/initrd.img.new" "$CACHE/initrd.img"
	mv "$CACHE/rootfs.img.new" "$CACHE/rootfs.img"
	log "stage 2 (init, initrd, image) took $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
}

# ---------------------------------------------------------------- main

rm -f "$CACHE/stamp"
ensure_host_tools
if [[ $FORCE == 1 || ! -f $CACHE/rootfs.stamp || "$(cat "$CACHE/rootfs.stamp")" != "$(stage1_key)" ||
	! -d $CACHE/rootfs || ! -s $CACHE/vmlinuz || ! -s $CACHE/kernel-version ]]; then
	build_stage1
else
	log "stage 1 (rootfs + kernel) is up to date"
fi
build_stage2
stage2_key >"$CACHE/stamp"

log "done in $(elapsed)s: $CACHE (kernel $(cat "$CACHE/kernel-version"), image $(du -h --apparent-size "$CACHE/rootfs.img" | cut -f1), $(du -h "$CACHE/rootfs.img" | cut -f1) on disk)"
