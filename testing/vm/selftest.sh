#!/usr/bin/env bash
# Host side of the Alcubierre test VM self-test.
#
# Usage: testing/vm/selftest.sh [timeout-seconds]   (default 600)
#
# Serves a random token over HTTP on the host's 127.0.0.1 (python3 -m
# http.server on a free port), then boots the guest through run.sh with
# selftest-guest.sh, which checks the initiator tools, fetches the token via
# 10.0.2.2 and runs NVMe/TCP and iSCSI loopback checks against targets inside
# the guest. Exits with the guest's exit code (0 = all passed).
# shellcheck disable=SC2317 # cleanup runs from a trap
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout=${1:-600}

command -v python3 >/dev/null || {
	echo "selftest.sh: error: python3 is needed for the host-side HTTP server" >&2
	exit 2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/alcubierre-vm-selftest.XXXXXX")
hpid=""
cleanup() {
	if [[ -n $hpid ]]; then
		kill "$hpid" 2>/dev/null || true
		wait "$hpid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp "$HERE/selftest-guest.sh" "$work/"
chmod +x "$work/selftest-guest.sh"
token="alcubierre-$RANDOM$RANDOM-$$"
echo "$token" >"$work/token.txt"

# A free port on 127.0.0.1 (the kernel picks it; the tiny race with other
# processes is harmless here).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work" "$port" >"$work/http.log" 2>&1 &
hpid=$!
for _ in $(seq 50); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		break
	fi
	kill -0 "$hpid" 2>/dev/null || {
		echo "selftest.sh: error: the HTTP server did not start:" >&2
		cat "$work/http.log" >&2
		exit 2
	}
	sleep 0.1
done
echo "$port" >"$work/http-port"
echo "selftest.sh: serving $work on 127.0.0.1:$port (pid $hpid)" >&2

rc=0
"$HERE/run.sh" "$work" selftest-guest.sh "$timeout" || rc=$?

if grep -q 'GET /token.txt' "$work/http.log"; then
	echo "selftest.sh: the host's HTTP server on 127.0.0.1:$port served the guest's request:" >&2
	grep 'GET /token.txt' "$work/http.log" >&2
else
	echo "selftest.sh: the host's HTTP server saw no request from the guest" >&2
	((rc != 0)) || rc=1
fi
echo "selftest.sh: exit code $rc" >&2
exit "$rc"
