#!/bin/bash
# debian-image.sh TAG PACKAGES [--prepare SCRIPT] [--change INSTRUCTION]...
#
# Builds a Debian image with debootstrap (minbase plus PACKAGES, comma-separated) and imports
# it into Docker as TAG: the tests' and examples' way to real software without a registry.
# SCRIPT, if given, runs with the root directory as its argument before the import; each
# --change goes to `docker import -c`. Does nothing when TAG exists already.
# Env: DOCKER (client, default /usr/bin/docker), SUITE (bookworm), MIRROR (deb.debian.org).
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 TAG PACKAGES [--prepare SCRIPT] [--change I]..." >&2; exit 2; }
tag=$1 packages=$2
shift 2
prepare=
changes=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--prepare) prepare=$2; shift 2 ;;
	--change) changes+=(-c "$2"); shift 2 ;;
	*) echo "$0: unknown argument $1" >&2; exit 2 ;;
	esac
done
docker=${DOCKER:-/usr/bin/docker}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}

log() { printf 'debian-image: %s\n' "$*" >&2; }

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
	log "$tag exists already"
	exit 0
fi
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
root=$(mktemp -d /var/tmp/debian-image-XXXXXX)
trap 'rm -rf "$root" "$root.log"' EXIT
log "debootstrap $suite with $packages for $tag (a minute or more)"
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
	tail -20 "$root.log" >&2
	exit 1
fi
rm -f "$root/var/cache/apt/archives/"*.deb
if [[ -n $prepare ]]; then
	"$prepare" "$root"
fi
log "importing $tag"
tar -C "$root" -c . | "$docker" import "${changes[@]}" - "$tag" >/dev/null
log "built $tag"
