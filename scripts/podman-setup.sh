#!/bin/bash
# Installs Debian's podman (with conmon and the CNI plugins it depends on) when missing.
# Podman needs no daemon and no registration: `podman run --runtime /var/lib/runq/runq`.
set -euo pipefail
step() { printf 'runq-podman: %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { step "error: run as root"; exit 1; }
if ! command -v podman >/dev/null; then
	step "installing podman"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman >/dev/null
fi
step "$(podman --version)"
