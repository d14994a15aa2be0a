#!/bin/sh
# prepare-root.sh ROOT: the image's root before import. The package's own cluster is not
# used (the container makes one on its data disk); the entrypoint goes in.
set -e
rm -rf "$1/var/lib/postgresql/"*
install -m 0755 "$(dirname "$(readlink -f "$0")")/entrypoint.sh" "$1/usr/local/bin/runq-postgres"
