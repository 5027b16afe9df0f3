#!/bin/bash
# Guest half of crates/cli/tests/vm_host_agent.rs: the host agent (/host/alcubierre-node) on a
# compute host with Linux's NVMe/TCP and iSCSI initiators, against a three-node cluster.
#
# Reads ./params.sh (API: every node's API, TOKEN). Steps, each checked:
#  1. bad input: an unknown volume, an unreachable cluster, a wrong token, a wrong protocol;
#  2. the daemon started; attach hn over NVMe/TCP: one namespace, three live paths, one ANA
#     optimized; attach hi over iSCSI: one dm-multipath map with three ALUA paths; both
#     idempotent; status and doctor printed;
#  3. per protocol, fio writing with crc32c verification while the host kills the volume's
#     primary (./kill-TAG, ./killed-TAG): no I/O error, the longest write (the stall) below the
#     ANA transition time (10 s) + 5 s, the data verifies; the node restarted
#     (./restart-TAG, ./restarted-TAG) and its path back;
#  4. a fourth node (./add-node, ./node4-listed): its path connected within 5 s of it being
#     listed for hn, the drained node's path dropped;
#  5. the paths torn down and the daemon restarted (a reboot): it attaches both again;
#  6. detach refuses while the device is open, then leaves nothing (no controller, session,
#     map, node record, state entry); again is a no-op;
#  6b. both attached again, the daemon stopped (./host-down): the host fences this host
#     (./fenced): its paths are refused and stay down; attaching again is refused while they
#     hold queued writes; the daemon, started again, drops them and its state's entries;
#  7. every NVMe/TCP portal dropped by a tc filter: attach fails naming each portal and leaves
#     nothing; without the nvme-tcp module: attach and doctor name it.
set -euxo pipefail
. ./params.sh
. ./path-loss-writes.sh
export ALCUBIERRE_API=$API ALCUBIERRE_TOKEN=$TOKEN
AN=/host/alcubierre-node
mkdir -p /etc/alcubierre
printf 'host = "vm-guest"\ninterval_ms = 1000\n' >/etc/alcubierre/node.toml

# until_true SECS CMD...: CMD succeeds within SECS; prints how long it took.
until_true() {
	{ set +x; } 2>/dev/null
	local secs=$1 t0=${EPOCHREALTIME/./} us
	shift
	while ! "$@" >/dev/null 2>&1; do
		if ((${EPOCHREALTIME/./} - t0 > secs * 1000000)); then
			echo "not within $secs s: $*" >&2
			return 1
		fi
		sleep 0.1
	done
	us=$((${EPOCHREALTIME/./} - t0))
	printf '%d.%02d\n' $((us / 1000000)) $((us % 1000000 / 10000))
}

# fails PATTERN CMD...: CMD fails and its error says PATTERN.
fails() {
	local pat=$1
	shift
	if "$@" >out.txt 2>err.txt; then
		echo "unexpected success: $*" >&2
		return 1
	fi
	cat err.txt
	grep -q -- "$pat" err.txt
}

/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 30
multipathd
trap 'dmesg | tail -40; cat daemon.log 2>/dev/null | tail -40' EXIT

# 1. Bad input.
fails "HTTP 404" $AN attach no-such-volume
fails "no API endpoint answered" env ALCUBIERRE_API=http://10.0.2.2:9 $AN attach hn
fails "HTTP 401" env ALCUBIERRE_TOKEN=wrong-token-here $AN attach hn
fails "protocol" $AN attach hn --protocol fc
# Nothing was attached by them.
[ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ]

