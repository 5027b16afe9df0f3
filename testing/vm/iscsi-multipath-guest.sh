#!/bin/bash
# Guest half of crates/cli/tests/vm_iscsi_multipath.rs: Linux's open-iscsi and dm-multipath
# against a three-node cluster, each node an iSCSI portal of the same volume.
#
# Reads ./params.sh (IQN, FIRST: the portal to discover on, PORTALS: "host:port,tpgt" of every
# node as SendTargets must list them). Discovers, logs in to every portal, builds the multipath
# map (ALUA priorities, path groups by priority), then writes 32 MiB of 4K random writes at a
# bounded rate with crc32c verification. It touches ./io-started when the writes start; the
# host kills the primary's node (the path carrying the I/O) during them and touches
# ./path-dropped. fio must end without an error, the data must verify on the remaining paths
# (through the promoted primary), and the map must show the failed path.
set -euxo pipefail
. ./params.sh
. ./path-loss-writes.sh
# multipath finds paths and their WWIDs through udev, which the VM's init does not start.
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 30

alua_multipath_conf yes

iscsiadm -m discovery -t sendtargets -p "$FIRST" | tee disc.txt
# Every node's portal, each with its node's portal group tag.
for p in $PORTALS; do
	grep -qx "$p $IQN" disc.txt
done
[ "$(grep -c " $IQN\$" disc.txt)" = 3 ]

# A dead path fails its I/O after 5 s (not open-iscsi's default 120 s), so dm-multipath
# retries it on another path.
iscsiadm -m node -T "$IQN" -o update -n node.session.timeo.replacement_timeout -v 5
iscsiadm -m node -T "$IQN" --login
for _ in $(seq 300); do
	[ "$(ls /sys/class/scsi_disk | wc -l)" -ge 3 ] && break
	sleep 0.1
done
[ "$(ls /sys/class/scsi_disk | wc -l)" = 3 ]

udevadm settle -t 30
multipath -v2
udevadm settle -t 30
multipath -ll | tee mp.txt
MAP=$(dmsetup ls --target multipath | awk '{ print $1; exit }')
DEV=/dev/mapper/$MAP
[ -b "$DEV" ]
# Three paths to one LU: the primary's path alone in the active/optimized group (ALUA
# priority 50), the forwarding followers' in a non-optimized group (priority 10).
[ "$(grep -cE 'sd[a-z]+ +[0-9]+:[0-9]+ +active ready' mp.txt)" = 3 ]
grep -q "prio=50" mp.txt
grep -q "prio=10" mp.txt

writes_through_a_path_loss "$DEV"
multipath -ll | tee mp-after.txt
grep -qE "failed|faulty" mp-after.txt
# The sessions still up log out (the dropped one may not).
iscsiadm -m node -T "$IQN" --logout || true
echo "ISCSI-MULTIPATH-OK"
