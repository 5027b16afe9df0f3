#!/bin/bash
# Self-test of the Alcubierre test VM, run inside the guest by selftest.sh
# (through run.sh). Proves the guest's initiator tooling end to end against
# targets inside the guest itself (the guest kernel's own nvmet and LIO), and
# that the guest reaches a TCP listener on the host's 127.0.0.1 via 10.0.2.2.
#
# Reads from /host: http-port and token.txt (written by selftest.sh; the host
# serves token.txt over HTTP on 127.0.0.1:<http-port>). Without them the
# host-reachability step fails.
#
# Prints "selftest: N passed, M failed" last and exits non-zero on any failure.
# shellcheck disable=SC2317 # cleanup and poll functions are called indirectly
set -uo pipefail

NVME_NQN=nqn.2024-01.io.alcubierre:selftest
ISCSI_IQN=iqn.2024-01.io.alcubierre:selftest
NVMET=/sys/kernel/config/nvmet
LIO=/sys/kernel/config/target

passed=0
failed=0
failed_steps=()

# Runs one step in a subshell with `set -e`; a failing command fails the step.
step() {
	local name=$1 t0=$EPOCHREALTIME rc
	shift
	echo
	echo "=== selftest: $name"
	("$@")
	rc=$?
	local took
	took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	if ((rc == 0)); then
		echo "=== PASS: $name (${took}s)"
		passed=$((passed + 1))
	else
		echo "=== FAIL: $name (exit $rc, ${took}s)"
		failed=$((failed + 1))
		failed_steps+=("$name")
	fi
}

# Waits up to $1 seconds for the command in "${@:2}" to succeed.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

ensure_configfs() {
	mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
}

fio_verify() {
	local dev=$1
	fio --name="verify-${dev##*/}" --filename="$dev" --direct=1 --ioengine=libaio \
		--iodepth=16 --rw=randwrite --bs=4k --size=32M --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --eta=never
}

# ------------------------------------------------------------------ steps

versions() {
	set -e
	echo "kernel:      $(uname -r) ($(uname -v))"
	echo "nvme-cli:    $(nvme version)"
	echo "fio:         $(fio --version)"
	echo "open-iscsi:  $(iscsiadm --version)"
	echo "multipath:   $( (multipath -h 2>&1 || true) | head -n1)"
	echo "cpus:        $(nproc), memory: $(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo)"
}

modules() {
	set -e
	modprobe nvme-tcp
	modprobe nvme-fabrics
	modprobe iscsi_tcp
	modprobe dm-multipath
	local m
	for m in nvme_tcp nvme_fabrics nvme_core iscsi_tcp libiscsi scsi_transport_iscsi dm_multipath dm_mod 9p virtio_net; do
		[[ -d /sys/module/$m ]] || {
			echo "module $m is not loaded"
			return 1
		}
	done
	echo "loaded: nvme_tcp nvme_fabrics iscsi_tcp dm_multipath (and their dependencies)"
	[[ -c /dev/nvme-fabrics ]] || {
		echo "/dev/nvme-fabrics is missing"
		return 1
	}
	pgrep -x iscsid >/dev/null || {
		echo "iscsid is not running"
		return 1
	}
	echo "/dev/nvme-fabrics present, iscsid running"
}

host_tcp() {
	set -e
	local port token body
	port=$(cat /host/http-port)
	token=$(cat /host/token.txt)
	exec 3<>"/dev/tcp/${ALCUBIERRE_VM_HOST_IP:-10.0.2.2}/$port"
	printf 'GET /token.txt HTTP/1.0\r\nHost: vm-host\r\n\r\n' >&3
	body=$(cat <&3 | tr -d '\r' | sed '1,/^$/d')
	exec 3>&-
	echo "fetched http://10.0.2.2:$port/token.txt: '$body'"
	[[ $body == "$token" ]] || {
		echo "expected '$token'"
		return 1
	}
}

