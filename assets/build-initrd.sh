#!/bin/bash
# build-initrd.sh INIT_BINARY MODULES_ROOT RELEASE OUTFILE
#
# Writes an UNCOMPRESSED newc cpio (no decompression cost under TCG) with:
#   /init                      INIT_BINARY, mode 0755 (must be static if ELF)
#   /lib/modules/RELEASE/...   the wanted virtio/fs modules and their dependencies, without
#                              signatures and tracing tables (strip_for_boot)
#   /modules.load              absolute in-initrd .ko paths, in load order
#   /dev /proc /sys /rootfs    empty mount points (devtmpfs provides /dev nodes)
# MODULES_ROOT is the directory holding RELEASE/ (e.g. OUTDIR/modules from
# fetch-kernel.sh), or a root holding lib/modules/RELEASE/.
# The archive is deterministic: sorted entries, owner 0:0, fixed mtimes
# (SOURCE_DATE_EPOCH, default 0).
#
# Env: RUNQ_INITRD_MODULES replaces the module list (space separated);
#      RUNQ_INITRD_EXTRA_MODULES appends to it.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "$0")")/lib.sh"

# Load order matters: transports before devices, fuse before virtiofs, ...
# microvm has no PCI bus: virtio devices are all virtio-mmio. runq-init loads the transport
# at once and the rest by what the container uses (see its modules.rs).
DEFAULT_MODULES="virtio_ring virtio virtio_mmio virtio_console virtio-rng failover net_failover
virtio_net virtio_blk fuse virtiofs netfs fscache 9pnet 9pnet_virtio 9p virtio_balloon"

usage() { die "usage: $0 INIT_BINARY MODULES_ROOT RELEASE OUTFILE"; }

# The guest has no dynamic loader in the initrd: refuse a dynamic ELF /init.
check_init() {
	local init=$1
	[[ -f $init ]] || die "init binary $init not found"
	if [[ $(head -c4 "$init" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] &&
		readelf -lW "$init" | grep -q 'program interpreter'; then
		die "init binary $init is dynamically linked; it must be static"
	fi
}

# make_modprobe_root MODULES_ROOT RELEASE -> prints a dir D with D/lib/modules/RELEASE,
# which is what 'modprobe -d' expects.
make_modprobe_root() {
	local mroot=$1 rel=$2
	if [[ -f $mroot/lib/modules/$rel/modules.dep ]]; then
		printf '%s\n' "$mroot"
	elif [[ -f $mroot/$rel/modules.dep ]]; then
		mkdir -p "$TMPD/mproot/lib"
		ln -s "$(readlink -f "$mroot")" "$TMPD/mproot/lib/modules"
		printf '%s\n' "$TMPD/mproot"
	else
		die "no modules.dep under $mroot/$rel or $mroot/lib/modules/$rel (run fetch-kernel.sh first)"
	fi
}

# load_order ROOT RELEASE MODULE... -> module paths relative to ROOT, each after
# its dependencies, each once. Built-in modules are skipped.
load_order() {
	local root=$1 rel=$2 m line
	shift 2
	# An empty config dir: host /etc/modprobe.d must not add options or install hooks.
	mkdir -p "$TMPD/modprobe.d"
	for m in "$@"; do
		local deps
		deps=$(modprobe -C "$TMPD/modprobe.d" -d "$root" -S "$rel" --show-depends "$m" 2>&1) ||
			die "module $m: $deps"
		while read -r line; do
			case $line in
			"insmod "*) line=${line#insmod }; printf '%s\n' "${line%% *}" ;;
			"builtin "*) log "module ${line#builtin } is built in" ;;
			*) die "module $m: unexpected modprobe output: $line" ;;
			esac
		done <<<"$deps"
	done | awk -v root="$root" '!seen[$0]++ { print substr($0, length(root) + 1) }'
}

# strip_for_boot KO: drops what only tracing and debugging read, and what the kernel works
# through at every load: the ftrace call-site table (__mcount_loc, whose ~300 sites in fuse
# alone the kernel patches one by one; without it each function's first instruction stays a
# call to the kernel's empty __fentry__), the ORC unwind tables (sorted at load; stack traces
# through these modules fall back to frame pointers), BTF and the local symbols. Under TCG
# the initrd's modules then load ~15 % faster (~35 ms a boot, 12 paired runs). Code,
# relocations and symbol versions are untouched; the full module tree the guest loads on
# demand keeps everything. objcopy writes only the ELF, so the appended signature goes too:
# the guest kernel does not enforce signatures, and checking one (RSA-4096) under TCG cost
# ~10 ms a module on every boot.
strip_for_boot() {
	objcopy --strip-unneeded \
		--remove-section=__mcount_loc --remove-section=.rela__mcount_loc \
		--remove-section=.orc_unwind --remove-section=.orc_unwind_ip \
		--remove-section=.rela.orc_unwind_ip --remove-section=.BTF "$1"
}

main() {
	[[ $# -eq 4 ]] || usage
	local init=$1 mroot=$2 rel=$3 out=$4
	need modprobe cpio readelf od objcopy
	check_init "$init"
	make_tmpdir

	local root mods
	root=$(make_modprobe_root "$mroot" "$rel")
	mods=${RUNQ_INITRD_MODULES:-$DEFAULT_MODULES}
	mods="$mods ${RUNQ_INITRD_EXTRA_MODULES:-}"
	# shellcheck disable=SC2086 # word splitting of the module list is intended
	load_order "$root" "$rel" $mods >"$TMPD/modules.load"
	[[ -s $TMPD/modules.load ]] || die "no loadable modules found for: $mods"

	local st=$TMPD/stage ko
	mkdir -p "$st"/{dev,proc,sys,rootfs}
	install -m 0755 "$init" "$st/init"
	while read -r ko; do
		install -D -m 0644 "$root$ko" "$st$ko"
		strip_for_boot "$st$ko"
	done <"$TMPD/modules.load"
	install -m 0644 "$TMPD/modules.load" "$st/modules.load"
	# No /sbin/modprobe: runq-init links it to itself once the full module tree is bound
	# (see its modprobe.rs). A second binary here would cost every boot its unpacking
	# (busybox: ~150 ms under TCG).
	log "initrd: $(wc -l <"$st/modules.load") modules for $rel"

	# Deterministic archive: fixed mtimes, sorted names (parents before children).
	find "$st" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
	chmod 0755 "$st" "$st"/{dev,proc,sys,rootfs}
	(cd "$st" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
		cpio --quiet -o -H newc -R 0:0 --reproducible) >"$out.tmp"

	# Keep the existing file (and its mtime) when nothing changed.
	if [[ -f $out ]] && cmp -s "$out.tmp" "$out"; then
		rm -f "$out.tmp"
		log "initrd $out unchanged"
	else
		chmod 0644 "$out.tmp"
		mv -f "$out.tmp" "$out"
		log "initrd written to $out ($(stat -c %s "$out") bytes)"
	fi
}

main "$@"
