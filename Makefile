# runq: run Docker images as QEMU/KVM virtual machines.
# Every target does its own set-up; run as root on Debian 12.

RUNQ_ROOT ?= /var/lib/runq
export RUNQ_ROOT

.PHONY: all install demo docker podman cri test bench unit lint protoc clean

all: install

## install: Debian packages, release build, virtiofsd, guest kernel, initrd, /var/lib/runq
install:
	scripts/install.sh

## demo: install, then boot a busybox container in a VM with `runq run`
demo: install
	scripts/demo.sh

## docker: install, then Docker with runq registered, dockerd running, a local busybox image
docker: install
	scripts/docker-setup.sh

## podman: install, then Debian's podman (runq is its --runtime; no daemon to set up)
podman: install
	scripts/podman-setup.sh

## cri: install, then the CNI plugins and protoc that the Kubernetes (CRI) pod tests need
cri: install
	scripts/cri-setup.sh

## test: install and set up Docker, Podman and the CRI tests' needs, then every test (unit
## tests, VM boots, Docker, containerd, Kubernetes pods through CRI, Podman)
test: docker podman cri
	scripts/test.sh

## bench: install and set up Docker, then the benchmarks (Markdown tables on stdout)
bench: docker
	cargo build --release --locked -p runq-bench
	target/x86_64-unknown-linux-gnu/release/runq-bench net
	target/x86_64-unknown-linux-gnu/release/runq-bench storage
	target/x86_64-unknown-linux-gnu/release/runq-bench boot --svg bench/boot-timeline.svg
	target/x86_64-unknown-linux-gnu/release/runq-bench hostside --attacks

## unit: the tests that need no root, QEMU or assets (protoc builds the CRI test's types)
unit: protoc
	cargo test --workspace --lib --bins

lint: protoc
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p runq-init --features hostile -- -D warnings

protoc:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler (the k8s-cri crate of tests/cri.rs generates its types with it)" >&2; exit 1; }

clean:
	cargo clean