nvme_tcp_loopback() {
	set -e
	# Not local: the EXIT trap (run when the step's subshell ends) needs them.
	loopdev="" sub=$NVMET/subsystems/$NVME_NQN port=$NVMET/ports/1 before="" dev=""
	cleanup() {
		set +e
		nvme disconnect -n "$NVME_NQN" >/dev/null 2>&1
		rm -f "$port/subsystems/$NVME_NQN"
		[[ -d $port ]] && rmdir "$port"
		[[ -d $sub/namespaces/1 ]] && echo 0 >"$sub/namespaces/1/enable" && rmdir "$sub/namespaces/1"
		[[ -d $sub ]] && rmdir "$sub"
		[[ -n $loopdev ]] && losetup -d "$loopdev"
		rm -f /tmp/nvme-ns.img
	}
	trap cleanup EXIT

	modprobe nvmet
	modprobe nvmet-tcp
	modprobe loop
	ensure_configfs
	truncate -s 128M /tmp/nvme-ns.img
	loopdev=$(losetup -f --show /tmp/nvme-ns.img)
	echo "target: nvmet subsystem $NVME_NQN, namespace 1 on $loopdev, tcp 127.0.0.1:4420"
	mkdir "$sub"
	echo 1 >"$sub/attr_allow_any_host"
	mkdir "$sub/namespaces/1"
	echo -n "$loopdev" >"$sub/namespaces/1/device_path"
	echo 1 >"$sub/namespaces/1/enable"
	mkdir "$port"
	echo ipv4 >"$port/addr_adrfam"
	echo tcp >"$port/addr_trtype"
	echo 127.0.0.1 >"$port/addr_traddr"
	echo 4420 >"$port/addr_trsvcid"
	ln -s "$sub" "$port/subsystems/$NVME_NQN"

	echo "--- nvme discover -t tcp -a 127.0.0.1 -s 4420"
	nvme discover -t tcp -a 127.0.0.1 -s 4420 | tee /tmp/nvme-discover.txt
	grep -q "subnqn: *$NVME_NQN" /tmp/nvme-discover.txt

	before=$(ls /dev/nvme*n* 2>/dev/null || true)
	echo "--- nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NVME_NQN"
	nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NVME_NQN"
	new_nvme_dev() {
		local d
		for d in /dev/nvme*n*; do
			[[ -b $d && $d != *c* ]] || continue
			grep -qxF "$d" <<<"$before" && continue
			dev=$d
			return 0
		done
		return 1
	}
	wait_for 20 new_nvme_dev
	echo "--- nvme list"
	nvme list
	nvme list | grep -q "${dev##*/}"
	echo "--- fio verify on $dev"
	fio_verify "$dev"
	echo "--- nvme disconnect -n $NVME_NQN"
	nvme disconnect -n "$NVME_NQN" | tee /tmp/nvme-disconnect.txt
	grep -q 'disconnected 1 controller' /tmp/nvme-disconnect.txt
	wait_for 10 test ! -b "$dev"
}

