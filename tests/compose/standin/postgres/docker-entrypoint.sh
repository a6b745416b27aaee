#!/usr/bin/env bash
# The stand-in postgres:15's entrypoint (see Dockerfile): the parts of the
# official image's docker-entrypoint.sh that docker/docker-compose.yml uses.
set -Eeuo pipefail

log() { printf 'standin-postgres: %s\n' "$*" >&2; }

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
	exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the password of POSTGRES_USER)}"
	export POSTGRES_USER=${POSTGRES_USER:-postgres}
	export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
	log "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		${POSTGRES_INITDB_ARGS:-} >&2
	printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >&2
	export PGHOST=/var/run/postgresql PGPORT=5432 PGUSER=$POSTGRES_USER
	if [ "$POSTGRES_DB" != postgres ]; then
		echo 'CREATE DATABASE :"db";' | psql -v ON_ERROR_STOP=1 -X -q -d postgres --set db="$POSTGRES_DB"
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			if [ -x "$f" ]; then
				log "running $f"
				"$f"
			else
				log "sourcing $f"
				# shellcheck disable=SC1090
				. "$f"
			fi
			;;
		*.sql)
			log "running $f"
			psql -v ON_ERROR_STOP=1 -X -q -d "$POSTGRES_DB" -f "$f"
			;;
		*/\*) ;;
		*) log "ignoring $f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >&2
	unset PGHOST PGPORT PGUSER
	log "initialised; starting"
fi

exec "$@"
