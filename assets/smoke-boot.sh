#!/bin/bash
# smoke-boot.sh OUTDIR [microvm|q35]
#
# Boots the assets in OUTDIR (the build.sh layout) under TCG with a throwaway
# busybox init, using only the copied QEMU/virtiofsd started through the copied
# loader, and the launch of design.md. Passes when the guest loads every module
# in /modules.load, mounts the virtiofs tag "rootfs" and prints a marker read
# from it, then powers off. Fails with a clear error after SMOKE_TIMEOUT (60) s.
#
# Env: SMOKE_TIMEOUT (seconds, default 60), BUSYBOX (default /bin/busybox, static),
#      SMOKE_KEEP=1 keeps the scratch dir (console log) for inspection.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "$0")")/lib.sh"

HERE=$(dirname "$(readlink -f "$0")")
LOADER=ld-linux-x86-64.so.2
MARKER=runq-smoke-marker

usage() { die "usage: $0 OUTDIR [microvm|q35]"; }

# The guest's /init. Runs on busybox alone; the kernel starts it with no
# console fds (no /dev/console in the initrd), so it mounts devtmpfs first.
write_test_init() {
	cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /bin
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "runq-smoke: init started at uptime $(cut -d' ' -f1 /proc/uptime)"
while read -r ko; do
	insmod "$ko" || echo "runq-smoke: FAILED insmod $ko"
done </modules.load
echo "runq-smoke: modules loaded at uptime $(cut -d' ' -f1 /proc/uptime)"
if mount -t virtiofs rootfs /rootfs; then
	echo "runq-smoke: virtiofs mounted: $(cat /rootfs/marker)"
else
	echo "runq-smoke: FAILED to mount virtiofs"
	ls /sys/bus/virtio/devices/ 2>&1
fi
echo "runq-smoke: kernel $(uname -r)"
echo "runq-smoke: OK at uptime $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
EOF
	chmod 0755 "$1"
}

# Test initrd = the real build-initrd.sh output with a second newc archive
# holding busybox appended (the kernel unpacks concatenated archives).
make_test_initrd() {
	local out=$1 kdir=$2 bb=$3
	write_test_init "$TMPD/init"
	"$HERE/build-initrd.sh" "$TMPD/init" "$kdir/modules" "$(cat "$kdir/release")" "$TMPD/initrd.base"
	mkdir -p "$TMPD/bb/bin"
	install -m 0755 "$bb" "$TMPD/bb/bin/busybox"
	(cd "$TMPD/bb" && printf '%s\n' bin bin/busybox | cpio --quiet -o -H newc -R 0:0) >"$TMPD/initrd.bb"
	cat "$TMPD/initrd.base" "$TMPD/initrd.bb" >"$out"
}

# Start virtiofsd and wait for its socket (it must listen before QEMU starts).
start_virtiofsd() {
	local dest=$1 sock=$2 shared=$3
	"${RUN[@]}" "$dest/bin/virtiofsd" --socket-path="$sock" --shared-dir="$shared" \
		--cache=auto --sandbox=namespace 2>"$TMPD/virtiofsd.log" &
	VFSD_PID=$!
	for _ in $(seq 100); do
		[[ -S $sock ]] && return 0
		kill -0 "$VFSD_PID" 2>/dev/null || die "virtiofsd exited: $(cat "$TMPD/virtiofsd.log")"
		sleep 0.05
	done
	die "virtiofsd did not create $sock within 5 s: $(cat "$TMPD/virtiofsd.log")"
}

cleanup() {
	if [[ -n ${VFSD_PID:-} ]] && kill -0 "$VFSD_PID" 2>/dev/null; then
		kill "$VFSD_PID" 2>/dev/null || true
		wait "$VFSD_PID" 2>/dev/null || true
	fi
	if [[ ${SMOKE_KEEP:-0} == 1 ]]; then log "kept $TMPD"; else rm -rf "$TMPD"; fi
}

host_tsc_khz() {
	awk -F: '/^cpu MHz/ { printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo
}

