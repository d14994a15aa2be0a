#!/bin/sh
# The server: its cluster lives on the runq disk mounted at /var/lib/postgresql/data; the
# first start makes it, later starts reuse it.
set -e
data=/var/lib/postgresql/data
cluster=$data/cluster
chown postgres:postgres "$data"
if [ ! -f "$cluster/PG_VERSION" ]; then
	su postgres -c "initdb -D $cluster --auth=trust --username=postgres" >/dev/null
	echo "host all all 0.0.0.0/0 trust" >>"$cluster/pg_hba.conf"
	echo "runq-postgres: made a new cluster in $cluster"
fi
exec su postgres -c "exec postgres -D $cluster -c listen_addresses='*'"
