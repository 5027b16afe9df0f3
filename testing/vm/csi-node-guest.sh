#!/bin/bash
# Guest half of crates/cli/tests/vm_csi.rs: the CSI driver (/host/alcubierre-csi, controller
# and node in one process) on a Kubernetes node with Linux's initiators, under kubernetes-csi's
# csi-sanity (/host/csi-sanity), against a three-node cluster: every spec, node specs included,
# in mount mode (ext4) and in block mode. Reads ./params.sh (API, TOKEN).
set -euxo pipefail
. ./params.sh
. ./path-loss-writes.sh
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 30
multipathd
trap 'dmesg | tail -30; tail -40 csi.log 2>/dev/null' EXIT

RUST_LOG=info /host/alcubierre-csi --endpoint unix:///run/csi.sock --api "$API" --token "$TOKEN" \
	--node-id vm-guest --state-dir /var/lib/alcubierre-csi >csi.log 2>&1 &
CSI=$!
for _ in $(seq 100); do
	[ -S /run/csi.sock ] && break
	sleep 0.1
done
for mode in mount block; do
	mkdir -p /tmp/csi-$mode
	/host/csi-sanity --csi.endpoint=/run/csi.sock \
		--csi.mountdir=/tmp/csi-$mode/mnt --csi.stagingdir=/tmp/csi-$mode/stage \
		--csi.testvolumesize=67108864 --csi.testvolumeexpandsize=134217728 \
		--csi.testvolumeaccesstype=$mode --ginkgo.no-color >sanity-$mode.txt 2>&1 || true
	grep -E "\[FAIL\]" sanity-$mode.txt || true
	grep -A16 "FAILED\] in" sanity-$mode.txt | grep -E "FAILED\] in|desc =|Expected|to equal" | head -30 || true
	tail -3 sanity-$mode.txt
	echo "SANITY $mode: $(grep -E "Passed \| " sanity-$mode.txt | tail -1)"
done
kill $CSI
wait $CSI || true
# Nothing left attached.
[ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ]
echo "CSI-VM-DONE"