# qemu_args MACHINE DEST KDIR: the design.md launch, minus net and agent port.
# shellcheck disable=SC2054 # commas belong to QEMU option values
qemu_args() {
	local machine=$1 dest=$2 kdir=$3 append="console=ttyS0 quiet reboot=t panic=-1 cryptomgr.notests"
	QARGS=(-L "$dest/share/qemu" -accel tcg -m 512M -smp 1
		-nodefaults -no-user-config -nographic -serial stdio -no-reboot
		-object memory-backend-memfd,id=mem,size=512M,share=on
		-chardev "socket,id=vfs0,path=$TMPD/vfsd.sock"
		-object rng-random,id=rng0,filename=/dev/urandom
		-kernel "$kdir/vmlinux" -initrd "$TMPD/initrd")
	case $machine in
	microvm)
		local khz
		khz=$(host_tsc_khz)
		[[ -n $khz ]] && append+=" tsc_early_khz=$khz"
		QARGS+=(-M microvm,memory-backend=mem -global virtio-mmio.force-legacy=false
			-device vhost-user-fs-device,queue-size=1024,chardev=vfs0,tag=rootfs
			-device virtio-serial-device,max_ports=2
			-device virtio-rng-device,rng=rng0)
		;;
	q35)
		QARGS+=(-M q35,memory-backend=mem
			-device vhost-user-fs-pci,queue-size=1024,chardev=vfs0,tag=rootfs
			-device virtio-serial-pci,max_ports=2
			-device virtio-rng-pci,rng=rng0)
		;;
	*) usage ;;
	esac
	QARGS+=(-append "$append")
}

main() {
	[[ $# -ge 1 && $# -le 2 ]] || usage
	local dest machine=${2:-microvm} kdir bb=${BUSYBOX:-/bin/busybox} limit=${SMOKE_TIMEOUT:-60}
	dest=$(readlink -f "$1")
	kdir=$dest/kernel
	need timeout cpio awk
	local f
	for f in "$dest/lib/$LOADER" "$dest/bin/qemu-system-x86_64" "$dest/bin/virtiofsd" \
		"$kdir/vmlinux" "$kdir/release"; do
		[[ -e $f ]] || die "$f missing: run build.sh first"
	done
	[[ -x $bb ]] || die "busybox not found at $bb (apt-get install busybox-static, or set BUSYBOX)"

	# Started as the proxy will start them: copied loader, empty environment.
	RUN=(env -i "$dest/lib/$LOADER" --library-path "$dest/lib")
	TMPD=$(mktemp -d "${TMPDIR:-/tmp}/runq-smoke.XXXXXX")
	trap cleanup EXIT
	mkdir "$TMPD/rootfs"
	echo "$MARKER" >"$TMPD/rootfs/marker"
	make_test_initrd "$TMPD/initrd" "$kdir" "$bb"
	qemu_args "$machine" "$dest" "$kdir"

	start_virtiofsd "$dest" "$TMPD/vfsd.sock" "$TMPD/rootfs"
	log "booting $(cat "$kdir/release") on $machine under TCG (timeout ${limit}s) ..."
	local t0 t1 rc=0
	t0=$(date +%s.%N)
	timeout -k 5 "$limit" "${RUN[@]}" "$dest/bin/qemu-system-x86_64" "${QARGS[@]}" \
		</dev/null >"$TMPD/console.log" 2>&1 || rc=$?
	t1=$(date +%s.%N)
	if ((rc == 124 || rc == 137)); then
		tail -n 20 "$TMPD/console.log" | sed 's/^/  | /' >&2
		die "boot on $machine timed out after ${limit}s (console tail above)"
	fi
	sed 's/^/  | /' "$TMPD/console.log" >&2

	((rc == 0)) || die "qemu exited with status $rc on $machine"
	grep -q "FAILED" "$TMPD/console.log" && die "guest reported a failure (see console above)"
	grep -q "virtiofs mounted: $MARKER" "$TMPD/console.log" || die "virtiofs root did not mount"
	grep -q "runq-smoke: OK" "$TMPD/console.log" || die "guest did not reach OK"
	log "PASS: $machine boot, modules, virtiofs in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s (qemu exec to exit)"
}

main "$@"
