#!/bin/bash
# Makes Docker use runq: installs docker.io if missing, registers the runq runtime in
# /etc/docker/daemon.json (keeping every other setting), starts dockerd by hand when it is
# not running (these machines have no systemd) or reloads it, and imports a busybox image
# built from Debian's busybox-static, since no registry is reachable.
# --register-only: only the daemon.json entry, and a reload if dockerd runs (make install).
set -euo pipefail
RUNQ_ROOT=${RUNQ_ROOT:-/var/lib/runq}
IMAGE=${RUNQ_BUSYBOX_IMAGE:-busybox:latest}
DAEMON_JSON=${DAEMON_JSON:-/etc/docker/daemon.json}
DOCKER=/usr/bin/docker
top=$(cd "$(dirname "$0")/.." && pwd)
step() { printf 'runq-docker: %s\n' "$*" >&2; }
die() { printf 'runq-docker: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $RUNQ_ROOT/runq ]] || die "$RUNQ_ROOT/runq missing: run make install first"
register_only=false
[[ ${1:-} == --register-only ]] && register_only=true

if ! command -v dockerd >/dev/null; then
	$register_only && exit 0
	step "installing docker.io"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

register() {
	mkdir -p "$(dirname "$DAEMON_JSON")"
	python3 - "$DAEMON_JSON" "$RUNQ_ROOT/runq" <<'PY'
import json, os, sys
path, runq = sys.argv[1], sys.argv[2]
config = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        config = json.load(f)
runtimes = config.setdefault("runtimes", {})
entry = runtimes.setdefault("runq", {})
entry["path"] = runq
entry.setdefault("runtimeArgs", [])
# The same runtime with every VM booted, never restored from a template (the tests' second
# run; Docker 20.10 passes no annotations to choose it per container).
runtimes["runq-booted"] = {"path": runq, "runtimeArgs": ["--template", "off"]}
with open(path + ".runq-tmp", "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(path + ".runq-tmp", path)
PY
}

# The daemon of /var/run/docker.sock: its pid file names it, where another dockerd (a test's
# userns-remap daemon) may run beside it.
main_dockerd() {
	local pid
	pid=$(cat /var/run/docker.pid 2>/dev/null || true)
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

docker_ready() { "$DOCKER" info >/dev/null 2>&1; }

wait_for_docker() {
	local deadline=$((SECONDS + 60))
	until docker_ready; do
		((SECONDS < deadline)) || die "dockerd did not answer within 60 s (see /var/log/runq-dockerd.log)"
		sleep 0.2
	done
}

step "registering runq in $DAEMON_JSON"
register
if $register_only; then
	# A running dockerd rereads its own daemon.json on SIGHUP.
	if [[ $DAEMON_JSON == /etc/docker/daemon.json && -n $(main_dockerd) ]]; then
		kill -HUP "$(main_dockerd)"
	fi
	exit 0
fi
if [[ -n $(main_dockerd) ]]; then
	step "reloading dockerd"
	kill -HUP "$(main_dockerd)"
	wait_for_docker
else
	step "starting dockerd"
	setsid dockerd >/var/log/runq-dockerd.log 2>&1 </dev/null &
	wait_for_docker
fi
"$DOCKER" info --format '{{json .Runtimes}}' | grep -q '"runq"' ||
	die "dockerd does not list the runq runtime after the reload"

if ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
	step "importing $IMAGE from Debian's busybox-static"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	"$top/scripts/busybox-bundle.sh" "$work" >/dev/null
	tar -C "$work/rootfs" -c . | "$DOCKER" import -c 'CMD ["sh"]' - "$IMAGE" >/dev/null
fi
step "ready: $DOCKER run --runtime runq --rm $IMAGE uname -r"