# 2. Attach.
RUST_LOG=info $AN daemon >daemon.log 2>&1 &
DAEMON=$!
DEV=$($AN attach hn --protocol nvme-tcp)
echo "hn: $DEV"
[[ $DEV == /dev/disk/by-id/nvme-uuid.* ]]
[ -b "$DEV" ]
NQN=$(sort -u /sys/class/nvme/nvme*/subsysnqn)
[ "$(echo "$NQN" | wc -l)" = 1 ]
nvme list-subsys | tee subsys.txt
[ "$(grep -c " live" subsys.txt)" = 3 ]
cat /sys/class/nvme/nvme*/nvme*c*n1/ana_state | sort | uniq -c
[ "$(cat /sys/class/nvme/nvme*/nvme*c*n1/ana_state | grep -cx optimized)" = 1 ]
[ "$(cat /sys/class/nvme/nvme*/nvme*c*n1/ana_state | grep -cx non-optimized)" = 2 ]
cat /sys/class/nvme-subsystem/nvme-subsys*/iopolicy
[ "$($AN attach hn --protocol nvme-tcp)" = "$DEV" ]
[ "$(ls -d /sys/class/nvme/nvme* | wc -l)" = 3 ]

IDEV=$($AN attach hi --protocol iscsi)
echo "hi: $IDEV"
[[ $IDEV == /dev/disk/by-id/dm-uuid-mpath-* ]]
[ -b "$IDEV" ]
IQN=$(cat /sys/class/iscsi_session/session*/targetname | sort -u)
[ "$(echo "$IQN" | wc -l)" = 1 ]
[ "$(ls -d /sys/class/iscsi_session/session* | wc -l)" = 3 ]
DM=$(basename "$(readlink -f "$IDEV")")
[ "$(ls /sys/block/"$DM"/slaves | wc -l)" = 3 ]
multipath -ll | tee mp.txt
grep -q "prio=50 status=active" mp.txt
[ "$(grep -c "prio=10 status=enabled" mp.txt)" = 1 ]
[ "$($AN attach hi --protocol iscsi)" = "$IDEV" ]
$AN status
$AN doctor | tee doctor.txt
grep -q "0 failed" doctor.txt

# 3. The primary killed during writes, per protocol.
paths_live() { # paths_live TAG: the volume's three paths are up again
	case $1 in
	nvme) [ "$(cat /sys/class/nvme/nvme*/state | grep -cx live)" = 3 ] ;;
	iscsi) [ "$(multipath -ll | grep -c "active ready running")" = 3 ] ;;
	esac
}
for tag in nvme iscsi; do
	dev=$DEV
	[ $tag = iscsi ] && dev=$IDEV
	fio --name=st --filename="$dev" --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
		--iodepth=8 --direct=1 --rate_iops=,400 --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --randrepeat=1 --output-format=json --output=fio-$tag.json &
	fio=$!
	sleep 5
	touch kill-$tag
	wait_for killed-$tag
	wait $fio
	python3 - $tag <<'PY'
import json, sys
tag = sys.argv[1]
job = json.load(open(f"fio-{tag}.json"))["jobs"][0]
w = job["write"]
longest = w["lat_ns"]["max"] / 1e9
print(f"STALL {tag}: longest write {longest:.2f} s of {w['total_ios']} writes, "
      f"mean {w['lat_ns']['mean'] / 1e6:.2f} ms, fio error {job['error']}")
assert job["error"] == 0
assert longest < 15.0, "I/O did not resume within the ANA transition time (10 s) + 5 s"
PY
	fio --name=st --filename="$dev" --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
		--iodepth=8 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 \
		--randrepeat=1 --output=fio-verify-$tag.txt
	touch restart-$tag
	wait_for restarted-$tag
	echo "PATHS BACK $tag: $(until_true 60 paths_live $tag) s after the node was back"
done

# 4. A fourth node; a replica of hn moves to it.
touch add-node
wait_for node4-listed
. ./node4-listed
has_port() { grep -l "trsvcid=$1," /sys/class/nvme/nvme*/address; }
live_port() {
	local a
	a=$(has_port "$1") && [ "$(cat "$(dirname "$a")/state")" = live ]
}
took=$(until_true 5 live_port "$NEW_PORT")
echo "NODE-4 PATH: connected $took s after node-4 was listed for hn"
echo "OLD PATH: dropped $(until_true 120 bash -c "! grep -q trsvcid=$OLD_PORT, /sys/class/nvme/nvme*/address") s later"
nvme list-subsys
$AN status

