#!/usr/bin/env bash
# iSCSI side by side with Debian's tgt, in one run: fio's libiscsi engine (fio rebuilt with
# --enable-libiscsi: testing/iscsi/build-fio.sh) against tgt with a file LUN and against
# `alcubierre serve` with a file cache device and a file backend, both on the same filesystem
# (/var/tmp), and a memory volume of the same Alcubierre process (the front end alone: no
# journal, not durable). Each workload (4K randread and randwrite at QD1 and QD32 over the
# first 256 MiB, written first) runs on each target in turn, REPS times. Prints IOPS, mean and
# median latency, and the target process's CPU time per I/O. tgt's file LUN goes through the
# page cache (a write is acknowledged before it is durable), its second LUN ("tgt-durable")
# opens its file with O_DIRECT and O_SYNC; Alcubierre's cache volume
# acknowledges a write once its journal write is synced (O_DIRECT + sync on this machine's
# virtual disk).
#
# Also prints fio's own CPU time per I/O (the initiator's share of each round trip).
#
# Usage: testing/iscsi/bench.sh <path-to-alcubierre-binary>   (as root; RUNTIME=15 REPS=1,
# QDS="1 32" RWS="randread randwrite" TARGETS="tgt alcubierre alc-memory" to run fewer)
set -euo pipefail
BIN=$(realpath "${1:?usage: bench.sh <path-to-alcubierre-binary>}")
RUNTIME=${RUNTIME:-15}
REPS=${REPS:-1}
QDS=${QDS:-1 32}
RWS=${RWS:-randread randwrite}
TARGETS=${TARGETS:-tgt tgt-durable alcubierre alc-memory}
# PIN=1: the targets and fio all on CPU 0, so QD1 round trips are local context switches, not
# wake-ups of another (halted) vCPU, whose cost depends on where the scheduler puts things.
PIN=${PIN:-0}
ON=()
[[ $PIN == 1 ]] && ON=(taskset -c 0)
FIO=${FIO:-/var/tmp/alcubierre-fio/fio-3.33/fio}
"$FIO" --enghelp 2>/dev/null | grep -q libiscsi || {
	echo "$FIO has no libiscsi engine: run testing/iscsi/build-fio.sh first" >&2
	exit 1
}
command -v tgtd >/dev/null || { echo "install tgt (apt-get install tgt)" >&2; exit 1; }
TGT_PORT=3290
OUR_PORT=3291
WORK=$(mktemp -d /var/tmp/alcubierre-iscsi-bench.XXXXXX)
TGT_PID=
OUR_PID=
cleanup() {
	# tgtd ignores SIGTERM while it has targets.
	[[ -n $TGT_PID ]] && kill -9 "$TGT_PID" 2>/dev/null
	[[ -n $OUR_PID ]] && kill "$OUR_PID" 2>/dev/null
	for p in $TGT_PID $OUR_PID; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

# tgt: one file LUN of 1 GiB (LUN 1; LUN 0 is tgt's controller).
truncate -s 1G "$WORK/tgt.img"
"${ON[@]}" tgtd -f --iscsi portal=127.0.0.1:$TGT_PORT >"$WORK/tgtd.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 50); do tgtadm --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm --lld iscsi --op new --mode target --tid 1 -T iqn.2001-04.org.example:tgt-bench
tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/tgt.img"
# LUN 2: the same kind of file opened with O_DIRECT and O_SYNC, so a write is durable when
# acknowledged, as Alcubierre's cache volume's are (the like-for-like durable comparison).
truncate -s 1G "$WORK/tgt-durable.img"
tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 2 -b "$WORK/tgt-durable.img" \
	--bsoflags direct:sync
tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL
TGT_URL="iscsi://127.0.0.1:$TGT_PORT/iqn.2001-04.org.example:tgt-bench/1"
TGT_DURABLE_URL="iscsi://127.0.0.1:$TGT_PORT/iqn.2001-04.org.example:tgt-bench/2"

# Alcubierre: a 2 GiB file cache, a file backend, a 1 GiB volume.
mkdir -p "$WORK/node"
cat >"$WORK/node/node.toml" <<TOML
[node]
name = "bench"
threads = 1
[cache]
device = "$WORK/node/cache.img"
create_size = "2GiB"
[backend]
kind = "file"
dir = "$WORK/node/backend"
[nvmf]
listen = ["127.0.0.1:0"]
[iscsi]
listen = ["127.0.0.1:$OUR_PORT"]
[[volume]]
name = "bench"
size = "1GiB"
block_size = 512
hosts = ["*"]
[[volume]]
name = "front-end-only"
size = "1GiB"
block_size = 512
hosts = ["*"]
memory = true
TOML
"${ON[@]}" "$BIN" --json serve --config "$WORK/node/node.toml" >"$WORK/serve.out" 2>"$WORK/serve.err" &
OUR_PID=$!
for _ in $(seq 100); do [[ -s $WORK/serve.out ]] && break; sleep 0.1; done
IQN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][0]["iqn"])' <"$WORK/serve.out")
MEM_IQN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["volumes"][1]["iqn"])' <"$WORK/serve.out")
OUR_URL="iscsi://127.0.0.1:$OUR_PORT/$IQN/0"
MEM_URL="iscsi://127.0.0.1:$OUR_PORT/$MEM_IQN/0"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
esc() { printf '%s' "$1" | sed 's/:/\\:/g'; }

