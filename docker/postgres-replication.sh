#!/bin/sh
# Run by the postgres image on the first start of an empty volume: let the
# standby of docker-compose.yml connect for streaming replication with the
# same password authentication as every other client.
set -e
echo "host replication all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
