#!/bin/bash
# busybox-bundle.sh DIR [COMMAND...]
# Makes an OCI bundle in DIR: a root file system from Debian's busybox-static and runc's
# default config.json, running COMMAND (default: sh) without a terminal.
set -euo pipefail
dir=${1:?usage: $0 DIR [COMMAND...]}
shift
[[ -x /bin/busybox ]] || { echo "busybox-bundle: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }

rootfs=$dir/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root,home}
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
	[[ -e $rootfs/bin/$applet ]] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

rm -f "$dir/config.json"
(cd "$dir" && runc spec)
python3 - "$dir/config.json" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], sys.argv[2:] or ["sh"]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = args
json.dump(spec, open(path, "w"), indent=2)
PY
