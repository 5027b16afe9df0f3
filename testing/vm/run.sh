#!/usr/bin/env bash
# Boots the Alcubierre test VM and runs one script inside it.
#
# Usage: testing/vm/run.sh <shared-host-dir> <script-relative-to-shared-dir> [timeout-seconds]
#
# The host directory is shared with the guest over 9p and mounted there on
# /host; the guest runs /host/<script> (directly when executable, else with
# bash) with /host as its working directory, prints its output on the console
# (this script's stdout), writes its exit code to <shared-host-dir>/.vm-exit-code
# and powers off. The guest's disk is a throwaway snapshot: nothing persists
# between runs except what the script writes under /host.
#
# Exit status: the guest script's exit code; 124 when the timeout (default
# 300 s) expired and QEMU was killed; 125 when the guest stopped without
# reporting an exit code (boot or setup failure, kernel panic, crash);
# 2 for a usage error. build.sh runs first (instant when the cache is ready).
#
# Environment:
#   ALCUBIERRE_VM_CACHE   artifact cache (default /var/tmp/alcubierre-vm)
#   ALCUBIERRE_VM_MEM     guest memory in MiB (default 1024)
#   ALCUBIERRE_VM_SMP     guest CPUs (default 2)
#   ALCUBIERRE_VM_KERNEL  "bzimage" boots the compressed kernel instead of the
#                         PVH vmlinux
#   ALCUBIERRE_VM_APPEND  extra kernel command line (e.g. "loglevel=7" to see
#                         the kernel's boot messages, which are quiet by default,
#                         or "alcubierre.trace" to trace the guest's init)
#   ALCUBIERRE_VM_QEMU_ARGS  extra QEMU arguments (split on spaces)
#
# Inside the guest: 10.0.2.15/24 on QEMU user networking; 10.0.2.2 (also named
# vm-host) is the host's 127.0.0.1, so the guest reaches any TCP listener on the
# host's loopback without port forwards. ALCUBIERRE_VM=1 and
# ALCUBIERRE_VM_HOST_IP=10.0.2.2 are set for the script.
set -euo pipefail

readonly EXIT_TIMEOUT=124
readonly EXIT_NO_REPORT=125

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ALCUBIERRE_VM_CACHE:-/var/tmp/alcubierre-vm}

usage() {
	echo "usage: $0 <shared-host-dir> <script-relative-to-shared-dir> [timeout-seconds]" >&2
	exit 2
}
die() {
	echo "run.sh: error: $*" >&2
	exit 2
}
log() { echo "run.sh: $*" >&2; }

(($# >= 2 && $# <= 3)) || usage
shared=$1
script=$2
timeout=${3:-300}

[[ -d $shared ]] || die "shared directory '$shared' does not exist"
shared=$(cd "$shared" && pwd -P)
# The script's path travels on the kernel command line: keep it to safe characters.
[[ $script =~ ^[A-Za-z0-9._+/-]+$ ]] || die "script path '$script' may only contain A-Z a-z 0-9 . _ + / -"
[[ $script != /* ]] || die "script path '$script' must be relative to the shared directory"
[[ /$script/ != */../* ]] || die "script path '$script' must not contain '..'"
[[ -f $shared/$script ]] || die "no script '$script' in $shared"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "timeout '$timeout' is not a positive number of seconds"
mem=${ALCUBIERRE_VM_MEM:-1024}
smp=${ALCUBIERRE_VM_SMP:-2}
[[ $mem =~ ^[1-9][0-9]*$ && $smp =~ ^[1-9][0-9]*$ ]] || die "ALCUBIERRE_VM_MEM and ALCUBIERRE_VM_SMP must be positive numbers"
((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 501)) || die "bash 5.1 or newer is needed (wait -n -p)"

"$HERE/build.sh" >&2 || die "build.sh failed"

kernel=$CACHE/vmlinux
if [[ ${ALCUBIERRE_VM_KERNEL:-} == bzimage || ! -f $kernel ]]; then
	kernel=$CACHE/vmlinuz
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run scripts/setup as root"

# qboot is a much smaller firmware than SeaBIOS and prints nothing.
firmware=()
if [[ -f /usr/share/qemu/qboot.rom ]]; then
	firmware=(-bios /usr/share/qemu/qboot.rom)
fi

cmdline="console=ttyS0 quiet panic=-1 root=/dev/vda rw init=/sbin/alcubierre-vm-init"
cmdline+=" net.ifnames=0 mitigations=off nokaslr tsc=reliable no_timer_check cryptomgr.notests"
cmdline+=" alcubierre.script=$script ${ALCUBIERRE_VM_APPEND:-}"

# QEMU option values escape a comma by doubling it.
qarg() { echo "${1//,/,,}"; }
# shellcheck disable=SC2054 # commas separate QEMU sub-options, not array elements
qemu=(
	qemu-system-x86_64
	-accel tcg -machine pc -cpu max -m "$mem" -smp "$smp"
	-nodefaults -no-user-config -nographic -serial stdio -monitor none
	-no-reboot -snapshot "${firmware[@]}"
	-kernel "$kernel" -initrd "$CACHE/initrd.img" -append "$cmdline"
	-drive "file=$(qarg "$CACHE/rootfs.img"),format=raw,if=virtio,cache=unsafe"
	-netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile=
	-virtfs "local,path=$(qarg "$shared"),mount_tag=host,security_model=none,id=host0"
)
if [[ -n ${ALCUBIERRE_VM_QEMU_ARGS:-} ]]; then
	read -r -a extra <<<"$ALCUBIERRE_VM_QEMU_ARGS"
	qemu+=("${extra[@]}")
fi

exit_file=$shared/.vm-exit-code
rm -f "$exit_file"

qpid=""
tpid=""
cleanup() {
	local pid
	for pid in "$qpid" "$tpid"; do
		[[ -n $pid ]] || continue
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.2
			done
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	qpid=""
	tpid=""
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
trap 'log "hangup"; exit 129' HUP

start=$EPOCHREALTIME
# --pdeathsig: QEMU and the timer die with this script even when it is
# SIGKILLed and the trap cannot run. stdin is /dev/null so QEMU leaves the
# terminal alone.
setpriv --pdeathsig KILL -- "${qemu[@]}" </dev/null &
qpid=$!
setpriv --pdeathsig KILL -- sleep "$timeout" </dev/null &
tpid=$!

while :; do
	finished=""
	status=0
	wait -n -p finished "$qpid" "$tpid" || status=$?
	[[ -n $finished ]] && break
	((status != 127)) || die "lost track of QEMU (pid $qpid)"
done
took=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

if [[ $finished == "$tpid" ]]; then
	tpid=""
	log "timeout: the guest ran longer than ${timeout}s; killing QEMU (pid $qpid)"
	cleanup
	exit "$EXIT_TIMEOUT"
fi
qpid=""
cleanup

if [[ ! -f $exit_file ]]; then
	log "the guest stopped after ${took}s without reporting an exit code (QEMU exit status $status)"
	exit "$EXIT_NO_REPORT"
fi
rc=$(<"$exit_file")
if ! [[ $rc =~ ^[0-9]+$ ]]; then
	log "the guest wrote a malformed exit code '$rc' to $exit_file"
	exit "$EXIT_NO_REPORT"
fi
log "guest script $script exited with $rc after ${took}s"
exit "$rc"
