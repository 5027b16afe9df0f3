#!/usr/bin/env bash
# End-to-end test of `alcubierre serve` with Linux's own NVMe/TCP initiator (nvme-cli and the
# kernel's nvme-tcp) in the test VM.
#
# Usage: testing/vm/nvmf-e2e.sh <path-to-alcubierre-binary>
#
# Starts the target on the host's loopback (I/O portal 127.0.0.1:4420, discovery also on
# 127.0.0.1:8009, advertised as 10.0.2.2, the address the guest reaches the host by), then in
# the guest: nvme discover, a refused connect from a host NQN not on the volume's list,
# nvme connect, nvme list / id-ctrl / id-ns / ana-log, fio 4K randwrite with verify=crc32c, a
# read-back verification pass, a second connection with header and data digests, nvme
# disconnect. Exit status: the guest script's.
#
# Environment: ALCUBIERRE_NVMF_PORT (4420), ALCUBIERRE_DISCOVERY_PORT (8009).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=testing/vm/e2e-lib.sh
. "$HERE/e2e-lib.sh"
BIN=${1:?usage: nvmf-e2e.sh <path-to-alcubierre-binary>}
BIN=$(realpath "$BIN")
PORT=${ALCUBIERRE_NVMF_PORT:-4420}
DPORT=${ALCUBIERRE_DISCOVERY_PORT:-8009}
HOSTNQN=nqn.2014-08.io.alcubierre:test-guest

e2e_workdir nvmf
cat >"$WORK/node/node.toml" <<TOML
[node]
name = "vm-e2e"
[cache]
device = "$WORK/node/cache.img"
create_size = "256MiB"
[backend]
kind = "file"
dir = "$WORK/node/backend"
[nvmf]
listen = ["127.0.0.1:$PORT"]
discovery_listen = ["127.0.0.1:$DPORT"]
advertise = ["10.0.2.2"]
[[volume]]
name = "e2e"
size = "128MiB"
block_size = 512
hosts = ["$HOSTNQN"]
TOML

serve_start "$BIN" "$WORK/node/node.toml" "$WORK"
NQN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["nqn"])' <"$WORK/serve.out")
echo "target up (pid $SERVE_PID), subsystem $NQN"

cat >"$WORK/share/guest.sh" <<GUEST
#!/bin/bash
set -euxo pipefail
H=10.0.2.2
HOSTNQN=$HOSTNQN
NQN=$NQN
nvme version

# Discovery on 8009 and on the I/O port; the entry must advertise 10.0.2.2:$PORT.
nvme discover -t tcp -a \$H -s $DPORT --hostnqn \$HOSTNQN | tee disc.txt
grep -q "subnqn: *\$NQN" disc.txt
grep -q "traddr: *10.0.2.2" disc.txt
grep -q "trsvcid: *$PORT" disc.txt
nvme discover -t tcp -a \$H -s $PORT --hostnqn \$HOSTNQN | grep -q "\$NQN"

# A host not on the volume's list is refused.
if nvme connect -t tcp -a \$H -s $PORT -n \$NQN --hostnqn nqn.2014-08.io.alcubierre:intruder 2>refused.txt; then
	echo "connect by an unlisted host succeeded" >&2
	exit 1
fi
cat refused.txt

nvme connect -t tcp -a \$H -s $PORT -n \$NQN --hostnqn \$HOSTNQN
for i in \$(seq 50); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
nvme list
nvme id-ctrl /dev/nvme0 | tee idctrl.txt
grep -q "mn *: Alcubierre" idctrl.txt
grep -q "subnqn *: \$NQN" idctrl.txt
nvme id-ns /dev/nvme0n1 | tee idns.txt
# 128 MiB of 512-byte blocks, on 4096-byte physical blocks (512e, the default).
grep -q "nsze *: 0x40000" idns.txt
nvme ana-log /dev/nvme0 | tee ana.txt
grep -qi "optimized" ana.txt
cat /sys/class/nvme/nvme0/transport /sys/class/nvme/nvme0/state
[ "\$(cat /sys/block/nvme0n1/queue/logical_block_size)" = 512 ]
[ "\$(cat /sys/block/nvme0n1/queue/physical_block_size)" = 4096 ]

fio --name=w --filename=/dev/nvme0n1 --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
	--iodepth=16 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
	--output=fio-write.txt
cat fio-write.txt
# Read everything back in a separate pass and verify the checksums written above.
fio --name=w --filename=/dev/nvme0n1 --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
	--iodepth=16 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 --randrepeat=1 \
	--output=fio-verify.txt
cat fio-verify.txt
# Deallocate works and the kernel sees discard support.
[ "\$(cat /sys/block/nvme0n1/queue/discard_max_bytes)" != 0 ]
nvme disconnect -n \$NQN

# Again with header and data digests; the data written above must still be there.
nvme connect -t tcp -a \$H -s $PORT -n \$NQN --hostnqn \$HOSTNQN --hdr-digest --data-digest
for i in \$(seq 50); do [ -b /dev/nvme0n1 ] && break; sleep 0.1; done
fio --name=w --filename=/dev/nvme0n1 --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
	--iodepth=16 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 --randrepeat=1 \
	--output=fio-digest.txt
cat fio-digest.txt
fio --name=big --filename=/dev/nvme0n1 --rw=write --bs=128k --offset=64m --size=16m \
	--ioengine=libaio --iodepth=4 --direct=1 --verify=crc32c --verify_fatal=1 --output=fio-big.txt
cat fio-big.txt
nvme disconnect -n \$NQN
echo "NVMF-E2E-OK"
GUEST
chmod +x "$WORK/share/guest.sh"

guest_run "$HERE" "$WORK" NVMF-E2E-OK nvmf-e2e
