#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d), as the
# superuser, before the server listens on TCP. Creates GitLab's and Authelia's roles and
# databases, and the extensions GitLab's migrations need but may not create as a non-superuser:
# pg_trgm and btree_gist (required), amcheck (used by GitLab's database checks), plpgsql (built in;
# listed so a missing one fails here, not in a migration).
set -eu
gitlab_pw=$(cat /run/secrets/gitlab_db_password)
authelia_pw=$(cat /run/secrets/authelia_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v gitlab_pw="$gitlab_pw" -v authelia_pw="$authelia_pw" <<'SQL'
CREATE ROLE gitlab LOGIN PASSWORD :'gitlab_pw';
CREATE DATABASE gitlabhq_production OWNER gitlab ENCODING 'UTF8';
CREATE ROLE authelia LOGIN PASSWORD :'authelia_pw';
CREATE DATABASE authelia OWNER authelia ENCODING 'UTF8';
\connect gitlabhq_production
CREATE EXTENSION IF NOT EXISTS plpgsql;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE EXTENSION IF NOT EXISTS amcheck;
SQL
