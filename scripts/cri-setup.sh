#!/bin/bash
# Prepares this machine for tests/cri.rs (containerd's CRI plugin driving runq as a Kubernetes
# RuntimeClass handler): the CNI plugins the pods' networks are made with, and protoc, which
# the k8s-cri crate's build script needs to generate the CRI gRPC types. Idempotent; as root.
# The images come from the local Docker (scripts/docker-setup.sh) and the test builds and
# imports them itself; containerd comes with docker.io.
set -euo pipefail
step() { printf 'runq-cri: %s\n' "$*" >&2; }
die() { printf 'runq-cri: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root"

missing=()
# Debian's containernetworking-plugins installs to /usr/lib/cni, where the test's containerd
# config points (bin_dir), not to /opt/cni/bin.
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
	missing+=(containernetworking-plugins)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v containerd >/dev/null || missing+=(containerd)
if ((${#missing[@]})); then
	step "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
step "ready: cd tests && cargo test --release --test cri"
