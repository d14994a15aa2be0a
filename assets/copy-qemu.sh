#!/bin/bash
# copy-qemu.sh DESTDIR [VIRTIOFSD]
#
# Makes QEMU and virtiofsd runnable from inside any container image (no glibc
# needed there):
#   DESTDIR/bin/{qemu-system-x86_64,virtiofsd,passt}
#   DESTDIR/lib/*                       shared-library closure + ld-linux-x86-64.so.2
#   DESTDIR/lib/x86_64-linux-gnu/qemu/  QEMU modules we need (TCG is a module on Debian)
#   DESTDIR/share/qemu/                 firmware for -M microvm and -M q35 -nodefaults
# Run them as:
#   DESTDIR/lib/ld-linux-x86-64.so.2 --library-path DESTDIR/lib DESTDIR/bin/qemu-system-x86_64 -L DESTDIR/share/qemu ...
#
# Env: QEMU (default: qemu-system-x86_64 in PATH), VIRTIOFSD (default
# /opt/runq-build/virtiofsd/bin/virtiofsd; the argument wins),
# RUNQ_QEMU_MODULES (default accel-tcg-x86_64).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "$0")")/lib.sh"

LOADER=ld-linux-x86-64.so.2
# Debian's QEMU looks for modules and firmware relative to its executable's dir
# (/usr/bin/../lib/x86_64-linux-gnu/qemu, /usr/bin/../share/qemu). Started via
# the loader, that dir is DESTDIR/lib, so DESTDIR/lib/../lib/... is found
# without QEMU_MODULE_DIR. Both are taken from beside the QEMU copied, which
# may be an unpacked package (fetch-qemu.sh) rather than the installed one.
QEMU_MODDIR_REL=lib/x86_64-linux-gnu/qemu
FIRMWARE_REQUIRED="bios-microvm.bin bios-256k.bin linuxboot_dma.bin kvmvapic.bin pvh.bin"
# efi-virtio.rom: default romfile of virtio-net-pci; vgabios: only with a VGA.
FIRMWARE_OPTIONAL="efi-virtio.rom vgabios-stdvga.bin linuxboot.bin multiboot_dma.bin"

usage() { die "usage: $0 DESTDIR [VIRTIOFSD]"; }

# Copy only when the content differs, so a re-run changes nothing.
put() { install -C -D -m "$1" "$2" "$3"; }

# Print the shared libraries (resolved, real paths) that FILE... need; the
# loader line is printed as "loader PATH".
lib_closure() {
	local f
	for f in "$@"; do
		env -u LD_LIBRARY_PATH -u LD_PRELOAD ldd "$f" ||
			die "ldd failed on $f"
	done | awk '
		$2 == "=>" && $3 ~ /^\// { print "lib", $1, $3; next }
		$2 == "=>" && $3 == "not" { print "missing", $1; next }
		$1 ~ /^\// && $1 ~ /ld-linux/ { print "loader", $1 }
	' | sort -u
}

copy_libs() {
	local dest=$1 kind name path
	shift
	while read -r kind name path; do
		case $kind in
		missing) die "shared library $name not found (needed by one of: $*)" ;;
		loader) put 0755 "$(readlink -f "$name")" "$dest/lib/$LOADER" ;;
		lib) put 0644 "$(readlink -f "$path")" "$dest/lib/$name" ;;
		esac
	done < <(lib_closure "$@")
	[[ -f $dest/lib/$LOADER ]] || die "dynamic loader $LOADER not found in ldd output"
}

# QEMU's own firmware search order (its compiled-in --firmwarepath, below its
# prefix); the first hit wins, as it does for QEMU (bios-microvm.bin is qboot).
firmware_path() {
	echo "$QEMU_PREFIX/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu"
}

find_firmware() {
	local name=$1 d
	# microvm's firmware must be qboot, which Debian ships as qboot.rom and links as
	# bios-microvm.bin only in some releases; seabios' bios-microvm.bin, found further down
	# the path, leaves the 8259 PIC so that a kernel of ours panicked on an early interrupt
	# on vector 0 ("divide error") or hung after "ACPI: Core revision" in most boots.
	if [[ $name == bios-microvm.bin && -e $QEMU_PREFIX/share/qemu/qboot.rom ]]; then
		readlink -f "$QEMU_PREFIX/share/qemu/qboot.rom"
		return 0
	fi
	for d in $(firmware_path); do
		[[ -e $d/$name ]] && { readlink -f "$d/$name"; return 0; }
	done
	return 1
}

