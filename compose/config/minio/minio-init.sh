#!/bin/sh
# One-shot job (service minio-init): buckets and service accounts. Idempotent: safe on every
# `docker compose up`. One bucket per GitLab object type (GitLab requires distinct buckets with
# the consolidated object storage form), plus the runner cache.
set -eu
: "${MINIO_ENDPOINT:=http://minio:9000}"
mc alias set local "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$(cat /run/secrets/minio_root_password)" >/dev/null

GITLAB_BUCKETS="gitlab-artifacts gitlab-external-diffs gitlab-lfs gitlab-uploads gitlab-packages
gitlab-dependency-proxy gitlab-terraform-state gitlab-ci-secure-files gitlab-agent-plan-content gitlab-pages"
RUNNER_BUCKETS="runner-cache"

for b in $GITLAB_BUCKETS $RUNNER_BUCKETS; do
    mc mb --ignore-existing --region "${S3_REGION:-us-east-1}" "local/$b"
done
# the runner cache is disposable: objects older than 30 days go
mc ilm rule add --expire-days 30 local/runner-cache >/dev/null 2>&1 || true

# policy(name, buckets…): read/write on those buckets only
policy() {
    name=$1; shift
    resources=""
    for b in "$@"; do
        resources="$resources\"arn:aws:s3:::$b\",\"arn:aws:s3:::$b/*\","
    done
    cat >"/tmp/$name.json" <<JSON
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":[${resources%,}]}]}
JSON
    mc admin policy create local "$name" "/tmp/$name.json"
}
# shellcheck disable=SC2086
policy autogit-gitlab $GITLAB_BUCKETS
policy autogit-runner $RUNNER_BUCKETS

mc admin user add local gitlab "$(cat /run/secrets/minio_gitlab_secret_key)"
mc admin user add local runner "$(cat /run/secrets/minio_runner_secret_key)"
mc admin policy attach local autogit-gitlab --user gitlab 2>/dev/null || true
mc admin policy attach local autogit-runner --user runner 2>/dev/null || true
echo "minio-init: buckets and users ready"
