#!/bin/sh
# Stand-in for the official postgres image's entry point, keeping the part of its contract the
# compose file relies on (docker-library/postgres docker-entrypoint.sh): POSTGRES_USER,
# POSTGRES_PASSWORD_FILE, POSTGRES_INITDB_ARGS, data in $PGDATA (/var/lib/postgresql/data), and on
# an empty data directory the *.sh / *.sql files of /docker-entrypoint-initdb.d run once against a
# server that listens on the socket only. The server is Debian's PostgreSQL 17.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chown -R postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
: "${POSTGRES_USER:=postgres}"
export POSTGRES_USER
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    cat "$POSTGRES_PASSWORD_FILE" >"$pwfile"
    # shellcheck disable=SC2086
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" -w start
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "postgres-entrypoint: running $f"; sh "$f" ;;
            *.sql) echo "postgres-entrypoint: running $f"; psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -f "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql
