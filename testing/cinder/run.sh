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
PID=
cleanup() {
	if [[ -n $PID ]]; then
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" --json demo --dir "$WORK/demo" >"$WORK/ready.json" 2>"$WORK/demo.err" &
PID=$!
for _ in $(seq 300); do
	[[ -s $WORK/ready.json ]] && break
	kill -0 "$PID" 2>/dev/null || {
		cat "$WORK/demo.err" >&2
		exit 1
	}
	sleep 0.1
done
[[ -s $WORK/ready.json ]] || {
	echo "cinder/run.sh: the demo did not get ready in 30 s" >&2
	cat "$WORK/demo.err" >&2
	exit 1
}
export ALCUBIERRE_API_URL ALCUBIERRE_API_TOKEN
ALCUBIERRE_API_URL=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api"])' <"$WORK/ready.json")
ALCUBIERRE_API_TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <"$WORK/ready.json")
# Cinder's state (its sqlite database, locks) stays in the run's directory.
export ALCUBIERRE_CINDER_STATE=$WORK/cinder
mkdir -p "$ALCUBIERRE_CINDER_STATE"
cd "$ROOT/integrations/cinder"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -p no:warnings -rs tests 2>&1 | tee "$WORK/pytest.out"
status=${PIPESTATUS[0]}
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
