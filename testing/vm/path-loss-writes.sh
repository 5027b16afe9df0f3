# Sourced by the guest scripts (testing/vm/*-multipath-guest.sh, host-agent-guest.sh and
# cinder-attach-guest.sh), which run with set -e in the share directory.
#
# alua_multipath_conf NAMES: writes /etc/multipath.conf for Alcubierre's LUs: ALUA priorities,
# path groups by priority, immediate failback, queueing for 60 checks without a path;
# user_friendly_names NAMES (yes: mpathN maps, no: WWID maps).
alua_multipath_conf() {
	cat >/etc/multipath.conf <<MPCONF
defaults {
	user_friendly_names $1
	find_multipaths off
}
devices {
	device {
		vendor "ALCUBIER"
		product "Alcubierre vol"
		path_grouping_policy group_by_prio
		prio alua
		hardware_handler "1 alua"
		path_checker tur
		failback immediate
		no_path_retry 60
	}
}
MPCONF
}
#
# writes_through_a_path_loss DEV: 32 MiB of 4K random writes at 400 IOPS with crc32c
# verification through DEV. It touches ./io-started when they start; the host kills the node
# carrying the I/O during them and touches ./path-dropped. The writes must end without an error
# and the data must then verify through the remaining paths.
writes_through_a_path_loss() {
	local dev=$1
	touch io-started
	fio --name=mp --filename="$dev" --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
		--iodepth=8 --direct=1 --rate_iops=,400 --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --randrepeat=1 --output=fio-write.txt
	cat fio-write.txt
	# The host dropped a path while the writes ran.
	[ -e path-dropped ]
	fio --name=mp --filename="$dev" --rw=randwrite --bs=4k --size=32m --ioengine=libaio \
		--iodepth=8 --direct=1 --verify=crc32c --verify_only=1 --verify_fatal=1 \
		--randrepeat=1 --output=fio-verify.txt
	cat fio-verify.txt
}
#
# wait_for FILE: waits up to 10 minutes for FILE (the host's half touches it).
wait_for() {
	{ set +x; } 2>/dev/null
	for _ in $(seq 2400); do
		if [ -e "$1" ]; then
			set -x
			return 0
		fi
		sleep 0.25
	done
	echo "gave up waiting for $1" >&2
	return 1
}
