#!/bin/bash
# fetch-qemu.sh CACHEDIR -> prints the path of an unpacked qemu-system-x86_64
#
# QEMU from Debian 12's backports (10.0), unpacked into CACHEDIR/qemu-VERSION
# and never installed on the host: Debian 12's QEMU 7.2 cannot migrate a VM
# with a vhost-user-fs device, which runq's templates need (see
# bench/RESULTS.md, "Templates"). Its libraries are all Debian 12's; the
# installed qemu-system-x86 7.2 brings them, and copy-qemu.sh copies the ones
# this build needs.
#
# Env: RUNQ_QEMU_SUITE (default bookworm-backports).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "$0")")/lib.sh"

SUITE=${RUNQ_QEMU_SUITE:-bookworm-backports}
SOURCES=/etc/apt/sources.list.d/runq-$SUITE.sources
PACKAGES="qemu-system-x86 qemu-system-common qemu-system-data"

# The suite's version of qemu-system-x86; adds the suite to apt's sources the
# first time (backports are pinned below the release: nothing else changes).
suite_version() {
	local ver
	ver=$(apt-cache madison qemu-system-x86 | awk -v s="$SUITE/" 'index($0, s) { print $3; exit }')
	if [[ -z $ver && ! -e $SOURCES ]]; then
		log "adding $SUITE to apt's sources ($SOURCES)"
		cat >"$SOURCES" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
		apt-get update -qq >&2
		ver=$(apt-cache madison qemu-system-x86 | awk -v s="$SUITE/" 'index($0, s) { print $3; exit }')
	fi
	[[ -n $ver ]] || die "qemu-system-x86 not found in $SUITE"
	printf '%s\n' "$ver"
}

main() {
	[[ $# -eq 1 ]] || die "usage: $0 CACHEDIR"
	local cache=$1 ver dir pkg deb
	need apt-cache apt-get dpkg-deb
	ver=$(suite_version)
	dir=$cache/qemu-${ver//:/_}
	if [[ -x $dir/usr/bin/qemu-system-x86_64 ]]; then
		printf '%s\n' "$dir/usr/bin/qemu-system-x86_64"
		return
	fi
	rm -rf "$dir.partial"
	mkdir -p "$dir.partial"
	for pkg in $PACKAGES; do
		deb=$(download_deb "$pkg" "$cache/debs" "$ver")
		dpkg-deb -x "$deb" "$dir.partial"
	done
	rm -rf "$dir"
	mv -T "$dir.partial" "$dir"
	log "QEMU $ver unpacked in $dir"
	printf '%s\n' "$dir/usr/bin/qemu-system-x86_64"
}

main "$@"
