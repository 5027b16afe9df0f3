#!/bin/bash
# PID 1 of the Alcubierre test VM (installed by build.sh as
# /sbin/alcubierre-vm-init and started with init= by run.sh).
#
# Mounts the usual file systems and the host's shared directory on /host,
# brings up QEMU user networking (10.0.2.15/24, gateway 10.0.2.2 = the host's
# 127.0.0.1), loads the initiator modules, starts iscsid, runs
# /host/<alcubierre.script> with its output on the console, writes its exit code
# to /host/.vm-exit-code and powers off at once. A setup failure powers off
# without writing an exit code.
#
# No `set -e`: PID 1 must always reach the power-off.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb

# Modules that must load; the run fails without them.
BASE_MODULES=(virtio_net 9pnet_virtio 9p)
STORAGE_MODULES=(nvme-fabrics nvme-tcp iscsi_tcp sd_mod dm-multipath)
# Nice to have; a failure only prints a warning. (dm path selectors and SCSI
# device handlers need no preloading: the kernel requests them on first use.)
OPTIONAL_MODULES=(configfs sg loop)

log() { echo "vm-init: $*"; }

power_off() {
	sync
	# Writing to sysrq-trigger works whatever kernel.sysrq says.
	echo o >/proc/sysrq-trigger
	sleep 5
	busybox poweroff -f
}

fatal() {
	log "FATAL: $*"
	power_off
}

uptime_s() {
	local up _
	read -r up _ </proc/uptime
	echo "$up"
}

mount -t proc proc /proc || fatal "cannot mount /proc"
# alcubierre.trace on the kernel command line traces this script with timestamps.
if [[ " $(</proc/cmdline) " == *" alcubierre.trace "* ]]; then
	PS4='+ ${EPOCHREALTIME} '
	set -x
fi

mount -t sysfs sysfs /sys || fatal "cannot mount /sys"

# Module loading is slow under TCG (about 1 s), so the storage modules load in
# the background, on the other vCPU, while the rest of the system comes up.
check_modules() {
	local missing=() m
	for m in "$@"; do
		[[ -d /sys/module/${m//-/_} ]] || missing+=("$m")
	done
	((${#missing[@]} == 0)) || fatal "required kernel modules failed to load: ${missing[*]}"
}
(
	modprobe -a "${STORAGE_MODULES[@]}"
	modprobe -a -q "${OPTIONAL_MODULES[@]}" || log "warning: some optional modules did not load"
) &
storage_pid=$!

# As few processes as possible from here on: each exec costs tens of
# milliseconds under TCG. The initrd already made /dev's links and directories.
if [[ $(</proc/mounts) != *" /dev devtmpfs "* ]]; then
	mount -t devtmpfs devtmpfs /dev || fatal "cannot mount /dev"
fi
for l in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do
	[[ -e /dev/${l%%:*} ]] || ln -sf "${l#*:}" "/dev/${l%%:*}"
done
[[ -d /dev/pts && -d /dev/shm ]] || mkdir -p /dev/pts /dev/shm
# The root file system is a throwaway snapshot, so /etc/fstab is written here.
printf '%s\n' \
	"/dev/vda / ext4 rw 0 0" \
	"devpts /dev/pts devpts gid=5,mode=620,ptmxmode=666 0 0" \
	"tmpfs /dev/shm tmpfs mode=1777 0 0" \
	"tmpfs /tmp tmpfs mode=1777 0 0" \
	"tmpfs /run tmpfs mode=755 0 0" >/etc/fstab
mount -a || fatal "cannot mount devpts and the tmpfs file systems"
mkdir -p /run/lock /host
echo alcubierre-vm >/proc/sys/kernel/hostname

modprobe -a "${BASE_MODULES[@]}"
check_modules "${BASE_MODULES[@]}"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /host ||
	fatal "cannot mount the host's shared directory (9p tag 'host') on /host"

ip link set lo up || fatal "cannot bring up lo"
netdev=""
for d in /sys/class/net/*; do
	d=${d##*/}
	[[ $d == lo ]] && continue
	netdev=$d
	break
done
[[ -n $netdev ]] || fatal "no network device"
if ! { ip link set "$netdev" up &&
	ip addr add 10.0.2.15/24 dev "$netdev" &&
	ip route add default via 10.0.2.2; }; then
	fatal "cannot configure $netdev"
fi

wait "$storage_pid"
check_modules "${STORAGE_MODULES[@]}"
if [[ -d /sys/kernel/config && $(</proc/mounts) != *" /sys/kernel/config configfs "* ]]; then
	mount -t configfs configfs /sys/kernel/config || log "warning: cannot mount configfs"
fi

if command -v iscsid >/dev/null; then
	iscsid || log "warning: iscsid did not start"
fi

script=""
for arg in $(</proc/cmdline); do
	case "$arg" in
	alcubierre.script=*) script=${arg#alcubierre.script=} ;;
	esac
done
[[ -n $script ]] || fatal "no alcubierre.script= on the kernel command line"

export ALCUBIERRE_VM=1 ALCUBIERRE_VM_HOST_IP=10.0.2.2
log "running /host/$script ($(</proc/sys/kernel/osrelease), $(uptime_s)s after kernel start)"
cd /host || fatal "cannot cd /host"
if [[ -x /host/$script ]]; then
	"/host/$script" </dev/null
else
	bash "/host/$script" </dev/null
fi
rc=$?
log "/host/$script exited with $rc ($(uptime_s)s after kernel start)"
cd /
# 9p writes through to the host at once (no cache), and run.sh reads the file
# only after QEMU has exited.
if ! echo "$rc" >/host/.vm-exit-code; then
	log "error: cannot write /host/.vm-exit-code"
fi
power_off
