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
# Source packages need a deb-src entry.
cat >/etc/apt/sources.list.d/alcubierre-src.sources <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
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
