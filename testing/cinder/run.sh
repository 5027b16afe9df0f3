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
cleanup() {
	stop_demo
	rm -rf "$WORK"
}
trap cleanup EXIT
start_demo "$BIN" "$WORK"
export ALCUBIERRE_API_URL=$API ALCUBIERRE_API_TOKEN=$TOKEN
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
