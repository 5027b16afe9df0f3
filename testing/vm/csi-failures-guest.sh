#!/bin/bash
# Guest half of crates/cli/tests/vm_csi_failures.rs: the CSI driver when a Kubernetes node dies,
# driven step by step as the kubelet and the CSI sidecars would (/host/csi_call). The VM boots
# twice, as two machines (./phase says which): node-a stages and publishes a volume, writes data,
# has its node plugin killed (kill -9) and restarted while fio writes (the I/O goes on, the
# mounts are adopted), and then loses power mid-write; node-b finds the volume published to the
# dead node (FAILED_PRECONDITION), force-unpublishes it from node-a (the controller fences the
# dead host), stages it, verifies the data, expands it online, and tears everything down; then
# an iSCSI volume with xfs goes through the same cycle. Reads ./params.sh (API, TOKEN).
set -euxo pipefail
. ./params.sh
. ./path-loss-writes.sh
PHASE=$(cat phase)
NODE=node-$PHASE

# This boot is its own machine: its own NVMe host NQN and Host Identifier, and iSCSI IQN.
case $PHASE in
a) HOSTID=6f1c3a52-0a0b-4c1d-9e2f-00000000000a ;;
b) HOSTID=6f1c3a52-0a0b-4c1d-9e2f-00000000000b ;;
esac
mkdir -p /etc/nvme /etc/iscsi
echo "nqn.2014-08.org.nvmexpress:uuid:$HOSTID" >/etc/nvme/hostnqn
echo "$HOSTID" >/etc/nvme/hostid
echo "InitiatorName=iqn.2005-03.org.open-iscsi:$NODE" >/etc/iscsi/initiatorname.iscsi
mkdir -p /run/lock/iscsi
# iscsid (started by the guest's init) reads the initiator name when it starts.
if [ -e /run/iscsid.pid ]; then
	kill "$(cat /run/iscsid.pid)"
	sleep 1
fi
iscsid

/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 30
multipathd
trap 'dmesg | tail -30; tail -60 csi-$NODE.log 2>/dev/null; tail -20 ctl-$NODE.log 2>/dev/null' EXIT

CTL=unix:///run/csi-ctl.sock
SOCK=unix:///run/csi-node.sock
call() { /host/csi_call "$@"; }
# field KEY: the value of KEY= in csi_call's answer on stdin.
field() { sed -n "s/^$1=//p"; }

start_controller() {
	RUST_LOG=info /host/alcubierre-csi --mode controller --endpoint $CTL --api "$API" \
		--token "$TOKEN" >>ctl-$NODE.log 2>&1 &
	wait_socket /run/csi-ctl.sock
}
start_node_plugin() {
	RUST_LOG=info /host/alcubierre-csi --mode node --endpoint $SOCK --api "$API" --token "$TOKEN" \
		--node-id $NODE --state-dir /var/lib/alcubierre-csi >>csi-$NODE.log 2>&1 &
	PLUGIN=$!
	wait_socket /run/csi-node.sock
}
# teardown VOL: what the kubelet and the sidecars do when the pod and its claim go.
teardown() {
	call --endpoint $SOCK node-unpublish "$1" $TARGET
	call --endpoint $SOCK unstage "$1" $STAGE
	call --endpoint $CTL unpublish "$1" $NODE
	call --endpoint $CTL delete "$1"
}
# timed LABEL CMD...: runs CMD and prints how long it took.
timed() {
	local label=$1 t0
	shift
	t0=$(date +%s%N)
	"$@"
	echo "STEP $label $((($(date +%s%N) - t0) / 1000000)) ms"
}
wait_socket() {
	for _ in $(seq 200); do
		[ -S "$1" ] && return 0
		sleep 0.1
	done
	echo "no socket $1" >&2
	return 1
}

STAGE=/var/lib/kubelet/plugins/kubernetes.io/csi/csi.alcubierre.io/pv1/globalmount
TARGET=/var/lib/kubelet/pods/pod-$PHASE/volumes/kubernetes.io~csi/pv1/mount
rm -f /run/csi-ctl.sock /run/csi-node.sock
start_controller
start_node_plugin

if [ "$PHASE" = a ]; then
	VOL=$(call --endpoint $CTL create pvc-failover 67108864 | field volume_id)
	echo "$VOL" >vol-id
	call --endpoint $CTL publish "$VOL" node-a
	call --endpoint $SOCK stage "$VOL" $STAGE
	call --endpoint $SOCK node-publish "$VOL" $STAGE $TARGET
	head -c 8388608 /dev/urandom >$TARGET/data.bin
	sync
	sha256sum <$TARGET/data.bin | cut -d' ' -f1 >data.sha
	echo "A-WROTE $(cat data.sha)"

	# The node plugin is killed and restarted while a pod writes: the I/O goes on, and the
	# restarted plugin adopts the staged volume and its mounts.
	fio --name=restart --directory=$TARGET --rw=randwrite --bs=4k --size=16m --ioengine=libaio \
		--iodepth=8 --direct=1 --rate_iops=,300 --verify=crc32c --do_verify=1 --verify_fatal=1 --output=fio-restart.txt &
	FIO=$!
	sleep 5
	kill -9 $PLUGIN
	wait $PLUGIN || true
	echo "PLUGIN-KILLED"
	sleep 2
	rm -f /run/csi-node.sock
	start_node_plugin
	echo "PLUGIN-RESTARTED"
	call --endpoint $SOCK stats "$VOL" $TARGET | tee stats.txt
	grep -qx "abnormal=false" stats.txt
	# The kubelet's retries after a restart: each finds its work done.
	call --endpoint $SOCK stage "$VOL" $STAGE
	call --endpoint $SOCK node-publish "$VOL" $STAGE $TARGET
	[ "$(findmnt -n -o SOURCE $TARGET | wc -l)" = 1 ]
	wait $FIO
	cat fio-restart.txt
	grep -q "err= 0" fio-restart.txt
	echo "RESTART-KEPT-IO"

	# Power is cut while a pod writes (no unmount, no sync, no goodbye).
	fio --name=dying --directory=$TARGET --rw=randwrite --bs=4k --size=16m --ioengine=libaio \
		--iodepth=8 --direct=1 --rate_iops=,300 --runtime=600 --time_based >/dev/null 2>&1 &
	sleep 3
	echo 1 >/proc/sys/kernel/sysrq
	echo "A-POWER-CUT"
	echo o >/proc/sysrq-trigger
	sleep 60
	exit 1
