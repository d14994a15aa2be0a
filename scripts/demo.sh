#!/bin/bash
# Boots a busybox container in a VM with `runq run`, from a bundle built locally.
set -euo pipefail
RUNQ_ROOT=${RUNQ_ROOT:-/var/lib/runq}
top=$(cd "$(dirname "$0")/.." && pwd)

work=$(mktemp -d /tmp/runq-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$top/scripts/busybox-bundle.sh" "$work/bundle" sh -c \
	'echo "Hello from a runq VM: guest kernel $(uname -r), $(nproc) vCPU, PID $$ in its namespace"'
echo "host kernel: $(uname -r)"
"$RUNQ_ROOT/runq" --root "$work/state" run --bundle "$work/bundle" "runq-demo-$$"
