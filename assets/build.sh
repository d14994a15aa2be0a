#!/bin/bash
# build.sh DESTDIR INIT_BINARY PROXY_BINARY EXEC_BINARY
#
# Lays out the runq asset tree (normally DESTDIR=/var/lib/runq/qemu):
#   DESTDIR/proxy  DESTDIR/runq-exec (the exec relay, also the host command)
#   DESTDIR/bin/{qemu-system-x86_64,virtiofsd}  DESTDIR/lib/*  DESTDIR/share/qemu/*
#   DESTDIR/kernel/{vmlinux,initrd,release}     DESTDIR/kernel/modules/<release>/...
# It builds in DESTDIR.new (seeded with hard links to the current tree, so
# unchanged work is skipped and costs no space) and then swaps it in, so a
# failed run never leaves a half tree. The previous tree is kept as DESTDIR.old
# until the next run: containers started from it keep a complete bind mount.
#
# Env: RUNQ_CACHE (kernel .deb cache, default /var/cache/runq), VIRTIOFSD, QEMU
#      (see copy-qemu.sh), RUNQ_SMOKE=1 boots the new tree (smoke-boot.sh)
#      before swapping it in.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "$0")")/lib.sh"

HERE=$(dirname "$(readlink -f "$0")")

usage() { die "usage: $0 DESTDIR INIT_BINARY PROXY_BINARY EXEC_BINARY"; }

# Start DESTDIR.new from the live tree (hard links), or empty. Every step below
# replaces files by rename or unlink+create, never by writing into them, so
# the live tree is never modified through the shared links.
seed() {
	local dest=$1 new=$2
	rm -rf "$new"
	if [[ -d $dest ]]; then
		cp -al "$dest" "$new"
	else
		mkdir -p "$new"
	fi
}

# Fail before the swap if anything the proxy needs is missing.
check_layout() {
	local d=$1 f rel
	rel=$(cat "$d/kernel/release")
	for f in proxy runq-exec bin/qemu-system-x86_64 bin/virtiofsd bin/passt lib/ld-linux-x86-64.so.2 \
		share/qemu/bios-microvm.bin kernel/vmlinux kernel/initrd "kernel/modules/$rel/modules.dep"; do
		[[ -e $d/$f ]] || die "incomplete tree: $d/$f missing"
	done
}

# root-owned, world-readable, writable by nobody but root.
fix_permissions() {
	chown -R root:root "$1"
	chmod -R u+rwX,go+rX,go-w "$1"
}

swap_in() {
	local dest=$1 new=$2 old=$3
	rm -rf "$old"
	if [[ -d $dest ]]; then mv -T "$dest" "$old"; fi
	mv -T "$new" "$dest"
}

main() {
	[[ $# -eq 4 ]] || usage
	local dest init=$2 proxy=$3 exec_client=$4
	[[ -f $init ]] || die "init binary $init not found (build runq-init first)"
	[[ -f $proxy ]] || die "proxy binary $proxy not found (build runq-proxy first)"
	[[ -f $exec_client ]] || die "exec binary $exec_client not found (build runq-exec first)"
	[[ $(id -u) -eq 0 ]] || die "must run as root (the tree is made root-owned)"
	mkdir -p "$(dirname "$1")"
	dest=$(readlink -f "$1")
	local new=$dest.new old=$dest.old
	log "building assets in $new ..."
	seed "$dest" "$new"

	"$HERE/fetch-kernel.sh" "$new/kernel" "${RUNQ_CACHE:-/var/cache/runq}"
	"$HERE/build-initrd.sh" "$init" "$new/kernel/modules" "$(cat "$new/kernel/release")" "$new/kernel/initrd"
	"$HERE/copy-qemu.sh" "$new"
	install -C -m 0755 "$proxy" "$new/proxy"
	install -C -m 0755 "$exec_client" "$new/runq-exec"

	check_layout "$new"
	fix_permissions "$new"
	if [[ ${RUNQ_SMOKE:-0} == 1 ]]; then
		"$HERE/smoke-boot.sh" "$new"
	fi
	swap_in "$dest" "$new" "$old"
	log "assets installed in $dest (kernel $(cat "$dest/kernel/release"))"
}

main "$@"
