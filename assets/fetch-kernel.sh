#!/bin/bash
# fetch-kernel.sh OUTDIR [CACHEDIR]
#
# Fetches Debian's generic amd64 kernel package (the one behind
# linux-image-amd64), WITHOUT installing it on the host, and lays out:
#   OUTDIR/vmlinux              ELF kernel, decompressed once, boots via PVH
#   OUTDIR/release              kernel release, e.g. 6.1.0-56-amd64
#   OUTDIR/modules/<release>/   full module tree, uncompressed .ko, fresh depmod
# The .deb is cached in CACHEDIR (default /var/cache/runq).
#
# Env: RUNQ_KERNEL_PKG overrides the package name (e.g. linux-image-6.1.0-56-amd64).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { die "usage: $0 OUTDIR [CACHEDIR]"; }

# The generic flavour, never -cloud (no 9p there) nor -rt.
resolve_package() {
	if [[ -n ${RUNQ_KERNEL_PKG:-} ]]; then
		printf '%s\n' "$RUNQ_KERNEL_PKG"
		return
	fi
	local pkg
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')
	[[ -n $pkg ]] || die "cannot resolve linux-image-amd64 via apt-cache depends (run 'apt-get update'?)"
	case $pkg in
	*-cloud-amd64 | *-rt-amd64) die "linux-image-amd64 resolves to $pkg, expected the generic flavour" ;;
	esac
	printf '%s\n' "$pkg"
}

# extract_vmlinux BZIMAGE OUT: find a compressed payload inside the bzImage,
# decompress it and keep the first one that yields a complete ELF.
extract_vmlinux() {
	local bz=$1 out=$2 spec magic tool off
	# magic (grep -P escapes) and decompressor; XZ is what Debian uses.
	for spec in '\xfd7zXZ\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -dcq' '\x1f\x8b\x08:gzip -dc'; do
		magic=${spec%%:*} tool=${spec#*:}
		while read -r off; do
			# Trailing bzImage bytes after the stream make the tool complain;
			# the output is judged by is_complete_elf instead of the exit status.
			tail -c +$((off + 1)) "$bz" | $tool >"$out" 2>/dev/null || true
			if is_complete_elf "$out"; then
				log "decompressed vmlinux (${tool%% *} at offset $off)"
				return 0
			fi
		done < <(LC_ALL=C grep -obUaP "$magic" "$bz" | cut -d: -f1)
	done
	die "no decompressible ELF kernel found in $bz"
}

# An ELF whose section header table lies inside the file (a truncated
# decompression fails this).
is_complete_elf() {
	local f=$1 shoff shnum shsize
	[[ $(head -c4 "$f" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] || return 1
	read -r shoff shnum shsize < <(readelf -hW "$f" 2>/dev/null | awk -F: '
		/Start of section headers/ { split($2, a, " "); o = a[1] }
		/Number of section headers/ { n = $2 + 0 }
		/Size of section headers/ { s = $2 + 0 }
		END { print o + 0, n + 0, s + 0 }')
	((shoff > 0 && $(stat -c %s "$f") >= shoff + shnum * shsize))
}

# PVH boot needs the XEN_ELFNOTE_PHYS32_ENTRY note (type 18 = 0x12).
check_pvh() {
	readelf -nW "$1" | grep -Eq 'Xen[[:space:]]+0x[0-9a-f]+[[:space:]].*(0x00000012|PHYS32_ENTRY)' ||
		die "$1 has no Xen PHYS32_ENTRY note: kernel cannot boot via PVH"
}

# Modules may ship as .ko.xz/.ko.zst/.ko.gz; decompress so the guest needs no
# decompressor and insmod stays cheap under TCG.
decompress_modules() {
	local dir=$1 n=0 f
	while IFS= read -r -d '' f; do
		case $f in
		*.ko.xz) xz -dq "$f" ;;
		*.ko.zst) zstd -dq --rm "$f" ;;
		*.ko.gz) gzip -dq "$f" ;;
		esac
		n=$((n + 1))
	done < <(find "$dir" -type f \( -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0)
	if ((n > 0)); then log "decompressed $n modules"; else log "modules are not compressed"; fi
}

# After a kernel upgrade, drop the module trees of other releases (~400 MB each).
remove_other_releases() {
	local dir=$1 keep=$2 d
	for d in "$dir"/*; do
		[[ -d $d && $(basename "$d") != "$keep" && -f $d/modules.dep ]] || continue
		log "removing modules of old kernel $(basename "$d")"
		rm -rf "$d"
	done
}

main() {
	[[ $# -ge 1 && $# -le 2 ]] || usage
	local out=$1 cache=${2:-/var/cache/runq}
	need apt-cache apt-get dpkg-deb readelf depmod xz zstd gzip sha256sum
	local pkg deb
	pkg=$(resolve_package)
	deb=$(download_deb "$pkg" "$cache")

	# Skip the unpack when OUTDIR already holds the result of this very .deb.
	if [[ -f $out/.source && $(cat "$out/.source") == "$(basename "$deb")" &&
		-f $out/vmlinux && -f $out/release && -f $out/modules/$(cat "$out/release")/modules.dep ]]; then
		log "kernel $(cat "$out/release") already in $out"
		return 0
	fi

	make_tmpdir
	log "unpacking $(basename "$deb") ..."
	dpkg-deb -x "$deb" "$TMPD/root"

	local moddir rel d
	# Bookworm ships /lib/modules; newer Debian moved to /usr/lib/modules.
	moddir=
	for d in "$TMPD"/root/lib/modules/* "$TMPD"/root/usr/lib/modules/*; do
		[[ -d $d ]] && { moddir=$d; break; }
	done
	[[ -n $moddir ]] || die "no lib/modules/<release> in $deb"
	rel=$(basename "$moddir")
	[[ -f $TMPD/root/boot/vmlinuz-$rel ]] || die "no boot/vmlinuz-$rel in $deb"
	log "kernel release $rel"

	extract_vmlinux "$TMPD/root/boot/vmlinuz-$rel" "$TMPD/vmlinux"
	check_pvh "$TMPD/vmlinux"

	decompress_modules "$moddir"
	# depmod -b wants BASE/lib/modules/<release>.
	if [[ $moddir != "$TMPD/root/lib/modules/$rel" ]]; then
		mkdir -p "$TMPD/root/lib/modules"
		mv "$moddir" "$TMPD/root/lib/modules/$rel"
	fi
	log "running depmod ..."
	depmod -b "$TMPD/root" "$rel"

	# Put the results in place; each rename replaces a whole item.
	mkdir -p "$out/modules"
	rm -rf "$out/modules/$rel.old"
	[[ ! -e $out/modules/$rel ]] || mv "$out/modules/$rel" "$out/modules/$rel.old"
	mv "$TMPD/root/lib/modules/$rel" "$out/modules/$rel"
	rm -rf "$out/modules/$rel.old"
	mv -f "$TMPD/vmlinux" "$out/vmlinux"
	printf '%s\n' "$rel" >"$out/release.tmp" && mv -f "$out/release.tmp" "$out/release"
	basename "$deb" >"$out/.source.tmp" && mv -f "$out/.source.tmp" "$out/.source"
	remove_other_releases "$out/modules" "$rel"
	log "kernel $rel ready in $out"
}

main "$@"
