#!/bin/bash
# Guest half of crates/cli/tests/vm_nvme_multipath.rs: Linux's native NVMe multipath against a
# three-node cluster, each node an NVMe/TCP portal of the same volume.
#
# Reads ./params.sh (NQN, FIRST_PORT: the one node's port the host is told, PORTS: every
# node's port, PRIMARY_PORT: the primary's). `nvme connect-all` against the one node must find
# every node's portal in its discovery log and connect all three: one subsystem, three live
# paths, the primary's ANA optimized and the others non-optimized. Then 4K random writes with
# crc32c verification through the multipath namespace; it touches ./io-started when they start;
# the host kills the primary's node (kill -9) and touches ./path-dropped. fio must end without
# an error and the data must verify through the promoted primary.
set -euxo pipefail
. ./params.sh
. ./path-loss-writes.sh
H=10.0.2.2
HOSTNQN=nqn.2014-08.io.alcubierre:test-guest
trap 'dmesg | tail -30' EXIT
nvme version
cat /sys/module/nvme_core/parameters/multipath

nvme discover -t tcp -a $H -s "$FIRST_PORT" --hostnqn $HOSTNQN | tee disc.txt
for p in $PORTS; do
	grep -q "trsvcid: *$p\$" disc.txt
done
[ "$(grep -c "subnqn: *$NQN" disc.txt)" = 3 ]

# Reconnect a lost path every 2 s, give it up after 30 s; I/O on it fails over at once.
nvme connect-all -t tcp -a $H -s "$FIRST_PORT" --hostnqn $HOSTNQN --ctrl-loss-tmo=30 --reconnect-delay=2
# The subsystem's controllers (its directory also holds the namespace head, nvmeXnY).
ctrls() {
	find /sys/class/nvme-subsystem/nvme-subsys*/ -maxdepth 1 -regex '.*/nvme[0-9]+' 2>/dev/null || true
}
for _ in $(seq 100); do
	[ "$(ctrls | wc -l)" -ge 3 ] && break
	sleep 0.1
done
nvme list-subsys | tee subsys.txt
[ "$(ctrls | wc -l)" = 3 ]
[ "$(grep -c "nvme-subsys" subsys.txt)" = 1 ]
[ "$(grep -c " live" subsys.txt)" = 3 ]
# Each path's ANA state, by the port it goes to.
for c in $(ctrls); do
	addr=$(cat "$c/address")
	st=$(cat "$c"/nvme*c*n1/ana_state)
	echo "$(basename "$c") $addr $st"
	case "$addr" in
	*trsvcid=$PRIMARY_PORT*) [ "$st" = optimized ] ;;
	*) [ "$st" = non-optimized ] ;;
	esac
done
DEV=$(ls /dev/nvme*n1 | grep -v c | head -1)
[ -b "$DEV" ]

writes_through_a_path_loss "$DEV"
nvme list-subsys | tee subsys-after.txt
nvme disconnect -n "$NQN" || true
echo "NVME-MULTIPATH-OK"
