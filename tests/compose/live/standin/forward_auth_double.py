"""A DOUBLE of Authelia (not Authelia): its forward-auth endpoint for Traefik and its health
endpoint, enough for the live compose test to see a dashboard refused without a session and let
through with one. Standard library only (it runs in the stand-in image).

Behaviour copied from Authelia v4.39.20:
- GET /api/authz/forward-auth (internal/handlers/handler_authz_impl_forwardauth.go): the target
  is X-Forwarded-Proto + X-Forwarded-Host + X-Forwarded-URI and the method X-Forwarded-Method
  (missing headers: 401). With no valid session: 401 for XHR requests or clients that do not
  accept text/html, else 302 (GET, HEAD, OPTIONS) or 303 (other methods) to the portal,
  `https://auth.<domain>/?rd=<target>&rm=<method>` (const.go: queryArgRD, queryArgRM). With a
  session: 200 and the Remote-User, Remote-Groups, Remote-Email, Remote-Name headers.
- GET /api/health: 200 {"status":"OK"}.
The only valid session is the cookie authelia_session=$STANDIN_SESSION (the test sets it).
"""

from __future__ import annotations

import json
import os
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

DOMAIN = os.environ["AUTOGIT_DOMAIN"]
SESSION = os.environ["STANDIN_SESSION"]


class Handler(BaseHTTPRequestHandler):
    server_version = "authelia-double"

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/api/health":
            return self._send(200, json.dumps({"status": "OK"}).encode(), {"Content-Type": "application/json"})
        if path == "/api/authz/forward-auth":
            return self._forward_auth()
        return self._send(200, b"<html><body>Authelia DOUBLE: sign-in portal stand-in</body></html>", {"Content-Type": "text/html"})

    do_HEAD = do_GET

    def _forward_auth(self) -> None:
        proto, host, uri = (self.headers.get(f"X-Forwarded-{h}") for h in ("Proto", "Host", "Uri"))
        method = self.headers.get("X-Forwarded-Method")
        if not (proto and host and uri and method):
            return self._send(401, b"missing X-Forwarded-* headers")
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if "authelia_session" in cookie and cookie["authelia_session"].value == SESSION:
            return self._send(200, b"", {"Remote-User": "admin", "Remote-Groups": "admins",
                                         "Remote-Email": f"admin@{DOMAIN}", "Remote-Name": "AutoGit administrator"})  # fmt: skip
        if self.headers.get("X-Requested-With", "").lower() == "xmlhttprequest" or "text/html" not in self.headers.get("Accept", ""):
            return self._send(401, b"401 Unauthorized")
        target = f"{proto}://{host}{uri}"
        status = 302 if method in ("GET", "HEAD", "OPTIONS") else 303
        self._send(status, b"", {"Location": f"https://auth.{DOMAIN}/?" + urlencode({"rd": target, "rm": method})})

    def log_message(self, fmt: str, *args) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 9091), Handler).serve_forever()