# 5. A reboot: the paths gone, the daemon started again from its state.
kill $DAEMON
wait $DAEMON || true
nvme disconnect -n "$NQN"
multipath -f "$(cat /sys/block/"$DM"/dm/name)"
iscsiadm -m node -T "$IQN" --logout
[ ! -e "$DEV" ] && [ ! -e "$IDEV" ]
RUST_LOG=info $AN daemon >>daemon.log 2>&1 &
DAEMON=$!
echo "REATTACH nvme: $(until_true 60 paths_live nvme) s"
echo "REATTACH iscsi: $(until_true 60 paths_live iscsi) s"
[ -b "$DEV" ] && [ -b "$IDEV" ]
$AN status

# 6. Detach.
nothing_left() {
	[ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ]
	[ ! -e "$DEV" ] && [ ! -e "$IDEV" ]
	[ -z "$(ls /sys/class/iscsi_session/ 2>/dev/null)" ]
	[ -z "$(multipath -ll 2>/dev/null)" ]
	[ -z "$(iscsiadm -m node 2>/dev/null || true)" ]
	grep -q '"attachments": \[\]' /var/lib/alcubierre-node/state.json
}
exec 3<"$DEV"
fails "in use" $AN detach hn
exec 3<&-
$AN detach hn
$AN detach hn 2>&1 | tee again.txt
grep -q "was not attached" again.txt
$AN detach hi
nothing_left
kill $DAEMON
wait $DAEMON || true

# 6b. Host HA: this host fails (its agent stops reporting); the cluster fences it.
DEV=$($AN attach hn --protocol nvme-tcp)
IDEV=$($AN attach hi --protocol iscsi)
RUST_LOG=info $AN daemon >>daemon.log 2>&1 &
DAEMON=$!
sleep 3
kill $DAEMON
wait $DAEMON || true
touch host-down
wait_for fenced
no_live_path() {
	! grep -qx live /sys/class/nvme/nvme*/state && ! grep -qx LOGGED_IN /sys/class/iscsi_session/session*/state
}
echo "FENCED: no live path $(until_true 30 no_live_path) s after the fence"
sleep 5
no_live_path
cat /sys/class/nvme/nvme*/state /sys/class/iscsi_session/session*/state
# Attaching again is refused while the paths from before the fence hold queued writes.
fails "from before it lost access" $AN attach hn --protocol nvme-tcp
# The daemon, back, finds the host off both volumes and drops their paths (queued I/O fails).
RUST_LOG=info $AN daemon >>daemon.log 2>&1 &
DAEMON=$!
echo "FENCED CLEANUP: the daemon dropped the fenced paths in $(until_true 30 nothing_left) s"
kill $DAEMON
wait $DAEMON || true

# 7. A path that never comes up: every NVMe/TCP portal's packets dropped.
tc qdisc add dev eth0 root handle 1: prio
for p in $NVME_PORTS 4454; do
	tc filter add dev eth0 parent 1: protocol ip u32 match ip dport "$p" 0xffff action drop
done
fails "no path to volume hn came up" $AN attach hn --protocol nvme-tcp
grep -q "10.0.2.2:4454 is unreachable" err.txt
nothing_left
tc qdisc del dev eth0 root
# Without the NVMe/TCP initiator.
modprobe -r nvme_tcp nvme_fabrics
fails "modprobe nvme-tcp" $AN attach hn
! $AN doctor >doctor2.txt
grep "FAIL" doctor2.txt
grep -q "FAIL kernel module nvme-tcp" doctor2.txt
echo "HOST-AGENT-OK"
