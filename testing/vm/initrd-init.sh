#!/bin/busybox sh
# shellcheck shell=dash
# /init of the Alcubierre test VM's initrd (built by build.sh; runs as PID 1
# under busybox). Debian's kernel has virtio and ext4 as modules, so this loads
# them, mounts the root disk and hands over to the real init (init= on the
# kernel command line). Any failure powers the guest off at once, and run.sh
# then reports that the guest gave no exit code.

/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "initrd: error: $*"
	poweroff -f
	sleep 10
}

mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs"
mount -t proc proc /proc || fail "cannot mount /proc"

# A failure is not fatal: some modules (crc32c-intel) need CPU features the
# guest CPU may lack. The mount below decides.
while read -r m; do
	insmod "/modules/$m" 2>/dev/null || echo "initrd: warning: insmod $m failed"
done </modules/order

root=/dev/vda
init=/sbin/init
rootflags=rw
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	init=*) init=${arg#init=} ;;
	ro) rootflags=ro ;;
	esac
done

i=0
while [ ! -b "$root" ]; do
	i=$((i + 1))
	[ "$i" -gt 500 ] && fail "root device $root did not appear"
	usleep 10000
done

mount -t ext4 -o "$rootflags" "$root" /newroot || fail "cannot mount $root on /newroot"
[ -x "/newroot$init" ] || fail "$init is not an executable in the root file system"
# What the real init would otherwise spend several (slow) processes on.
mkdir -p /dev/pts /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mount --move /dev /newroot/dev || fail "cannot move /dev"
umount /proc
exec switch_root /newroot "$init"