iscsi_loopback() {
	set -e
	# Not local: the EXIT trap (run when the step's subshell ends) needs them.
	loopdev="" tpg=$LIO/iscsi/$ISCSI_IQN/tpgt_1 bs=$LIO/core/iblock_0/selftest dev="" sd="" mp=""
	cleanup() {
		set +e
		[[ -n $mp ]] && dmsetup remove --noudevsync "$mp"
		iscsiadm -m node -T "$ISCSI_IQN" -p 127.0.0.1:3260 --logout >/dev/null 2>&1
		iscsiadm -m node -T "$ISCSI_IQN" -p 127.0.0.1:3260 -o delete >/dev/null 2>&1
		[[ -d $tpg ]] && echo 0 >"$tpg/enable"
		rm -f "$tpg/lun/lun_0/selftest"
		[[ -d $tpg/lun/lun_0 ]] && rmdir "$tpg/lun/lun_0"
		[[ -d $tpg/np/127.0.0.1:3260 ]] && rmdir "$tpg/np/127.0.0.1:3260"
		[[ -d $tpg ]] && rmdir "$tpg"
		[[ -d $LIO/iscsi/$ISCSI_IQN ]] && rmdir "$LIO/iscsi/$ISCSI_IQN"
		[[ -d $bs ]] && rmdir "$bs"
		[[ -d ${bs%/*} ]] && rmdir "${bs%/*}"
		[[ -n $loopdev ]] && losetup -d "$loopdev"
		rm -f /tmp/iscsi-lun.img
	}
	trap cleanup EXIT

	modprobe target_core_mod
	modprobe target_core_iblock
	modprobe iscsi_target_mod
	modprobe loop
	ensure_configfs
	truncate -s 128M /tmp/iscsi-lun.img
	loopdev=$(losetup -f --show /tmp/iscsi-lun.img)
	echo "target: LIO $ISCSI_IQN, LUN 0 on $loopdev, 127.0.0.1:3260"
	mkdir -p "$bs"
	echo "udev_path=$loopdev" >"$bs/control"
	echo 1 >"$bs/enable"
	mkdir -p "$tpg/lun/lun_0"
	ln -s "$bs" "$tpg/lun/lun_0/selftest"
	mkdir "$tpg/np/127.0.0.1:3260"
	echo 0 >"$tpg/attrib/authentication"
	echo 1 >"$tpg/attrib/generate_node_acls"
	echo 1 >"$tpg/attrib/cache_dynamic_acls"
	echo 0 >"$tpg/attrib/demo_mode_write_protect"
	echo 1 >"$tpg/enable"

	echo "--- iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260"
	iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 | tee /tmp/iscsi-discovery.txt
	grep -q "$ISCSI_IQN" /tmp/iscsi-discovery.txt
	echo "--- iscsiadm -m node -T $ISCSI_IQN -p 127.0.0.1:3260 --login"
	iscsiadm -m node -T "$ISCSI_IQN" -p 127.0.0.1:3260 --login
	attached_disk() {
		sd=$(iscsiadm -m session -P 3 2>/dev/null | awk '/Attached scsi disk/ { print $4; exit }')
		[[ -n $sd && -b /dev/$sd ]]
	}
	wait_for 20 attached_disk
	dev=/dev/$sd
	echo "--- iscsiadm -m session"
	iscsiadm -m session
	echo "attached disk: $dev ($(cat "/sys/block/$sd/device/vendor") $(cat "/sys/block/$sd/device/model"))"
	echo "--- fio verify on $dev"
	fio_verify "$dev"

	# dm-multipath: a one-path multipath map on the iSCSI disk (no udev in the guest).
	mp=selftest-mpath
	echo "--- dmsetup create $mp (multipath target, round-robin over $dev)"
	dmsetup create --noudevsync "$mp" \
		--table "0 $(blockdev --getsz "$dev") multipath 0 0 1 1 round-robin 0 1 1 $dev 1000"
	dmsetup table "$mp"
	dmsetup status "$mp"
	[[ -b /dev/mapper/$mp ]] || dmsetup mknodes "$mp"
	# The data fio wrote through the plain disk reads back through the map.
	cmp -n 1048576 "$dev" "/dev/mapper/$mp"
	echo "read 1 MiB through /dev/mapper/$mp: identical to $dev"
	dmsetup remove --noudevsync "$mp"
	mp=""

	echo "--- iscsiadm --logout"
	iscsiadm -m node -T "$ISCSI_IQN" -p 127.0.0.1:3260 --logout
	wait_for 10 test ! -b "$dev"
}

step "versions" versions
step "initiator modules (nvme-tcp, nvme-fabrics, iscsi_tcp, dm-multipath)" modules
step "guest reaches the host's 127.0.0.1 via 10.0.2.2" host_tcp
step "NVMe/TCP loopback (nvmet target, nvme-cli initiator, fio verify)" nvme_tcp_loopback
step "iSCSI loopback (LIO target, open-iscsi initiator, fio verify, dm-multipath)" iscsi_loopback

echo
if ((failed > 0)); then
	echo "failed steps: ${failed_steps[*]}"
fi
echo "selftest: $passed passed, $failed failed"
((failed == 0))
