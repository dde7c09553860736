"""Who may do what in the GitLab DOUBLE: users, memberships, personal access tokens and their
scopes, Admin Mode, and the runner abilities, as GitLab computes them. Every rule names the
GitLab source file it comes from (gitlabhq/gitlabhq, read on 2026-12-01).

Roles (app/models/members/..., Gitlab::Access): guest 10, reporter 20, developer 30,
maintainer 40, owner 50. Group membership is inherited by the group's projects.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date

__all__ = [
    "GUEST", "REPORTER", "DEVELOPER", "MAINTAINER", "OWNER", "Denied", "SimToken", "SimUser", "Access",
    "READ_SCOPES", "WRITE_SCOPES",
]  # fmt: skip

GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50

# lib/gitlab/auth.rb: API_SCOPES, READ_API_SCOPES, ADMIN_SCOPES; `api` covers everything,
# `read_api` every GET. `manage_runner` (17.1+) covers /runners/:id (lib/api/ci/runners.rb
# allow_access_with_scope), `create_runner` POST /user/runners (lib/api/users.rb).
READ_SCOPES = frozenset({"api", "read_api"})
WRITE_SCOPES = frozenset({"api"})


class Denied(Exception):
    """An answer GitLab gives instead: status, body."""

    def __init__(self, status: int, body: dict[str, str]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def insufficient_scope(*scopes: str) -> Denied:
    # lib/gitlab/auth/auth_finders.rb InsufficientScopeError, rendered by lib/api/api_guard.rb
    return Denied(403, {
        "error": "insufficient_scope",
        "error_description": "The request requires higher privileges than provided by the access token.",
        "scope": " ".join(scopes),
    })  # fmt: skip


def forbidden(message: str = "403 Forbidden") -> Denied:
    # lib/api/helpers.rb forbidden!(reason): {"message": "403 Forbidden - <reason>"}
    return Denied(403, {"message": message if message.startswith("403") else f"403 Forbidden - {message}"})


def not_found(what: str) -> Denied:
    return Denied(404, {"message": f"404 {what} Not Found"})


@dataclass
class SimUser:
    id: int
    username: str
    admin: bool = False


@dataclass
class SimToken:
    value: str = field(repr=False)
    user_id: int
    scopes: frozenset[str]
    expires_at: date | None = None
    revoked: bool = False


@dataclass
class Access:
    """The instance's users, tokens and memberships, and the ability checks."""

    version: tuple[int, int] = (17, 11)
    admin_mode: bool = False  # application setting "Admin Mode"
    users: dict[int, SimUser] = field(default_factory=dict)
    tokens: list[SimToken] = field(default_factory=list)
    project_members: dict[int, dict[int, int]] = field(default_factory=dict)  # project → user → role
    group_members: dict[int, dict[int, int]] = field(default_factory=dict)  # group → user → role

    def add_user(self, username: str, admin: bool = False) -> SimUser:
        user = SimUser(len(self.users) + 1, username, admin)
        self.users[user.id] = user
        return user

    def add_token(self, user: SimUser, scopes: set[str] | frozenset[str], value: str | None = None, expires_at: date | None = None) -> str:
        token = SimToken(value or "glpat-" + secrets.token_urlsafe(15), user.id, frozenset(scopes), expires_at)
        self.tokens.append(token)
        return token.value

    def add_member(self, user: SimUser, *, project: int | None = None, group: int | None = None, role: int) -> None:
        if project is not None:
            self.project_members.setdefault(project, {})[user.id] = role
        elif group is not None:
            self.group_members.setdefault(group, {})[user.id] = role
        else:
            raise ValueError("a membership is of a project or a group")

    # --- authentication (lib/gitlab/auth/auth_finders.rb) ----------------------------------------
    def authenticate(self, value: str, today: date) -> tuple[SimUser, SimToken]:
        # A header that is not UTF-8 arrives surrogate-escaped; it matches no token, and a token
        # GitLab cannot find is a 401 (lib/gitlab/auth/auth_finders.rb), never a 500.
        presented = value.encode("utf-8", "surrogateescape")
        token = next((t for t in self.tokens if secrets.compare_digest(t.value.encode(), presented)), None)
        if token is None:
            raise Denied(401, {"message": "401 Unauthorized"})
        if token.revoked:
            raise Denied(401, {"error": "invalid_token", "error_description": "Token has been revoked."})
        if token.expires_at is not None and token.expires_at <= today:
            raise Denied(401, {"error": "invalid_token", "error_description": "Token has expired."})
        return self.users[token.user_id], token

    def require_scope(self, token: SimToken, allowed: set[str] | frozenset[str]) -> None:
        # manage_runner exists from 17.1 on (lib/gitlab/auth.rb, the :manage_runner scope)
        usable = set(allowed) if self.version >= (17, 1) else set(allowed) - {"manage_runner"}
        if not token.scopes & usable:
            raise insufficient_scope(*sorted(usable))

    def is_admin(self, user: SimUser, token: SimToken) -> bool:
        """can_admin_all_resources?: an admin, and with Admin Mode on only through a token with
        the admin_mode scope (lib/gitlab/auth/current_user_mode.rb, app/models/user.rb)."""
        if not user.admin:
            return False
        return not self.admin_mode or "admin_mode" in token.scopes

    # --- roles ---------------------------------------------------------------------------------
    def project_role(self, user: SimUser, project_id: int, group_of: dict[int, int | None]) -> int:
        """Direct or inherited from the project's group (app/models/project_team.rb max_member_access)."""
        direct = self.project_members.get(project_id, {}).get(user.id, 0)
        group = group_of.get(project_id)
        inherited = self.group_members.get(group, {}).get(user.id, 0) if group is not None else 0
        return max(direct, inherited)

    def group_role(self, user: SimUser, group_id: int) -> int:
        return self.group_members.get(group_id, {}).get(user.id, 0)
