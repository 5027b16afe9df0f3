#!/usr/bin/env bash
# End-to-end test of `alcubierre serve` over iSCSI with Linux's own initiator (open-iscsi and
# the kernel's iscsi_tcp) in the test VM.
#
# Usage: testing/vm/iscsi-e2e.sh <path-to-alcubierre-binary>
#
# Starts the target on the host's loopback (portal 127.0.0.1:3270, advertised as 10.0.2.2:3270,
# the address the guest reaches the host by) with a volume only the guest's IQN may use, with
# CHAP. In the guest: SendTargets discovery, a login with a wrong CHAP secret (refused), a login
# with the right one, the disk's block size, fio 4K randwrite with verify=crc32c and a
# read-back verification pass, logout; a second login with header and data digests that reads
# the same data back; logout. Exit status: the guest script's.
#
# Environment: ALCUBIERRE_ISCSI_PORT (3270: not 3260, which the demo takes when it is free).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=testing/vm/e2e-lib.sh
. "$HERE/e2e-lib.sh"
BIN=${1:?usage: iscsi-e2e.sh <path-to-alcubierre-binary>}
BIN=$(realpath "$BIN")
PORT=${ALCUBIERRE_ISCSI_PORT:-3270}
# The guest's initiator name (testing/vm/build.sh writes it into the image).
GUEST_IQN=iqn.2004-10.com.alcubierre:vm-guest
CHAP_USER=vm-guest
CHAP_SECRET=open-sesame-42

e2e_workdir iscsi
cat >"$WORK/node/node.toml" <<TOML
[node]
name = "vm-iscsi"
[cache]
device = "$WORK/node/cache.img"
create_size = "256MiB"
[backend]
kind = "file"
dir = "$WORK/node/backend"
[nvmf]
listen = ["127.0.0.1:0"]
[iscsi]
listen = ["127.0.0.1:$PORT"]
advertise = "10.0.2.2:$PORT"
[[volume]]
name = "e2e"
size = "128MiB"
block_size = 512
hosts = ["$GUEST_IQN"]
chap_user = "$CHAP_USER"
chap_secret = "$CHAP_SECRET"
TOML

serve_start "$BIN" "$WORK/node/node.toml" "$WORK"
IQN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["iqn"])' <"$WORK/serve.out")
echo "target up (pid $SERVE_PID), target $IQN"

cat >"$WORK/share/guest.sh" <<GUEST
#!/bin/bash
set -euxo pipefail
P=10.0.2.2:$PORT
IQN=$IQN
set_auth() {
	iscsiadm -m node -T \$IQN -p \$P -o update -n node.session.auth.authmethod -v CHAP
	iscsiadm -m node -T \$IQN -p \$P -o update -n node.session.auth.username -v $CHAP_USER
	iscsiadm -m node -T \$IQN -p \$P -o update -n node.session.auth.password -v "\$1"
}
wait_disk() {
	for i in \$(seq 100); do [ -b /dev/sda ] && return 0; sleep 0.1; done
	return 1
}

iscsiadm -m discovery -t sendtargets -p \$P | tee disc.txt
grep -q "^10.0.2.2:$PORT,1 \$IQN" disc.txt

# A wrong CHAP secret is refused.
set_auth wrong-secret-1
if iscsiadm -m node -T \$IQN -p \$P --login 2>refused.txt; then
	echo "login with a wrong CHAP secret succeeded" >&2
	exit 1
fi
cat refused.txt

set_auth $CHAP_SECRET
iscsiadm -m node -T \$IQN -p \$P --login
wait_disk
iscsiadm -m session -P 3 | tee session.txt
grep -q "Attached scsi disk sda" session.txt
# 512-byte blocks on 4096-byte physical blocks (512e, the default).
[ "\$(cat /sys/block/sda/queue/logical_block_size)" = 512 ]
[ "\$(cat /sys/block/sda/queue/physical_block_size)" = 4096 ]
[ "\$(cat /sys/block/sda/size)" = 262144 ]
cat /sys/block/sda/device/vendor /sys/block/sda/device/model

fio --name=w --filename=/dev/sda --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
	--iodepth=16 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
	--output=fio-write.txt
cat fio-write.txt
fio --name=w --filename=/dev/sda --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
	--iodepth=16 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 --randrepeat=1 \
	--output=fio-verify.txt
cat fio-verify.txt
# Discard (UNMAP) is offered to the kernel.
[ "\$(cat /sys/block/sda/queue/discard_max_bytes)" != 0 ]
iscsiadm -m node -T \$IQN -p \$P --logout

# Again with header and data digests; the data written above must still be there.
iscsiadm -m node -T \$IQN -p \$P -o update -n node.conn[0].iscsi.HeaderDigest -v CRC32C
iscsiadm -m node -T \$IQN -p \$P -o update -n node.conn[0].iscsi.DataDigest -v CRC32C
iscsiadm -m node -T \$IQN -p \$P --login
wait_disk
iscsiadm -m session -P 2 | tee digests.txt
grep -q "HeaderDigest: CRC32C" digests.txt
fio --name=w --filename=/dev/sda --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
	--iodepth=16 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 --randrepeat=1 \
	--output=fio-digest.txt
cat fio-digest.txt
fio --name=big --filename=/dev/sda --rw=write --bs=256k --offset=64m --size=16m \
	--ioengine=libaio --iodepth=4 --direct=1 --verify=crc32c --verify_fatal=1 --output=fio-big.txt
cat fio-big.txt
iscsiadm -m node -T \$IQN -p \$P --logout
echo "ISCSI-E2E-OK"
GUEST
chmod +x "$WORK/share/guest.sh"

guest_run "$HERE" "$WORK" ISCSI-E2E-OK iscsi-e2e
