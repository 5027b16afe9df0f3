# Sourced by the test scripts that need a live cluster: starts `alcubierre demo` in the
# background and sets API, TOKEN and DEMO_PID (the caller's EXIT trap stops it).
#
#   start_demo BIN WORKDIR    the demo's files under WORKDIR/demo, its log in WORKDIR/demo.err

start_demo() {
	local bin=$1 work=$2
	"$bin" --json demo --dir "$work/demo" >"$work/ready.json" 2>"$work/demo.err" &
	DEMO_PID=$!
	for _ in $(seq 300); do
		[[ -s $work/ready.json ]] && break
		kill -0 "$DEMO_PID" 2>/dev/null || {
			cat "$work/demo.err" >&2
			return 1
		}
		sleep 0.1
	done
	[[ -s $work/ready.json ]] || {
		echo "the demo did not get ready in 30 s:" >&2
		cat "$work/demo.err" >&2
		return 1
	}
	API=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["api"])' <"$work/ready.json")
	TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <"$work/ready.json")
}

# Stops the demo start_demo started (for an EXIT trap).
stop_demo() {
	if [[ -n ${DEMO_PID:-} ]]; then
		kill "$DEMO_PID" 2>/dev/null || true
		wait "$DEMO_PID" 2>/dev/null || true
	fi
}
