"""GitLab's omnibus settings (GITLAB_OMNIBUS_CONFIG, Ruby evaluated as /etc/gitlab/gitlab.rb).
No GitLab can run here, so they are checked against GitLab's own documentation of them:

- Ruby evaluates the whole value (tests/compose/gitlab_rb_eval.rb records every assignment);
- every key it assigns is one that omnibus-gitlab's gitlab.rb template documents
  (files/gitlab-config-template/gitlab.rb.template at tag 19.3.0+ce.0, the pinned image's
  version; the extracted list is tests/compose/upstream/gitlab-rb-keys.txt). That catches
  misspelt keys and keys that moved, such as nginx['listen_https'], which GitLab 19 reads as
  gitlab_rails['nginx']['listen_https'];
- the consolidated object storage names a bucket for each object type the template lists, each
  bucket distinct and created by the MinIO init job;
- the values wire GitLab to this stack's services, and each secret it reads is mounted."""

from __future__ import annotations

import re

from conftest import COMPOSE, DOMAIN, HERE, Stack, eval_gitlab_rb

KEYS_FILE = HERE / "upstream/gitlab-rb-keys.txt"


def documented_keys() -> set[str]:
    return {ln for ln in KEYS_FILE.read_text().splitlines() if ln and not ln.startswith("#")}


def test_key_list_is_gitlabs(gitlab_settings):
    keys = documented_keys()
    assert len(keys) > 1000
    header = KEYS_FILE.read_text().splitlines()[:4]
    assert any("tag 19.3.0+ce.0" in h for h in header)
    assert {"external_url", "gitlab_rails['db_host']", "gitlab_workhorse['api_ci_long_polling_duration']"} <= keys


def test_every_assigned_key_is_documented(gitlab_settings):
    undocumented = sorted(set(gitlab_settings) - documented_keys())
    assert undocumented == []


def test_a_moved_key_is_caught(ruby_bin):
    """The check above can fail: GitLab 19's template has no nginx['listen_https'] any more."""
    got = eval_gitlab_rb(ruby_bin, "nginx['listen_https'] = false\ngitlab_rails['nginx']['listen_https'] = false\n")
    assigned = {k for k, _ in got["settings"]}
    assert assigned - documented_keys() == {"nginx['listen_https']"}


def test_image_is_the_documented_version(dev_stack: Stack):
    assert dev_stack.service("gitlab")["image"] == "gitlab/gitlab-ce:19.3.0-ce.0"


def test_one_bucket_per_object_type_and_each_is_created(gitlab_settings):
    prefix = "gitlab_rails['object_store']['objects']['"
    types_documented = {k[len(prefix) :].split("'")[0] for k in documented_keys() if k.startswith(prefix)}
    buckets = {k[len(prefix) :].split("'")[0]: v for k, v in gitlab_settings.items() if k.startswith(prefix) and k.endswith("['bucket']")}
    assert set(buckets) == types_documented
    assert len(set(buckets.values())) == len(buckets), "a bucket is shared by two object types"
    init = (COMPOSE / "config/minio/minio-init.sh").read_text()
    created = set(re.search(r'GITLAB_BUCKETS="([^"]*)"', init).group(1).split())
    assert created == set(buckets.values())
    assert gitlab_settings["gitlab_rails['object_store']['enabled']"] is True


def test_wired_to_this_stack(gitlab_settings, dev_stack: Stack):
    s = gitlab_settings
    assert s["external_url"] == f"https://gitlab.{DOMAIN}"
    # TLS ends at Traefik; GitLab's nginx listens on plain HTTP behind it
    assert s["gitlab_rails['nginx']['listen_https']"] is False and s["gitlab_rails['nginx']['listen_port']"] == 80
    assert s["letsencrypt['enable']"] is False
    subnet = dev_stack.config["networks"]["platform"]["ipam"]["config"][0]["subnet"]
    assert s["gitlab_rails['trusted_proxies']"] == [subnet] == s["gitlab_rails['nginx']['real_ip_trusted_addresses']"]
    # external PostgreSQL and Redis: the compose services, the bundled ones off
    assert s["postgresql['enable']"] is False and s["redis['enable']"] is False
    assert (s["gitlab_rails['db_host']"], s["gitlab_rails['db_port']"]) == ("postgres", 5432)
    assert s["gitlab_rails['db_database']"] == "gitlabhq_production" and s["gitlab_rails['db_username']"] == "gitlab"
    assert s["gitlab_rails['redis_host']"] == s["gitlab_workhorse['redis_host']"] == "redis"
    assert s["gitlab_workhorse['api_ci_long_polling_duration']"] == "50s"
    conn = s["gitlab_rails['object_store']['connection']"]
    assert conn["provider"] == "AWS" and conn["endpoint"] == "http://minio:9000" and conn["path_style"] is True
    assert conn["aws_access_key_id"] == "gitlab"
    assert s["gitlab_rails['gitlab_shell_ssh_port']"] == 2222
    assert "openid_connect" in s["gitlab_rails['omniauth_allow_single_sign_on']"]


def test_database_setup_creates_the_extensions_gitlab_needs():
    sql = (COMPOSE / "config/postgres/initdb/10-autogit.sh").read_text()
    for ext in ("pg_trgm", "btree_gist", "plpgsql", "amcheck"):
        assert f"CREATE EXTENSION IF NOT EXISTS {ext};" in sql
    assert "\\connect gitlabhq_production" in sql


def test_secrets_read_are_mounted_and_none_is_inline(gitlab_rb, dev_stack: Stack):
    mounted = {s["source"] for s in dev_stack.service("gitlab")["secrets"]}
    assert set(gitlab_rb["secrets"]) == mounted
    config = dev_stack.service("gitlab")["environment"]["GITLAB_OMNIBUS_CONFIG"]
    for value in dev_stack.secret_values().values():
        assert value.strip() not in config
    for key in ("db_password", "redis_password", "initial_root_password"):
        assert gitlab_rb_value(gitlab_rb, f"gitlab_rails['{key}']").startswith("secret-from-/run/secrets/")


def gitlab_rb_value(gitlab_rb: dict, key: str):
    return dict(gitlab_rb["settings"])[key]
