#!/usr/bin/env bash
# Property-based tests of the REST API from the OpenAPI document it serves (schemathesis, from
# PyPI): starts `alcubierre demo`, generates requests for every operation, and fails on any 5xx
# or any 4xx without a message. First it runs the web console's script against the demo.
#
# Usage: testing/api/schemathesis.sh <path-to-alcubierre-binary>
# schemathesis comes from the virtualenv ${ALCUBIERRE_ST_VENV:-/var/tmp/alcubierre-st}, which
# scripts/setup makes; node (Node.js) runs the console's script.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$(realpath "${1:?usage: schemathesis.sh <path-to-alcubierre-binary>}")
VENV=${ALCUBIERRE_ST_VENV:-/var/tmp/alcubierre-st}
[[ -x $VENV/bin/schemathesis ]] || {
	echo "schemathesis.sh: no schemathesis in $VENV: run scripts/setup" >&2
	exit 1
}
command -v node >/dev/null || {
	echo "schemathesis.sh: node (Node.js) is missing: run scripts/setup as root" >&2
	exit 1
}
WORK=$(mktemp -d /var/tmp/alcubierre-st-run.XXXXXX)
# shellcheck source=../lib/demo.sh
source "$ROOT/testing/lib/demo.sh"
cleanup() {
	stop_demo
	rm -rf "$WORK"
}
trap cleanup EXIT
start_demo "$BIN" "$WORK"
# The web console's script against the live demo, before schemathesis changes it (Node.js; CI installs it).
node "$ROOT/testing/console/smoke.js" "$ROOT/crates/control/src/console.html" "$API" "$TOKEN"
# From the run's own directory, so schemathesis's cache stays out of the repository.
cd "$WORK"
PYTHONPATH="$HERE" SCHEMATHESIS_HOOKS=hooks "$VENV/bin/schemathesis" run "$API/api/v1/openapi.json" \
	--url "$API" -H "Authorization: Bearer $TOKEN" \
	--checks not_a_server_error,error_has_message \
	--max-examples "${ALCUBIERRE_ST_EXAMPLES:-50}" --seed 1
echo "schemathesis: passed"
