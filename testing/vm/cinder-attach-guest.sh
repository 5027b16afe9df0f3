#!/bin/bash
# Guest half of crates/cli/tests/vm_cinder.rs: a compute host's os-brick (Debian's
# python3-os-brick, as Nova uses it) attaching volumes the Cinder driver hands out.
#
# 1. Writes ./connector.json (os-brick's connector properties, what Nova sends Cinder) and
#    waits for ./nvme.json (the driver's initialize_connection over NVMe/TCP).
# 2. NVMe-oF connector (native NVMe multipath, every node's portal): fio with crc32c
#    verification; touches ./nvme-written and waits for ./nvme-extended (the driver grew the
#    volume to 2 GiB) to see the new size through os-brick's extend; disconnects and checks
#    that no controller is left; touches ./nvme-done.
# 3. Waits for ./iscsi.json; iSCSI connector with dm-multipath: logs in to every portal, one
#    multipath map; writes through it while the host kills the primary's node (the path loss
#    of path-loss-writes.sh); the data verifies; disconnects and checks that no session and no
#    map is left.
set -euxo pipefail
. ./path-loss-writes.sh

# udev finds the paths and their WWIDs; multipathd makes the maps os-brick asks for.
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle -t 30
alua_multipath_conf no
multipathd
# open-iscsi's lock directory made before os-brick logs in to the portals in parallel: two
# iscsiadm runs creating it at once make one fail ("Could not open /run/lock/iscsi: 17 File
# exists"), and that portal's session is lost.
mkdir -p /run/lock/iscsi
# A dead iSCSI path fails its I/O after 5 s, so dm-multipath retries it on another path.
sed -i 's/^node.session.timeo.replacement_timeout = .*/node.session.timeo.replacement_timeout = 5/' \
	/etc/iscsi/iscsid.conf

# The host copies os-brick from PyPI and the libraries it needs into ./pylib (vm_cinder.rs).
export PYTHONPATH=/host/pylib
python3 -c 'import os_brick, sys; print("os-brick from", os_brick.__file__)'
cat >brick.py <<'EOF'
"""os-brick as Nova's compute host runs it: connector properties, connect, extend,
disconnect. Root in the guest: os-brick's privileged calls run in this process."""
import json
import sys

import os_brick
from os_brick import privileged
from oslo_concurrency import lockutils
from oslo_config import cfg

os_brick.setup(cfg.CONF)
privileged.default.set_client_mode(False)
# os-brick serialises connects with file locks, as Nova configures them.
lockutils.set_defaults(lock_path="/run/os-brick-locks")

from os_brick.initiator import connector as brick  # noqa: E402

cmd = sys.argv[1]
if cmd == "props":
    props = brick.get_connector_properties(None, "10.0.2.15", True, False, host="vm-guest")
    json.dump(props, sys.stdout)
    sys.exit(0)
protocol, conn_file = sys.argv[2], sys.argv[3]
with open(conn_file) as f:
    data = json.load(f)["data"]
c = brick.InitiatorConnector.factory(protocol, None, use_multipath=True)
if cmd == "connect":
    dev = c.connect_volume(data)
    with open(sys.argv[4], "w") as f:
        json.dump(dev, f)
    print(dev["path"])
elif cmd == "extend":
    print(c.extend_volume(data))
elif cmd == "disconnect":
    with open(sys.argv[4]) as f:
        dev = json.load(f)
    c.disconnect_volume(data, dev)
EOF

python3 brick.py props >connector.json.tmp
mv connector.json.tmp connector.json
cat connector.json

# ---- NVMe/TCP: native multipath through every node's portal
wait_for nvme.json
cat nvme.json
DEV=$(python3 brick.py connect NVME nvme.json nvme-dev.json)
[ -b "$DEV" ]
nvme list-subsys | tee nvme-subsys.txt
# One subsystem, a path per node.
[ "$(grep -c 'tcp traddr=' nvme-subsys.txt)" = 3 ]
fio --name=nvme --filename="$DEV" --rw=randwrite --bs=4k --size=16m --ioengine=libaio \
	--iodepth=8 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --output=fio-nvme.txt
cat fio-nvme.txt
[ "$(blockdev --getsize64 "$DEV")" = 1073741824 ]
touch nvme-written
wait_for nvme-extended
NEW=$(python3 brick.py extend NVME nvme.json)
echo "os-brick's extend: $NEW"
[ "$NEW" = 2147483648 ]
[ "$(blockdev --getsize64 "$DEV")" = 2147483648 ]
# The data written before the extend is still there.
fio --name=nvme --filename="$DEV" --rw=randwrite --bs=4k --size=16m --ioengine=libaio \
	--iodepth=8 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 --output=fio-nvme-v.txt
python3 brick.py disconnect NVME nvme.json nvme-dev.json
# Nothing left: no controller, no namespace.
[ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ]
touch nvme-done

# ---- iSCSI: dm-multipath over every node's portal, the primary killed during the writes
wait_for iscsi.json
cat iscsi.json
DEV=$(python3 brick.py connect ISCSI iscsi.json iscsi-dev.json)
[ -b "$DEV" ]
iscsiadm -m session | tee sessions.txt
[ "$(wc -l <sessions.txt)" = 3 ]
multipath -ll | tee mp.txt
[ "$(grep -cE 'sd[a-z]+ +[0-9]+:[0-9]+:[0-9]+:[0-9]+ +active ready|[0-9]+:[0-9]+:[0-9]+:[0-9]+ +sd[a-z]+ .*active ready' mp.txt)" -ge 3 ] ||
	[ "$(grep -c 'active ready' mp.txt)" = 3 ]
writes_through_a_path_loss "$DEV"
# The longest a write waited (fio's completion latency maximum) spans the failover.
awk '/^ +write:/ { w = 1 } w && /^ +clat \((u|m)sec\)/ { print "longest write: " $0; exit }' fio-write.txt
python3 brick.py disconnect ISCSI iscsi.json iscsi-dev.json
# Nothing left: no session, no multipath map.
if iscsiadm -m session; then
	echo "a session is left" >&2
	exit 1
fi
[ -z "$(dmsetup ls --target multipath | grep -v 'No devices found' || true)" ]
echo "CINDER-ATTACH-OK"
