#!/bin/bash
# build-hostile-initrd.sh: the test-only hostile guest (runq-init built with its `hostile`
# feature, see crates/runq-init/src/hostile.rs) in an initrd with the installed kernel's
# modules, for tests/hostile_guest.rs and `runq-bench hostside --attacks`. Never installed.
# Prints the initrd's path. Env: RUNQ_ROOT (default /var/lib/runq), the installed runq.
set -euo pipefail
# shellcheck source=../assets/lib.sh
. "$(dirname "$(readlink -f "$0")")/../assets/lib.sh"

workspace=$(dirname "$(dirname "$(readlink -f "$0")")")
assets=${RUNQ_ROOT:-/var/lib/runq}/qemu
target=$workspace/target/hostile-guest
[[ -r $assets/kernel/release ]] || die "no installed runq under $assets (make install)"
"${CARGO:-cargo}" build --release --locked --quiet -p runq-init --features hostile \
	--target-dir "$target" --manifest-path "$workspace/Cargo.toml" >&2
"$workspace/assets/build-initrd.sh" "$target/x86_64-unknown-linux-gnu/release/runq-init" \
	"$assets/kernel/modules" "$(cat "$assets/kernel/release")" "$target/initrd" >&2
echo "$target/initrd"
