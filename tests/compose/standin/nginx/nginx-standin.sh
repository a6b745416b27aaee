#!/bin/sh
# Runs nginx with /etc/nginx/nginx.conf; if this nginx rejects only the
# upstream `server ... resolve` parameter (before 1.27.3), with a copy of it
# without that parameter (see Dockerfile).
set -eu
conf=/etc/nginx/nginx.conf
if ! out=$(nginx -t -c "$conf" 2>&1); then
	case "$out" in
	*'invalid parameter "resolve"'*)
		sed -E 's/^([[:space:]]*server[[:space:]].*)[[:space:]]resolve[[:space:]]*;/\1;/' "$conf" >/tmp/nginx.conf
		echo "nginx-standin: $(nginx -v 2>&1) lacks 'server ... resolve' (1.27.3); names in upstreams are resolved once, at start" >&2
		conf=/tmp/nginx.conf
		;;
	*)
		printf '%s\n' "$out" >&2
		exit 1
		;;
	esac
fi
exec nginx -c "$conf" "$@"