copy_firmware() {
	local dest=$1 name src
	for name in $FIRMWARE_REQUIRED; do
		src=$(find_firmware "$name") || die "QEMU firmware $name not found in $(firmware_path) (install qemu-system-data, seabios)"
		put 0644 "$src" "$dest/share/qemu/$name"
	done
	for name in $FIRMWARE_OPTIONAL; do
		if src=$(find_firmware "$name"); then
			put 0644 "$src" "$dest/share/qemu/$name"
		else
			log "note: optional firmware $name not found, skipped"
		fi
	done
}

# Run BIN ARGS... exactly as the proxy will: via the copied loader, empty env.
run_copied() {
	local dest=$1 bin=$2
	shift 2
	env -i "$dest/lib/$LOADER" --library-path "$dest/lib" "$dest/bin/$bin" "$@"
}

# Every library the copies load must come from DESTDIR/lib.
verify() {
	local dest=$1 bin out
	for bin in qemu-system-x86_64 virtiofsd passt; do
		out=$(env -i "$dest/lib/$LOADER" --list --library-path "$dest/lib" "$dest/bin/$bin") ||
			die "loader cannot resolve libraries of $bin: $out"
		if grep -v -e "$dest/lib/" -e 'linux-vdso' <<<"$out" | grep -q '/'; then
			die "$bin resolves libraries outside $dest/lib: $(grep -v "$dest/lib/" <<<"$out" | tr -s ' \t\n' ' ')"
		fi
	done
	out=$(run_copied "$dest" qemu-system-x86_64 -L "$dest/share/qemu" -version) ||
		die "copied qemu-system-x86_64 -version failed: $out"
	log "ok: ${out%%$'\n'*}"
	out=$(run_copied "$dest" virtiofsd --version) || die "copied virtiofsd --version failed: $out"
	log "ok: ${out%%$'\n'*}"
	# TCG lives in a module in Debian 12's QEMU: a real (instant) TCG start proves it loads.
	out=$(run_copied "$dest" qemu-system-x86_64 -L "$dest/share/qemu" -M microvm -accel tcg \
		-nodefaults -no-user-config -display none -S -qmp stdio 2>&1 \
		<<<'{"execute":"qmp_capabilities"} {"execute":"quit"}') ||
		die "copied qemu cannot start with -accel tcg: $out"
}

main() {
	[[ $# -ge 1 && $# -le 2 ]] || usage
	local dest=$1 qemu vfsd passt mods m
	need ldd install readlink
	mkdir -p "$dest"
	dest=$(readlink -f "$dest")
	qemu=$(readlink -f "${QEMU:-$(command -v qemu-system-x86_64 || echo /usr/bin/qemu-system-x86_64)}")
	vfsd=${2:-${VIRTIOFSD:-/opt/runq-build/virtiofsd/bin/virtiofsd}}
	[[ -x $qemu ]] || die "qemu-system-x86_64 not found (install qemu-system-x86 or set QEMU)"
	[[ -x $vfsd ]] || die "virtiofsd not found at $vfsd (cargo install virtiofsd, or pass its path / set VIRTIOFSD)"
	vfsd=$(readlink -f "$vfsd")
	passt=$(readlink -f "${PASST:-$(command -v passt || echo /usr/bin/passt)}")
	[[ -x $passt ]] || die "passt not found (install passt or set PASST): pods' VMs reach the network through it"

	QEMU_PREFIX=$(dirname "$(dirname "$qemu")")
	local moddir=$QEMU_PREFIX/$QEMU_MODDIR_REL
	mods=()
	# Debian 12's QEMU has TCG in a module; later ones build it in.
	for m in ${RUNQ_QEMU_MODULES-accel-tcg-x86_64}; do
		if [[ -f $moddir/$m.so ]]; then
			mods+=("$moddir/$m.so")
		elif [[ -n ${RUNQ_QEMU_MODULES+set} ]]; then
			die "QEMU module $moddir/$m.so not found"
		fi
	done

	log "copying qemu ($qemu), virtiofsd ($vfsd) and their libraries to $dest ..."
	# Afresh: a library or module of an earlier QEMU left here would be loaded by this one.
	rm -rf "$dest/lib" "$dest/share/qemu"
	put 0755 "$qemu" "$dest/bin/qemu-system-x86_64"
	put 0755 "$vfsd" "$dest/bin/virtiofsd"
	put 0755 "$passt" "$dest/bin/passt"
	for m in ${mods[@]+"${mods[@]}"}; do
		put 0644 "$m" "$dest/$QEMU_MODDIR_REL/$(basename "$m")"
	done
	copy_libs "$dest" "$qemu" "$vfsd" "$passt" ${mods[@]+"${mods[@]}"}
	copy_firmware "$dest"
	log "$(find "$dest/lib" -maxdepth 1 -type f | wc -l) libraries, $(find "$dest/share/qemu" -type f | wc -l) firmware files"
	verify "$dest"
}

main "$@"
