#!/usr/bin/env bash
# Builds Debian's own fio source with the libiscsi engine (Debian's fio package is built
# without it) into /var/tmp/alcubierre-fio, for testing/iscsi/bench.sh. Needs root (apt).
set -euo pipefail
DIR=${FIO_DIR:-/var/tmp/alcubierre-fio}
if "$DIR"/fio-*/fio --enghelp 2>/dev/null | grep -q libiscsi; then
	echo "fio with libiscsi is built: $(ls "$DIR"/fio-*/fio)"
	exit 0
fi
mkdir -p "$DIR"
cd "$DIR"
# Source packages need deb-src entries: the machine's configured deb entries, as deb-src.
src=/etc/apt/sources.list.d/alcubierre-src.sources
if ! grep -rqs '^[^#]*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
	{
		for f in /etc/apt/sources.list.d/*.sources; do
			[[ -f $f && $f != "$src" ]] || continue
			# deb822 stanzas: Types: deb -> deb-src.
			sed -e 's/^Types:.*/Types: deb-src/' "$f"
			echo
		done
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -f $f ]] || continue
			# One-line entries: deb [opts] URI suite components -> deb-src in deb822 form.
			awk '$1 == "deb" {
				i = 2
				if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents:", $i, $(i + 1)
				for (j = i + 2; j <= NF; j++) printf " %s", $j
				printf "\n\n"
			}' "$f"
		done
	} >"$src"
	[[ -s $src ]] || {
		rm -f "$src"
		echo "build-fio.sh: no apt sources to derive deb-src entries from" >&2
		exit 1
	}
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq tgt libiscsi-dev dpkg-dev >/dev/null
apt-get build-dep -y -qq fio >/dev/null
apt-get source -qq fio
cd fio-*/
./configure --enable-libiscsi
make -j"$(nproc)"
./fio --enghelp | grep -q libiscsi
echo "built $(pwd)/fio"
