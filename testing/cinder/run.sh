#!/usr/bin/env bash
# The Cinder driver's tests (integrations/cinder/tests) on Cinder's and os-brick's own code:
# starts `alcubierre demo` (three nodes and the REST API on loopback), then runs every test
# module in the virtualenv that scripts/setup makes, against the live cluster.
#
# Usage: testing/cinder/run.sh <path-to-alcubierre-binary>
# The virtualenv: ${ALCUBIERRE_CINDER_VENV:-/var/tmp/alcubierre-cinder} (cinder and os-brick
# from PyPI, pinned in scripts/setup). Prints "cinder: passed N tests" at the end.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$(realpath "${1:?usage: run.sh <path-to-alcubierre-binary>}")
VENV=${ALCUBIERRE_CINDER_VENV:-/var/tmp/alcubierre-cinder}
[[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import cinder, os_brick' 2>/dev/null || {
	echo "cinder/run.sh: no cinder and os-brick in $VENV: run scripts/setup" >&2
	exit 1
}
WORK=$(mktemp -d /var/tmp/alcubierre-cinder-run.XXXXXX)
# shellcheck source=../lib/demo.sh
source "$ROOT/testing/lib/demo.sh"
SERVE_PID=
ETCD_PID=
cleanup() {
	stop_demo
	for pid in $SERVE_PID $ETCD_PID; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
start_demo "$BIN" "$WORK"
export ALCUBIERRE_API_URL=$API ALCUBIERRE_API_TOKEN=$TOKEN

# A node serving its API over TLS (on its own etcd), its certificate signed by a private CA
# made with openssl as an operator would: the driver's TLS tests (test_tls.py).
T=$WORK/tls
mkdir -p "$T"
(
	cd "$T"
	printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.crt
	openssl req -newkey rsa:2048 -nodes -subj /CN=node-1 -keyout api.key -out api.csr
	openssl x509 -req -in api.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile ext.cnf -out api.crt
) >"$T/openssl.log" 2>&1 || {
	cat "$T/openssl.log" >&2
	exit 1
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ETCD_CLIENT=$(free_port)
ETCD_PEER=$(free_port)
etcd --data-dir "$T/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
	--advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER" >"$T/etcd.log" 2>&1 &
ETCD_PID=$!
printf '%s\n' \
	'[node]' 'name = "tls-node"' \
	'[cache]' "device = \"$T/cache.img\"" 'create_size = "64MiB"' \
	'[backend]' 'kind = "file"' "dir = \"$T/backend\"" \
	'[nvmf]' 'listen = ["127.0.0.1:0"]' \
	'[cluster]' "etcd = [\"http://127.0.0.1:$ETCD_CLIENT\"]" 'api_listen = "127.0.0.1:0"' \
	'api_token = "tls-t0ken"' "api_tls_cert = \"$T/api.crt\"" "api_tls_key = \"$T/api.key\"" \
	>"$T/node.toml"
"$BIN" --json serve --config "$T/node.toml" >"$T/ready.json" 2>"$T/serve.err" &
SERVE_PID=$!
for _ in $(seq 300); do
	[[ -s $T/ready.json ]] && break
	kill -0 "$SERVE_PID" 2>/dev/null || {
		cat "$T/serve.err" "$T/etcd.log" >&2
		exit 1
	}
	sleep 0.1
done
export ALCUBIERRE_TLS_API_URL ALCUBIERRE_TLS_API_TOKEN=tls-t0ken ALCUBIERRE_TLS_CA=$T/ca.crt
ALCUBIERRE_TLS_API_URL=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api"])' <"$T/ready.json")
# Cinder's TestCase keeps its database in memory and its locks in temporary directories.
cd "$ROOT/integrations/cinder"
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -p no:warnings -rs tests >"$WORK/pytest.out" 2>&1 ||
	status=$?
cat "$WORK/pytest.out"
if [[ $status != 0 ]]; then
	echo "cinder/run.sh: the tests failed (pytest exit $status); the demo said:" >&2
	tail -40 "$WORK/demo.err" >&2
	exit "$status"
fi
passed=$(grep -Eo '[0-9]+ passed' "$WORK/pytest.out" | tail -1 | cut -d' ' -f1)
if grep -Eq '[0-9]+ (skipped|xfailed|deselected)' "$WORK/pytest.out"; then
	echo "cinder/run.sh: tests were skipped; every test must run here" >&2
	exit 1
fi
echo "cinder: passed ${passed:-0} tests"
