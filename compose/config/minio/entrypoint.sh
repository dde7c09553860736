#!/bin/sh
# Reads the root password from the file named by MINIO_ROOT_PASSWORD_FILE (a compose secret),
# so that the password is in no environment variable the compose file shows.
set -eu
if [ -n "${MINIO_ROOT_PASSWORD_FILE:-}" ]; then
    MINIO_ROOT_PASSWORD=$(cat "$MINIO_ROOT_PASSWORD_FILE")
    export MINIO_ROOT_PASSWORD
    unset MINIO_ROOT_PASSWORD_FILE
fi
exec "$@"
