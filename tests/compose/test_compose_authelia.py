"""Authelia's configuration, checked against what Authelia publishes (no Authelia binary can be
built here: the Go module proxy serves github.com/authelia/authelia/v4@v4.39.20 itself, but refuses
its version list, so `go install` fails, and its dependency authelia.com/provider/oauth2 v0.2.31,
403 "Go module host not permitted: Go module fetches are limited to the module-host allowlist"):

- the file, after the template filter that the compose file enables, validates against Authelia's
  published JSON schema for 4.39 (tests/compose/upstream/, sources in upstream/SOURCES.md), which
  rejects unknown keys and malformed digests;
- the users file validates against Authelia's user-database schema;
- each AUTHELIA_*_FILE variable of the compose file names a secret-enabled configuration key, by
  Authelia's own rule (internal/configuration/helpers.go, getSecretConfigMap / IsSecretKey) over its
  generated key list (internal/configuration/schema/keys.go);
- the GitLab client agrees with GitLab's side of the OIDC login, and its digest verifies the
  client secret that GitLab holds."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from ci_policy import require
from conftest import COMPOSE, DOMAIN, HERE, Stack, dist_version

UPSTREAM = HERE / "upstream"
# internal/configuration/const.go (secretSuffix) and helpers.go (IsSecretKey), tag v4.39.20
SECRET_SUFFIXES = ("key", "secret", "password", "token", "certificate_chain")
TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def _jsonschema():
    require(dist_version("jsonschema") is not None, "jsonschema missing: run scripts/compose-setup")
    import jsonschema

    return jsonschema


def render(text: str, env: dict[str, str], secret_file) -> str:
    """Authelia's template filter for the functions this configuration uses, as its source defines
    them (internal/templates/funcs.go, v4.39.20): `env`, `secret` (file content, trailing newlines
    trimmed), `mindent N "|"` (a multi-line value becomes `|` and the value indented N spaces) and
    `msquote` (single-quotes a one-line value). Anything else fails the test."""

    def one(m: re.Match) -> str:
        parts = [p.strip() for p in re.split(r'\|(?=(?:[^"]*"[^"]*")*[^"]*$)', m.group(1))]  # pipes outside quotes
        head = re.fullmatch(r'(env|secret)\s+"([^"]+)"', parts[0])
        assert head, f"template function not handled by this check: {m.group(0)}"
        value = env[head.group(2)] if head.group(1) == "env" else secret_file(head.group(2)).rstrip("\n")
        for f in parts[1:]:
            if mi := re.fullmatch(r'mindent\s+(\d+)\s+"(.)"', f):
                if "\n" in value:
                    pad = " " * int(mi.group(1))
                    value = mi.group(2) + "\n" + pad + value.replace("\n", "\n" + pad)
            elif f == "msquote":
                value = value if "\n" in value else f"'{value}'"
            else:
                raise AssertionError(f"template pipe not handled by this check: {f}")
        return value

    return TEMPLATE.sub(one, text)


def _b64(s: str) -> bytes:
    s = s.replace(".", "+")
    return base64.b64decode(s + "=" * (-len(s) % 4))


def pbkdf2_verifies(digest: str, password: str) -> bool:
    m = re.fullmatch(r"\$pbkdf2-sha512\$(\d+)\$([A-Za-z0-9/.]+)\$([A-Za-z0-9/.]+)", digest)
    assert m, digest
    key = _b64(m.group(3))
    return hashlib.pbkdf2_hmac("sha512", password.encode(), _b64(m.group(2)), int(m.group(1)), len(key)) == key


@pytest.fixture(scope="module")
def authelia(dev_stack: Stack) -> dict:
    svc = dev_stack.service("authelia")
    mounted = {s["target"] if "target" in s else f"/run/secrets/{s['source']}": s["source"] for s in svc["secrets"]}

    def secret_file(path: str) -> str:
        assert path in mounted, f"{path} is not a secret mounted into authelia"
        return Path(dev_stack.config["secrets"][mounted[path]]["file"]).read_text()

    assert svc["environment"]["X_AUTHELIA_CONFIG_FILTERS"] == "template"
    text = render((COMPOSE / "config/authelia/configuration.yml").read_text(), svc["environment"], secret_file)
    return yaml.safe_load(text)


def _validator(name: str):
    js = _jsonschema()
    schema = json.loads((UPSTREAM / f"authelia-v4.39-{name}.schema.json").read_text())
    assert schema["$id"] == f"https://www.authelia.com/schemas/v4.39/json-schema/{name}.json"
    cls = js.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator, doc) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_configuration_validates_against_authelias_schema(authelia):
    assert _errors(_validator("configuration"), authelia) == []


def test_the_schema_rejects_what_authelia_would(authelia):
    """The check above can fail: an unknown key and a plaintext client secret are refused."""
    v = _validator("configuration")
    bad = json.loads(json.dumps(authelia))
    bad["session"]["cookie"] = bad["session"].pop("cookies")  # 4.38 renamed cookie→cookies
    assert any("cookie" in e for e in _errors(v, bad))
    bad = json.loads(json.dumps(authelia))
    bad["identity_providers"]["oidc"]["clients"][0]["client_secret"] = "not-a-digest"
    assert _errors(v, bad)


def test_users_file_validates_and_the_admin_password_verifies(dev_stack: Stack):
    users = yaml.safe_load((dev_stack.root / "secrets/authelia_users.yml").read_text())
    assert _errors(_validator("user-database"), users) == []
    admin = users["users"]["admin"]
    assert admin["groups"] == ["admins"] and admin["email"] == f"admin@{DOMAIN}"
    assert pbkdf2_verifies(admin["password"], (dev_stack.root / "secrets/authelia_admin_password").read_text())


def test_every_secret_file_variable_names_a_secret_key(dev_stack: Stack):
    keys = [k for k in (UPSTREAM / "authelia-v4.39.20-keys.txt").read_text().splitlines() if k and not k.startswith("#")]
    assert "session.secret" in keys and len(keys) > 400
    secret_keys = {
        "AUTHELIA_" + k.upper().replace(".", "_") + "_FILE": k
        for k in keys
        if "[]" not in k and ".*." not in k and k.endswith(SECRET_SUFFIXES)
    }
    env = dev_stack.service("authelia")["environment"]
    file_vars = {k: v for k, v in env.items() if k.startswith("AUTHELIA_") and k.endswith("_FILE")}
    assert len(file_vars) == 6
    mounted = {f"/run/secrets/{s['source']}" for s in dev_stack.service("authelia")["secrets"]}
    for var, path in file_vars.items():
        assert var in secret_keys, f"{var}: Authelia reads no secret key by that name"
        assert path in mounted, f"{var}={path}: not mounted"
    # the secrets Authelia cannot start without are all given
    for key in ("session.secret", "storage.encryption_key", "identity_validation.reset_password.jwt_secret",
                "identity_providers.oidc.hmac_secret", "storage.postgres.password", "session.redis.password"):  # fmt: skip
        assert key in file_vars.values() or key in {secret_keys[v] for v in file_vars}, key


def test_gitlab_client_matches_gitlabs_side(authelia, dev_stack: Stack, gitlab_settings):
    client = next(c for c in authelia["identity_providers"]["oidc"]["clients"] if c["client_id"] == "gitlab")
    provider = gitlab_settings["gitlab_rails['omniauth_providers']"][0]
    args = provider["args"]
    assert provider["name"] == args["name"] == "openid_connect"
    assert args["issuer"] == f"https://auth.{DOMAIN}" == authelia["session"]["cookies"][0]["authelia_url"]
    assert args["client_options"]["identifier"] == client["client_id"]
    assert client["redirect_uris"] == [args["client_options"]["redirect_uri"]]
    assert client["redirect_uris"] == [f"https://gitlab.{DOMAIN}/users/auth/openid_connect/callback"]
    assert set(args["scope"]) == set(client["scopes"]) >= {"openid", "profile", "email", "groups"}
    assert args["pkce"] is True and client["require_pkce"] is True and client["pkce_challenge_method"] == "S256"
    assert args["client_auth_method"] == "basic" and client["token_endpoint_auth_method"] == "client_secret_basic"
    assert args["uid_field"] == "preferred_username"
    policy = authelia["identity_providers"]["oidc"]["authorization_policies"][client["authorization_policy"]]
    assert policy["default_policy"] == "two_factor"
    secret = (dev_stack.root / "secrets/gitlab_oidc_client_secret").read_text()
    assert pbkdf2_verifies(client["client_secret"], secret)
    assert not pbkdf2_verifies(client["client_secret"], secret + "x")


def test_dashboards_need_two_factors_and_everything_else_is_denied(authelia):
    ac = authelia["access_control"]
    assert ac["default_policy"] == "deny"
    assert ac["rules"] == [{"domain": [f"traefik.{DOMAIN}", f"minio.{DOMAIN}"], "subject": ["group:admins"], "policy": "two_factor"}]
    assert authelia["session"]["cookies"][0]["domain"] == DOMAIN
