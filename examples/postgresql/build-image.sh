#!/bin/bash
# build-image.sh [TAG]
#
# Builds a PostgreSQL image from Debian's packages (debootstrap, no registry) and imports it
# into Docker as TAG (default runq-postgres:latest). Skips the work when TAG exists already.
set -euo pipefail
tag=${1:-runq-postgres:latest}
docker=${DOCKER:-/usr/bin/docker}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}

log() { printf 'runq-postgres: %s\n' "$*" >&2; }

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
	log "$tag exists already"
	exit 0
fi
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
root=$(mktemp -d /var/tmp/runq-postgres-XXXXXX)
trap 'rm -rf "$root"' EXIT
log "debootstrap $suite with postgresql into $root (a few minutes)"
debootstrap --variant=minbase --include=postgresql,postgresql-client \
	"$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
	tail -20 "$root.log" >&2
	rm -f "$root.log"
	exit 1
}
rm -f "$root.log"
# The package's own cluster is not used: the container makes one on its data disk.
rm -rf "$root/var/lib/postgresql/"* "$root/var/cache/apt/archives/"*.deb
install -m 0755 "$(dirname "$(readlink -f "$0")")/entrypoint.sh" "$root/usr/local/bin/runq-postgres"
log "importing $tag"
tar -C "$root" -c . | "$docker" import \
	-c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	-c 'CMD ["/usr/local/bin/runq-postgres"]' - "$tag" >/dev/null
log "built $tag"
