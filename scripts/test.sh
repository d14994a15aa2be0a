#!/bin/bash
# Runs every test: unit tests, then the integration tests that boot VMs with the runq
# installed in $RUNQ_ROOT (make test installs it first).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export RUNQ_ROOT=${RUNQ_ROOT:-/var/lib/runq}
cargo test --release --locked --workspace --no-fail-fast
# Everything above ran with templates; the boot, stdio, exit code and exec tests run once
# more with every VM booted.
RUNQ_TEST_TEMPLATE=off cargo test --release --locked -p runq-tests --no-fail-fast \
	--test boot --test stdio --test exit_codes --test exec