# fio's libiscsi engine is synchronous (FIO_SYNCIO: iodepth is capped at 1), so QD32 is 32
# jobs of QD1, each its own iSCSI session, reported as one group.
fio_run() { # url rw qd runtime -> json
	"${ON[@]}" "$FIO" --name=b --ioengine=libiscsi --filename="$(esc "$1")" --rw="$2" --bs=4k \
		--iodepth=1 --numjobs="$3" --group_reporting=1 --size=256m --runtime="$4" \
		--time_based=1 --randrepeat=0 --output-format=json
}

for url in "$TGT_URL" "$TGT_DURABLE_URL" "$OUR_URL" "$MEM_URL"; do
	"$FIO" --name=fill --ioengine=libiscsi --filename="$(esc "$url")" --rw=write --bs=1m \
		--iodepth=8 --size=256m --output-format=terse >/dev/null
done

echo "machine: $(nproc) vCPUs, $(uname -r); fio $("$FIO" --version); runtime ${RUNTIME}s per run; pinned to CPU 0: $PIN"
printf '%-4s %-10s %-3s %-11s %10s %12s %12s %14s %14s\n' rep workload qd target IOPS "mean lat us" "p50 lat us" "CPU us per I/O" "fio CPU per I/O"
for rep in $(seq "$REPS"); do
	for rw in $RWS; do
		for qd in $QDS; do
			for t in $TARGETS; do
				case $t in
				tgt) url=$TGT_URL pid=$TGT_PID ;;
				tgt-durable) url=$TGT_DURABLE_URL pid=$TGT_PID ;;
				alcubierre) url=$OUR_URL pid=$OUR_PID ;;
				*) url=$MEM_URL pid=$OUR_PID ;;
				esac
				c0=$(cpu_ticks "$pid")
				fio_run "$url" "$rw" "$qd" "$RUNTIME" >"$WORK/fio.json"
				c1=$(cpu_ticks "$pid")
				python3 - "$rep" "$rw" "$qd" "$t" "$c0" "$c1" "$WORK/fio.json" <<'PY'
import json, sys
rep, rw, qd, t, c0, c1, path = sys.argv[1:]
text = open(path).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
side = j["read"] if rw == "randread" else j["write"]
ios = side["total_ios"]
cpu_us = (int(c1) - int(c0)) * 1e6 / 100  # 100 clock ticks per second
# fio's usr_cpu / sys_cpu: percent of one CPU over the job's runtime, summed over its jobs.
fio_us = (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] * 1000
print(f"{rep:<4} {rw:<10} {qd:<3} {t:<11} {side['iops']:10.0f} {side['lat_ns']['mean']/1000:12.1f} "
      f"{side['clat_ns']['percentile']['50.000000']/1000:12.1f} {cpu_us/max(ios,1):14.2f} "
      f"{fio_us/max(ios,1):14.2f}")
PY
			done
		done
	done
done
