"""The socket API against a real AgentState on a real unix socket: every GET checked against the
OpenAPI document, actions, bad input, resource limits, and random requests generated from the
document. After the abuse the agent must still answer correctly and its state must be unchanged."""

from __future__ import annotations

import asyncio
import http.client as http_client
import json
import logging
import os
import re
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlencode

import jsonschema_rs
import pytest
import schemathesis
from api_harness import GPU_BIG, GPU_SMALL, ServerThread, api_config, fingerprint, http, make_state, socket_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autogit.agent.api.client import AgentApiError, AgentClient, AgentUnavailable, format_status
from autogit.agent.api.openapi import ROUTES, openapi_document
from autogit.agent.api.schema import StatusResponse
from autogit.agent.api.server import bind_unix_socket

DOC = openapi_document()
GET_ROUTES = [r for r in ROUTES if r.method == "GET" and r.path not in ("/v1/events",)]


def validator(component: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{component}", "components": DOC["components"]})


def assert_error(status: int, headers: dict[str, str], body: bytes, code: int, kind: str) -> dict:
    assert status == code, body
    assert headers["content-type"].startswith("application/json")
    assert body.count(b"\n") == 0, "errors are one line"
    validator("ErrorResponse").validate(json.loads(body))
    err = json.loads(body)["error"]
    assert err["type"] == kind
    return err


@pytest.fixture
def server():
    # Every client here is root (one uid, an admin): its quota is the cap and there is no reserve,
    # so these tests see the general cap. Per-uid quotas and the reserve: test_api_slots.py.
    config = api_config(socket_dir(), max_connections=64, max_connections_per_uid=64, admin_reserved_connections=0)
    srv = ServerThread(make_state(), config, keepalive_timeout=2.0, body_timeout=1.0).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("route", GET_ROUTES, ids=lambda r: r.path)
def test_each_get_matches_its_openapi_schema(server, route):
    status, headers, body = http(server.path, "GET", route.path)
    assert status == 200
    if route.response is not None:
        validator(route.response).validate(json.loads(body))
    elif route.path == "/metrics":
        assert headers["content-type"].startswith("text/plain")
        assert b"autogit_runners{" in body
    else:
        assert json.loads(body) == DOC


def test_reads_reflect_the_state(server):
    status = json.loads(http(server.path, "GET", "/v1/status")[2])
    assert status["phase"] == "degraded" and status["docker"]["ok"] is False and status["gitlab"]["ok"] is True
    assert status["counts"]["runners"] == {"busy": 2, "idle": 1}
    assert status["counts"]["gpus_busy"] == 1 and status["counts"]["pending_jobs"] == 5
    gpus = {g["gpu"]["id"]: g for g in json.loads(http(server.path, "GET", "/v1/gpus")[2])["gpus"]}
    assert gpus[GPU_BIG]["held_by_runner"] == "ci-host-1-g1" and gpus[GPU_BIG]["held_by_job"] == 107
    assert gpus[GPU_SMALL]["reading"]["utilization_pct"] is None  # unknown stays unknown
    jobs = {j["job"]["id"]: j for j in json.loads(http(server.path, "GET", "/v1/jobs")[2])["jobs"]}
    assert jobs[107]["status"] == "running" and jobs[107]["runner"] == "ci-host-1-g1"
    assert jobs[106]["status"] == "waiting" and jobs[106]["wait"]["reason"] == "no-matching-hardware"
    assert status["counts"]["waiting_jobs"] == sum(1 for j in jobs.values() if j["status"] == "waiting")


def test_socket_file_mode_and_group(server):
    st_ = os.stat(server.path)
    assert stat.S_ISSOCK(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o660 and st_.st_gid == 0


def test_actions_change_intents_and_publish_events(server):
    state = server.state
    status, _, body = http(server.path, "POST", f"/v1/gpus/{GPU_SMALL}/drain", b'{"reason": "fan noise"}', {"Content-Type": "application/json"})
    assert status == 200
    validator("ActionResponse").validate(json.loads(body))
    assert GPU_SMALL in state.intents.drained_gpus
    event = state.bus.history()[-1]
    assert event.type == "gpu.drained" and "fan noise" in event.message and json.loads(body)["event_seq"] == event.seq
    again = json.loads(http(server.path, "POST", f"/v1/gpus/{GPU_SMALL}/drain")[2])
    assert again["changed"] is False and state.bus.last_seq == event.seq  # idempotent, no new event
    gpu = next(g for g in json.loads(http(server.path, "GET", "/v1/gpus")[2])["gpus"] if g["gpu"]["id"] == GPU_SMALL)
    assert gpu["gpu"]["drained"] is True and gpu["operator_drained"] is True
    assert http(server.path, "POST", f"/v1/gpus/{GPU_SMALL}/undrain")[0] == 200 and not state.intents.drained_gpus
    assert http(server.path, "POST", "/v1/runners/ci-host-1-r2/drain")[0] == 200 and state.intents.drained_runners == {"ci-host-1-r2"}
    assert http(server.path, "POST", "/v1/scaling/pause")[0] == 200 and state.intents.paused
    assert json.loads(http(server.path, "GET", "/v1/status")[2])["paused"] is True
    assert http(server.path, "POST", "/v1/scaling/resume")[0] == 200 and not state.intents.paused
    assert state.wake.is_set()


def test_reload_reports_refusal_as_409_and_success_as_200(server):
    err = assert_error(*http(server.path, "POST", "/v1/config/reload"), 409, "conflict")
    assert "not available" in err["message"]
    outcomes = iter(["scaling.max_runners: Input should be >= 0", None])
    server.state.reload_handler = lambda: next(outcomes)
    err = assert_error(*http(server.path, "POST", "/v1/config/reload"), 409, "conflict")
    assert "max_runners" in err["message"] and server.state.bus.history()[-1].type == "config.rejected"
    assert http(server.path, "POST", "/v1/config/reload")[0] == 200
    assert server.state.bus.history()[-1].type == "config.reloaded"


@pytest.mark.parametrize(
    ("method", "url", "body", "code", "kind", "needle"),
    [
        ("POST", "/v1/gpus/GPU-nope/drain", None, 404, "not_found", "GPU-nope"),
        ("POST", "/v1/gpus/GPU-nope/undrain", None, 404, "not_found", "GPU-nope"),
        ("POST", "/v1/runners/r-nope/drain", None, 404, "not_found", "r-nope"),
        ("GET", "/v1/nothing", None, 404, "not_found", "/v1/nothing"),
        ("DELETE", "/v1/status", None, 405, "method_not_allowed", "GET"),
        ("POST", "/v1/scaling/pause", b"{not json", 400, "bad_request", "malformed JSON"),
        ("POST", "/v1/scaling/pause", b'{"reason": "x", "force": true}', 400, "bad_request", "'force'"),
        ("POST", "/v1/scaling/pause", b'{"reason": 5}', 400, "bad_request", "reason"),
        ("POST", "/v1/scaling/pause", b'["reason"]', 400, "bad_request", "body"),
        ("POST", "/v1/scaling/pause", json.dumps({"reason": "r" * 501}).encode(), 400, "bad_request", "reason"),
        ("POST", "/v1/scaling/pause", json.dumps({"reason": "a\nb"}).encode(), 400, "bad_request", "reason"),
        ("POST", "/v1/scaling/pause", b"x" * (64 * 1024 + 1), 413, "payload_too_large", "too large"),
        ("GET", "/v1/events?since=-1", None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=abc", None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=" + "9" * 19, None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=" + quote("²"), None, 400, "bad_request", "since"),  # isdigit(), but int() raises
        ("GET", "/v1/events?since=" + quote("١٢"), None, 400, "bad_request", "since"),  # Arabic-Indic: int() reads 12
        ("GET", "/v1/events?since=" + quote("１"), None, 400, "bad_request", "since"),  # fullwidth
        ("GET", "/v1/events?since=" + quote("7\n"), None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=%FF", None, 400, "bad_request", "since"),  # not UTF-8
        ("GET", "/v1/events?since=nan", None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=1e3", None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=+1", None, 400, "bad_request", "since"),
        ("GET", "/v1/events?since=", None, 400, "bad_request", "since"),
        ("POST", "/v1/gpus/%FF%FE/drain", None, 404, "not_found", "no GPU"),
        ("POST", "/v1/runners/%00/drain", None, 404, "not_found", "no runner"),
        ("POST", "/v1/gpus/" + quote("²") + "/undrain", None, 404, "not_found", "no GPU"),
    ],
)
def test_bad_requests_get_json_errors_and_change_nothing(server, method, url, body, code, kind, needle, caplog):
    before = fingerprint(server.state)
    err = assert_error(*http(server.path, method, url, body), code, kind)
    assert needle in err["message"]
    assert fingerprint(server.state) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "bad input must not log a traceback"


# Every character class a `reason` refuses, by example. They would forge journal lines (C0, C1,
# DEL, separators) or show an operator other text than the event holds (bidi controls, invisible
# format characters).
FORBIDDEN_IN_REASON = {
    "C0 (NUL)": "\x00", "C0 (tab)": "\t", "C0 (ESC)": "\x1b[31m", "DEL": "\x7f", "C1 (NEL)": "\x85", "C1 (CSI)": "\x9b",
    "line separator": "\u2028", "paragraph separator": "\u2029",
    "LRE": "\u202a", "RLE": "\u202b", "PDF": "\u202c", "LRO": "\u202d", "RLO": "\u202e",
    "LRI": "\u2066", "RLI": "\u2067", "FSI": "\u2068", "PDI": "\u2069",
    "LRM": "\u200e", "RLM": "\u200f", "ALM": "\u061c",
    "zero-width space": "\u200b", "BOM": "\ufeff", "soft hyphen": "\u00ad", "word joiner": "\u2060",
}


@pytest.mark.parametrize("char", FORBIDDEN_IN_REASON.values(), ids=FORBIDDEN_IN_REASON.keys())
def test_reason_refuses_hidden_characters(server, char):
    before = fingerprint(server.state)
    body = json.dumps({"reason": f"fan {char}noisy"}).encode()  # JSON escapes them: they arrive intact
    err = assert_error(*http(server.path, "POST", "/v1/scaling/pause", body), 400, "bad_request")
    assert err["message"].startswith("reason: ") and f"U+{ord(char[0]):04X}" in err["message"]
    assert fingerprint(server.state) == before


@pytest.mark.parametrize("reason", ["fan noisy — swap on Monday 🔧", "می‌خواهم (ZWNJ)", "family 👨\u200d👩\u200d👧 (ZWJ)", "x" * 500])
def test_reason_keeps_visible_text_of_any_script(server, reason):
    status, _, body = http(server.path, "POST", "/v1/scaling/pause", json.dumps({"reason": reason}).encode())
    assert status == 200, body
    assert server.state.bus.history()[-1].data["actor"].endswith(f": {reason}")


def raw_exchange(path: str, payload: bytes, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "payload",
    [
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage, e.g. TLS\r\n\r\n",
        b"POST /v1/scaling/pause HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ],
    ids=["header-too-long", "request-line-too-long", "too-many-headers", "not-http", "bad-content-length"],
)
def test_protocol_errors_are_json_too(server, payload):
    before = fingerprint(server.state)
    answer = raw_exchange(server.path, payload)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["type"] in {"bad_request", "headers_too_large"}
    assert b"aaaa" not in body  # the offending bytes are not echoed
    assert fingerprint(server.state) == before


def test_slowloris_header_trickle_is_dropped(server):
    # keepalive_timeout is 2 s in this fixture; aiohttp arms it at connect and trickled bytes
    # do not re-arm it, so the connection must be closed even though bytes keep coming.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        sock.settimeout(0.5)
        began = time.monotonic()
        closed_after = None
        sock.sendall(b"GET /v1/status HTTP/1.1\r\n")
        while time.monotonic() - began < 8:
            try:
                sock.sendall(b"X-a: b\r\n")
                if sock.recv(1024) == b"":
                    closed_after = time.monotonic() - began
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - began
                break
    assert closed_after is not None and closed_after < 5, "trickling client was not dropped"
    assert http(server.path, "GET", "/v1/status")[0] == 200


def test_slow_body_is_cut_off(server):
    # Headers complete, body promised but never sent: the body deadline (1 s here) ends it.
    began = time.monotonic()
    answer = raw_exchange(server.path, b"POST /v1/scaling/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", timeout=8)
    assert time.monotonic() - began < 4
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["type"] == "timeout"
    assert not server.state.intents.paused


def test_idle_connection_is_closed(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        sock.settimeout(6)
        began = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - began < 5


def test_connections_beyond_the_limit_are_refused_politely(server):
    # Hold 64 (the limit) idle connections, then ask on a 65th: 503 JSON, Retry-After. (Beyond
    # four pending refusals of one uid, further ones are closed unanswered: test_api_slots.py.)
    held = []
    try:
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(server.path)
            held.append(s)
        time.sleep(0.2)
        status, headers, body = http(server.path, "GET", "/v1/status")
        assert_error(status, headers, body, 503, "unavailable")
        assert headers["retry-after"] == "1"
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert http(server.path, "GET", "/v1/status")[0] == 200


def test_500_parallel_connections(server):
    # 500 at once against a cap of 64: every client gets an answer (200 or a polite 503), the
    # agent survives, and afterwards it answers normally.
    def one(_):
        try:
            return http(server.path, "GET", "/v1/status", timeout=20)[0]
        except OSError as exc:  # the listen backlog may overflow: that is the kernel's refusal
            return type(exc).__name__

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(500)))
    codes = {r for r in results}
    # Refusals beyond the few answered politely are closed unanswered (RemoteDisconnected,
    # BrokenPipeError): they must not hold descriptors either.
    assert codes <= {200, 503, "ConnectionRefusedError", "BlockingIOError", "ConnectionResetError", "RemoteDisconnected", "BrokenPipeError"}, codes
    assert results.count(200) >= 64
    assert http(server.path, "GET", "/v1/status")[0] == 200


# --- random requests generated from the OpenAPI document -------------------------------------

_SCHEMA = schemathesis.openapi.from_dict(DOC)
# Valid pause/resume/reload bodies would legitimately change state; they are covered above.
_FUZZ_OPS = [r.ok() for r in _SCHEMA.get_all_operations() if r.ok().path not in ("/v1/scaling/pause", "/v1/scaling/resume", "/v1/config/reload")]
_ROUTE_BY_KEY = {(r.method, r.path): r for r in ROUTES}
# What a parameter that names a number may be sent instead of one: digits of other scripts that
# str.isdigit() accepts ('²' which int() refuses, '١٢' which it reads), numbers past any integer
# type, float spellings, and any text at all.
_NUMBERS = "0123456789²³¹¼⅓١٢٣۴५৬൭๘໙༠၁႒០᠑᥈߀０１２ⅫⅣ𝟘𝟙"
_HOSTILE_VALUES = st.one_of(
    st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=20),
    st.text(alphabet=_NUMBERS, min_size=1, max_size=20),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e3", "0x10", " 1", "1 ", "+1", "1_000", "-0", "1.0", ""]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
)


@pytest.fixture(scope="module")
def fuzz_server():
    srv = ServerThread(make_state(), api_config(socket_dir(), max_connections=64), heartbeat=1.0).start()
    yield srv
    srv.stop()


def _hostile(case, data) -> None:
    """Replace some of the case's query and path parameters (every one the document declares for
    its operation) with hostile values."""
    for param in case.operation.query:
        if data.draw(st.booleans(), label=f"replace {param.name}"):
            case.query = {**(case.query or {}), param.name: data.draw(_HOSTILE_VALUES, label=param.name)}
    for param in case.operation.path_parameters:
        if data.draw(st.booleans(), label=f"replace {param.name}"):
            case.path_parameters = {**case.path_parameters, param.name: quote(data.draw(_HOSTILE_VALUES, label=param.name), safe="")}


def _exchange(path: str, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Like http(), but an event stream's answer is its status and headers only (it never ends)."""
    conn = http_client.HTTPConnection("autogit", timeout=10)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.settimeout(10)
    conn.sock.connect(path)
    try:
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        head = {k.lower(): v for k, v in resp.getheaders()}
        streaming = resp.status == 200 and head.get("content-type", "").startswith("application/x-ndjson")
        return resp.status, head, b"" if streaming else resp.read()
    finally:
        conn.close()


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(case=st.one_of(*[op.as_strategy() for op in _FUZZ_OPS]), data=st.data())
def test_random_requests_from_the_openapi_document(fuzz_server, case, data, caplog):
    _hostile(case, data)
    url = case.formatted_path + (("?" + urlencode(case.query, doseq=True)) if case.query else "")
    body = None if type(case.body).__name__ == "NotSet" else json.dumps(case.body).encode()
    headers = {k: v for k, v in (case.headers or {}).items() if isinstance(v, str)}
    if body is not None:
        headers["Content-Type"] = "application/json"
    before = fingerprint(fuzz_server.state)
    status, resp_headers, raw = _exchange(fuzz_server.path, case.method, url, body, headers)
    route = _ROUTE_BY_KEY[(case.method, case.operation.path)]
    if status == 200:
        if route.path == "/v1/events":
            since = (case.query or {}).get("since")
            assert since is None or re.fullmatch(r"[0-9]{1,18}", str(since)), f"since={since!r} was taken"
        elif route.response and route.content_type == "application/json":
            validator(route.response).validate(json.loads(raw))
    else:
        assert status in {400, 404, 405, 413}, (status, raw)
        assert raw.count(b"\n") == 0, "errors are one line"
        validator("ErrorResponse").validate(json.loads(raw))
    # Generated ids never name a real GPU or runner, so no request may change anything.
    assert fingerprint(fuzz_server.state) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no request may log an error"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    path=st.sampled_from([r.path.replace("{id}", GPU_BIG) for r in ROUTES if r.method == "POST"]),
    body=st.one_of(st.binary(max_size=300), st.dictionaries(st.text(max_size=10).filter(lambda k: k != "reason"), st.integers(), min_size=1).map(lambda d: json.dumps(d).encode())),
)
def test_random_bodies_on_actions_never_act(fuzz_server, path, body):
    # Any body that is not a valid ActionRequest must be refused before acting.
    try:
        json.loads(body)
        valid_json_object = isinstance(json.loads(body), dict) and set(json.loads(body)) <= {"reason"}
    except (ValueError, UnicodeDecodeError):
        valid_json_object = False
    if not body.strip() or valid_json_object:
        return
    before = fingerprint(fuzz_server.state)
    status, headers, raw = http(fuzz_server.path, "POST", path, body, {"Content-Type": "application/json"})
    assert_error(status, headers, raw, 400, "bad_request")
    assert fingerprint(fuzz_server.state) == before


def test_agent_still_answers_after_the_fuzzing(fuzz_server):
    assert json.loads(http(fuzz_server.path, "GET", "/v1/status")[2])["reconcile_count"] == 42


# --- the client ---------------------------------------------------------------------------------


async def test_client_typed_reads_and_errors(server):
    async with AgentClient(server.path) as client:
        status = await client.status()
        assert isinstance(status, StatusResponse) and status.counts.runners_total == 3
        assert {g.gpu.id for g in (await client.gpus()).gpus} == {GPU_SMALL, GPU_BIG}
        assert len((await client.jobs()).jobs) == 5 and (await client.plan()).reconcile_count == 42
        assert len((await client.runners()).runners) == 3
        done = await client.drain_runner("ci-host-1-r1", reason="reboot")
        assert done.changed and done.target == "ci-host-1-r1"
        with pytest.raises(AgentApiError) as err:
            await client.drain_gpu("GPU-none")
        assert err.value.status == 404 and err.value.type == "not_found"
        text = format_status(status)
        assert "ci-host-1: amd64" in text and "docker: FAILING" in text and "jobs: 5 pending" in text


async def test_client_raises_agent_unavailable(tmp_path):
    async with AgentClient(tmp_path / "missing.sock", timeout=2) as client:
        with pytest.raises(AgentUnavailable, match="no socket there"):
            await client.status()
    # A socket file nobody listens on: refused.
    sock = bind_unix_socket(tmp_path / "dead.sock", None)
    sock.close()
    async with AgentClient(tmp_path / "dead.sock", timeout=2) as client:
        with pytest.raises(AgentUnavailable, match="refused"):
            await client.status()


async def test_client_times_out_on_a_silent_agent(tmp_path):
    # Something accepts but never answers: the client's deadline turns it into AgentUnavailable.
    server = await asyncio.start_unix_server(lambda r, w: None, path=str(tmp_path / "mute.sock"))
    async with server, AgentClient(tmp_path / "mute.sock", timeout=0.5) as client:
        with pytest.raises(AgentUnavailable, match="timed out"):
            await client.status()


def test_stale_socket_is_replaced_but_a_live_one_is_not(server, tmp_path):
    with pytest.raises(OSError, match="another process is listening"):
        bind_unix_socket(server.config.socket, None)
    assert http(server.path, "GET", "/v1/status")[0] == 200
    stale = tmp_path / "stale.sock"
    bind_unix_socket(stale, None).close()
    sock = bind_unix_socket(stale, None)
    sock.close()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(FileExistsError):
        bind_unix_socket(tmp_path / "plain", None)
