# Shared by the VM end-to-end scripts (nvmf-e2e.sh, iscsi-e2e.sh); sourced, not run.

# e2e_workdir NAME: makes WORK (with share/ and node/) under /var/tmp, removed with the target
# (SERVE_PID) when the script exits.
e2e_workdir() {
	WORK=$(mktemp -d "/var/tmp/alcubierre-$1-e2e.XXXXXX")
	SERVE_PID=
	trap e2e_cleanup EXIT
	mkdir -p "$WORK/share" "$WORK/node"
}

e2e_cleanup() {
	if [[ -n $SERVE_PID ]]; then
		kill "$SERVE_PID" 2>/dev/null || true
		wait "$SERVE_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}

# serve_start BIN CONFIG WORK: starts `BIN serve --config CONFIG` with its JSON ready line in
# WORK/serve.out and its log in WORK/serve.err, waits for the line, sets SERVE_PID.
serve_start() {
	"$1" --json serve --config "$2" >"$3/serve.out" 2>"$3/serve.err" &
	SERVE_PID=$!
	for _ in $(seq 100); do
		[[ -s $3/serve.out ]] && return 0
		if ! kill -0 "$SERVE_PID" 2>/dev/null; then
			echo "alcubierre serve exited:" >&2
			cat "$3/serve.err" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "alcubierre serve did not become ready" >&2
	exit 1
}

# guest_run HERE WORK MARKER NAME: runs WORK/share/guest.sh in the VM (run.sh in HERE); fails
# with the target's log unless the script succeeded, printed MARKER and the target survived.
guest_run() {
	local rc
	set +e
	"$1/run.sh" "$2/share" guest.sh "${ALCUBIERRE_VM_TIMEOUT:-600}" | tee "$2/console.txt"
	rc=${PIPESTATUS[0]}
	set -e
	if [[ $rc -ne 0 ]]; then
		echo "guest script failed with $rc; target log:" >&2
		tail -50 "$2/serve.err" >&2
		exit "$rc"
	fi
	grep -q "$3" "$2/console.txt"
	if ! kill -0 "$SERVE_PID" 2>/dev/null; then
		echo "the target died during the test" >&2
		exit 1
	fi
	echo "$4: passed"
}
