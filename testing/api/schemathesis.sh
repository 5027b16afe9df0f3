#!/usr/bin/env bash
# Property-based tests of the REST API from its checked-in OpenAPI document (schemathesis, from
# PyPI): starts `alcubierre demo`, generates requests for every operation, and fails on any 5xx
# or any 4xx without a message. First it runs the web console's script against the demo.
#
# Usage: testing/api/schemathesis.sh <path-to-alcubierre-binary>
# The virtualenv is cached in ${ALCUBIERRE_ST_VENV:-/var/tmp/alcubierre-st} (created when missing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$(realpath "${1:?usage: schemathesis.sh <path-to-alcubierre-binary>}")
VENV=${ALCUBIERRE_ST_VENV:-/var/tmp/alcubierre-st}
if [[ ! -x $VENV/bin/schemathesis ]]; then
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi
WORK=$(mktemp -d /var/tmp/alcubierre-st-run.XXXXXX)
PID=
cleanup() {
	[[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" --json demo --dir "$WORK/demo" >"$WORK/ready.json" 2>"$WORK/demo.err" &
PID=$!
for _ in $(seq 200); do
	[[ -s $WORK/ready.json ]] && break
	kill -0 "$PID" 2>/dev/null || { cat "$WORK/demo.err" >&2; exit 1; }
	sleep 0.1
done
API=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api"])' <"$WORK/ready.json")
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <"$WORK/ready.json")
# The web console's script against the live demo, before schemathesis changes it (Node.js; CI installs it).
if command -v node >/dev/null; then
	node "$ROOT/testing/console/smoke.js" "$ROOT/crates/control/src/console.html" "$API" "$TOKEN"
elif [[ -n ${CI:-} ]]; then
	echo "node (Node.js) is missing: cannot check the console" >&2
	exit 1
fi
cd "$HERE"
SCHEMATHESIS_HOOKS=hooks "$VENV/bin/schemathesis" run "$ROOT/docs/api/openapi.json" \
	--url "$API" -H "Authorization: Bearer $TOKEN" \
	--checks not_a_server_error,error_has_message \
	--max-examples "${ALCUBIERRE_ST_EXAMPLES:-50}" --seed 1
echo "schemathesis: passed"
