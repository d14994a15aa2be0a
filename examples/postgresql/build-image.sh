#!/bin/bash
# build-image.sh [TAG]
#
# Builds the PostgreSQL image from Debian's packages (debootstrap, no registry) and imports it
# into Docker as TAG (default runq-postgres:latest); nothing to do when TAG exists.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
exec "$here/../../scripts/debian-image.sh" "${1:-runq-postgres:latest}" postgresql,postgresql-client \
	--prepare "$here/prepare-root.sh" \
	--change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["/usr/local/bin/runq-postgres"]'
