#!/bin/bash
# Installs runq into $RUNQ_ROOT (default /var/lib/runq) on Debian 12, as root:
# Debian packages, a release build of the workspace, virtiofsd from crates.io, Debian's
# guest kernel (downloaded, never installed), the initrd, and QEMU (Debian 12's backports,
# unpacked, never installed; RUNQ_QEMU=/usr/bin/qemu-system-x86_64 takes Debian 12's own)
# with its libraries.
# Safe to re-run: each step skips work that is already done.
set -euo pipefail

RUNQ_ROOT=${RUNQ_ROOT:-/var/lib/runq}
CACHE=${RUNQ_CACHE:-/var/cache/runq}
VIRTIOFSD_VERSION=1.14.0
TARGET=x86_64-unknown-linux-gnu
PACKAGES=(qemu-system-x86 passt runc busybox-static libseccomp-dev libcap-ng-dev cpio kmod
	xz-utils zstd iproute2 binutils ca-certificates python3
	# to make runq disks: qcow2 images and the file systems the guest mounts
	qemu-utils e2fsprogs xfsprogs btrfs-progs)

top=$(cd "$(dirname "$0")/.." && pwd)
step() { printf 'runq-install: %s\n' "$*" >&2; }
die() { printf 'runq-install: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and writes $RUNQ_ROOT)"

install_packages() {
	local missing=()
	for package in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$package")
	done
	if ((${#missing[@]})); then
		step "installing Debian packages: ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${missing[@]}" >/dev/null
	fi
}

check_rust() {
	command -v cargo >/dev/null ||
		die "cargo not found: runq needs Rust 1.87 or newer (rustup), Debian 12's is too old"
}

build_workspace() {
	step "building runq (release, static)"
	(cd "$top" && cargo build --release --locked --workspace --bins)
}

build_virtiofsd() {
	local bin=$CACHE/virtiofsd/bin/virtiofsd
	if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -q "$VIRTIOFSD_VERSION"; then
		return
	fi
	step "building virtiofsd $VIRTIOFSD_VERSION from crates.io (a few minutes)"
	cargo install --quiet --locked virtiofsd --version "$VIRTIOFSD_VERSION" \
		--root "$CACHE/virtiofsd"
}

# QEMU from Debian 12's backports (see assets/fetch-qemu.sh), unless RUNQ_QEMU names one.
fetch_qemu() {
	if [[ -n ${RUNQ_QEMU:-} ]]; then
		QEMU=$RUNQ_QEMU
	else
		step "QEMU from Debian's backports"
		QEMU=$("$top/assets/fetch-qemu.sh" "$CACHE")
	fi
}

install_runq() {
	local release=$top/target/$TARGET/release
	step "laying out $RUNQ_ROOT"
	mkdir -p "$RUNQ_ROOT" "$CACHE"
	QEMU=$QEMU VIRTIOFSD=$CACHE/virtiofsd/bin/virtiofsd RUNQ_CACHE=$CACHE \
		"$top/assets/build.sh" "$RUNQ_ROOT/qemu" "$release/runq-init" "$release/runq-proxy" \
		"$release/runq-exec"
	install -m 0755 "$release/runq" "$RUNQ_ROOT/runq.new"
	mv -f "$RUNQ_ROOT/runq.new" "$RUNQ_ROOT/runq"
	ln -sfn qemu/runq-exec "$RUNQ_ROOT/runq-exec"
	chmod 0755 "$RUNQ_ROOT"
}

install_packages
check_rust
mkdir -p "$CACHE"
build_workspace
build_virtiofsd
fetch_qemu
install_runq
# The templates of a default container (with and without a NIC): the first container of
# that shape then starts from one. Other shapes get theirs when runq first meets them.
step "templates of the default container (a boot and a save each)"
RUNQ_ROOT=$RUNQ_ROOT "$RUNQ_ROOT/runq" template build ||
	step "warning: no templates made; containers boot until runq makes them"
# Docker, where it is installed, learns about the runtime (other settings are kept).
"$top/scripts/docker-setup.sh" --register-only
step "done: $RUNQ_ROOT/runq (kernel $(cat "$RUNQ_ROOT/qemu/kernel/release"))"