fi

# Phase b: node-a died with the volume published and staged.
VOL=$(cat vol-id)
set +e
call --endpoint $CTL publish "$VOL" node-b >refused.txt
rc=$?
set -e
cat refused.txt
[ $rc = 3 ]
grep -qx "error=FailedPrecondition" refused.txt
grep -q "published to node node-a" refused.txt
echo "PUBLISH-REFUSED-WHILE-ON-DEAD-NODE"
# What Kubernetes does once node-a is marked out of service: the attach-detach controller
# force-unpublishes the volume from it; the controller fences the dead host.
t0=$(date +%s%N)
timed unpublish-fence call --endpoint $CTL unpublish "$VOL" node-a
timed publish call --endpoint $CTL publish "$VOL" node-b
timed stage call --endpoint $SOCK stage "$VOL" $STAGE
timed node-publish call --endpoint $SOCK node-publish "$VOL" $STAGE $TARGET
t1=$(date +%s%N)
echo "TAKEOVER-MS $(((t1 - t0) / 1000000))"
# The unpublish fenced node-a (a force detach: access and reservations gone), not a plain detach.
grep "fenced node node-a off volume $VOL" ctl-$NODE.log
[ "$(sha256sum <$TARGET/data.bin | cut -d' ' -f1)" = "$(cat data.sha)" ]
echo "DATA-VERIFIED-ON-B"

# A path lost (the first node's portal dropped by a filter): NodeGetVolumeStats reports the
# volume abnormal, naming the portal; healthy again once the path is back.
tc qdisc add dev eth0 root handle 1: prio
tc filter add dev eth0 parent 1: protocol ip u32 match ip dport 4471 0xffff action drop
stats_until() {
	for _ in $(seq 120); do
		call --endpoint $SOCK stats "$VOL" $TARGET >stats.txt
		grep -qx "abnormal=$1" stats.txt && return 0
		sleep 0.5
	done
	cat stats.txt
	return 1
}
stats_until true
cat stats.txt
grep -q "condition=1 of 3 paths down: .*:4471" stats.txt
tc qdisc del dev eth0 root
stats_until false
echo "PATH-LOSS-REPORTED"

# Online expansion with the pod's data kept.
call --endpoint $CTL expand "$VOL" 134217728 | tee expand.txt
grep -qx "node_expansion_required=true" expand.txt
call --endpoint $SOCK node-expand "$VOL" $TARGET 134217728
size=$(df -B1 --output=size $TARGET | tail -1 | tr -d ' ')
[ "$size" -gt 100000000 ]
call --endpoint $SOCK stats "$VOL" $TARGET | tee stats.txt
grep -qx "abnormal=false" stats.txt
[ "$(sha256sum <$TARGET/data.bin | cut -d' ' -f1)" = "$(cat data.sha)" ]
echo "EXPANDED-ONLINE $size"

teardown "$VOL"
[ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ]
echo "NVME-CYCLE-DONE"

# iSCSI and xfs: the same cycle.
ctx=(--fs xfs --ctx protocol=iscsi)
# (mkfs.xfs wants 300 MB at least.)
VOL=$(call --endpoint $CTL "${ctx[@]}" create pvc-iscsi-xfs 335544320 | field volume_id)
call --endpoint $CTL "${ctx[@]}" publish "$VOL" node-b
call --endpoint $SOCK "${ctx[@]}" stage "$VOL" $STAGE
call --endpoint $SOCK "${ctx[@]}" node-publish "$VOL" $STAGE $TARGET
[ "$(findmnt -n -o FSTYPE $TARGET)" = xfs ]
[ "$(iscsiadm -m session | wc -l)" = 3 ]
head -c 8388608 /dev/urandom >$TARGET/data.bin
sha=$(sha256sum <$TARGET/data.bin | cut -d' ' -f1)
before=$(df -B1 --output=size $TARGET | tail -1 | tr -d ' ')
call --endpoint $CTL "${ctx[@]}" expand "$VOL" 402653184
call --endpoint $SOCK "${ctx[@]}" node-expand "$VOL" $TARGET 402653184
size=$(df -B1 --output=size $TARGET | tail -1 | tr -d ' ')
[ "$size" -gt $((before + 60000000)) ]
echo 3 >/proc/sys/vm/drop_caches
[ "$(sha256sum <$TARGET/data.bin | cut -d' ' -f1)" = "$sha" ]
echo "ISCSI-XFS-EXPANDED $size"
teardown "$VOL"
if iscsiadm -m session 2>/dev/null; then
	echo "iSCSI sessions left behind" >&2
	exit 1
fi
echo "ISCSI-CYCLE-DONE"
kill $PLUGIN
echo "CSI-FAILURES-DONE"
