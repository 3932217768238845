"""Authentication through a real proxy process, the loopback-only rule of ``only1mcp proxy``,
and the admin API's routing and access rules.

The proxy fronts the conformance fixture with two client tokens and an admin token.
``/mcp`` and ``/metrics`` need a token (Bearer or X-API-Key), the probes stay open,
``/admin`` needs the admin token. The admin routes are also checked in process over a
small fake source: that is where their answers (200, 404, 400, 501) are pinned down,
and where the peer address can be chosen to test the loopback-only admin rule.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _raw import RawClient, expect_error, text_of
from conftest import Stack, conformance_proxy, wait_port
from starlette.applications import Starlette
from starlette.testclient import TestClient

from only1mcp.errors import INVALID_REQUEST, ConfigError
from only1mcp.jobs.bench._procs import free_port
from only1mcp.proxy.admin import AdminSource, admin_mount
from only1mcp.proxy.auth import AuthMiddleware, is_loopback_host
from only1mcp.traffic import AuthSettings

TOOL = "conf__test_simple_text"
TEXT = "This is a simple text response for testing."
CLIENT_TOKENS = ("alpha-token-0123", "beta-token-4567")
ADMIN_TOKEN = "root-token-89ab"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The /mcp URL of a proxy with client tokens and an admin token, in front of the conformance fixture."""
    tmp: Path = tmp_path_factory.mktemp("auth")
    with conformance_proxy(tmp, f"""
            [auth]
            tokens = {list(CLIENT_TOKENS)!r}
            admin_token = "{ADMIN_TOKEN}"
""".replace("'", '"')) as url:
        yield url


def _base(url: str) -> str:
    return url.removesuffix("/mcp")


def test_mcp_without_or_with_a_wrong_token_is_401(proxy: str) -> None:
    with RawClient(proxy) as raw:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"},
                        {"Authorization": f"Basic {CLIENT_TOKENS[0]}"}, {"Authorization": "Bearer " + ADMIN_TOKEN},
                        {"Authorization": "Bearer " + CLIENT_TOKENS[0][:-1]}):
            resp = raw.post(INIT, headers=headers)
            expect_error(resp, 401, INVALID_REQUEST, "Unauthorized")
            assert resp.headers["www-authenticate"].startswith("Bearer"), resp.headers
            assert resp.json()["id"] is None
        for method in ("GET", "DELETE"):  # every method on /mcp, not only POST
            assert raw.send(method, headers={"Mcp-Session-Id": "x"}).status_code == 401
        raw.assert_no_traceback()


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_client_token_serves_mcp(proxy: str, header: str) -> None:
    with RawClient(proxy) as raw:
        token = CLIENT_TOKENS[0] if header == "Authorization" else CLIENT_TOKENS[1]
        raw.http.headers[header] = f"Bearer {token}" if header == "Authorization" else token
        sid = raw.initialize()
        assert text_of(raw.call_tool(sid, TOOL)) == TEXT
        # the same session without the token is refused: the session id is no credential
        del raw.http.headers[header]
        resp = raw.post({"jsonrpc": "2.0", "id": 9, "method": "ping"}, sid=sid)
        assert resp.status_code == 401, resp.text


def test_probes_are_open_and_metrics_need_a_token(proxy: str) -> None:
    base = _base(proxy)
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200
    refused = httpx.get(f"{base}/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert "Unauthorized" in refused.json()["error"]
    ok = httpx.get(f"{base}/metrics", headers={"X-API-Key": CLIENT_TOKENS[1]})
    assert ok.status_code == 200 and "only1mcp_requests_total" in ok.text


def test_admin_needs_the_admin_token(proxy: str) -> None:
    url = f"{_base(proxy)}/admin/upstreams"
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer"), missing.text
    assert httpx.get(url, headers={"X-API-Key": ADMIN_TOKEN}).status_code == 401  # admin takes Bearer only
    for token in ("wrong", CLIENT_TOKENS[0]):
        forbidden = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
        assert forbidden.status_code == 403 and "Forbidden" in forbidden.json()["error"], forbidden.text
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if allowed.status_code == 501:  # until the gateway implements AdminSource
        assert "admin_upstreams" in allowed.json()["error"]
    else:
        assert allowed.status_code == 200 and isinstance(allowed.json(), dict), allowed.text
    config = httpx.get(f"{_base(proxy)}/admin/config", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert config.status_code in (200, 501), config.text
    assert not any(secret in config.text for secret in (*CLIENT_TOKENS, ADMIN_TOKEN)), "admin config leaks a token"


# -- the loopback-only rule of `only1mcp proxy` ------------------------------------------

def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "only1mcp.cli", "proxy", *args]


def test_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    config = tmp_path / "open.toml"
    config.write_text(f'[proxy]\nlisten = "0.0.0.0:{free_port()}"\n')
    done = subprocess.run(_cli("--config", str(config)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "refusing to listen on 0.0.0.0" in done.stderr and "[auth] tokens" in done.stderr, done.stderr
    loopback = tmp_path / "loopback.toml"  # the --listen override is checked too
    loopback.write_text(f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n')
    done = subprocess.run(_cli("--config", str(loopback), "--listen", f"[::]:{free_port()}"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "refusing to listen" in done.stderr, (done.stdout, done.stderr)


def test_a_public_address_with_tokens_starts(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "guarded.toml"
    config.write_text(f'[proxy]\nlisten = "0.0.0.0:{port}"\n[auth]\ntokens = ["{CLIENT_TOKENS[0]}"]\n')
    proc = stack.start("guarded", _cli("--config", str(config)))
    wait_port(port, proc)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    assert httpx.post(f"http://127.0.0.1:{port}/mcp", json=INIT).status_code == 401


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False),
    ("", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


# -- the admin routes, in process, over a fake source ---------------------------------------

class FakeSource:
    """Stands in for the gateway's AdminSource methods: only the admin API's routing is tested here."""

    def __init__(self) -> None:
        self.reloads = 0
        self.refuse: Exception | None = None

    def admin_upstreams(self) -> dict[str, Any]:
        return {"conf": [{"id": "conf/0", "state": "ready"}]}

    def admin_cache(self) -> dict[str, Any]:
        return {"hits": 3, "misses": 1}

    def admin_decision(self, request_id: str) -> dict[str, Any] | None:
        return {"request_id": request_id, "replica": "conf/0"} if request_id == "r-1" else None

    def admin_config(self) -> dict[str, Any]:
        return {"auth": {"tokens": "<2 redacted>"}}

    async def reload(self) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        self.reloads += 1
        return {"added": [], "removed": [], "changed": []}


def _admin_client(source: object, settings: AuthSettings, peer: str = "127.0.0.1") -> TestClient:
    app = AuthMiddleware(Starlette(routes=[admin_mount(source)]), settings)
    return TestClient(app, base_url="http://proxy", client=(peer, 40000))


def test_admin_routes_answer_from_the_source() -> None:
    source = FakeSource()
    assert isinstance(source, AdminSource)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with _admin_client(source, AuthSettings(admin_token=ADMIN_TOKEN), peer="203.0.113.7") as client:
        assert (client.get("/admin/upstreams", headers=auth)).json() == source.admin_upstreams()
        assert (client.get("/admin/cache", headers=auth)).json() == {"hits": 3, "misses": 1}
        assert (client.get("/admin/config", headers=auth)).json() == source.admin_config()
        assert (client.get("/admin/decisions/r-1", headers=auth)).json()["replica"] == "conf/0"
        unknown = client.get("/admin/decisions/r-404", headers=auth)
        assert unknown.status_code == 404 and "r-404" in unknown.json()["error"]
        reloaded = client.post("/admin/reload", headers=auth)
        assert reloaded.status_code == 200 and source.reloads == 1
        assert (client.get("/admin/reload", headers=auth)).status_code == 405
        source.refuse = ConfigError("proxy.toml", "servers[0].name", "required")
        refused = client.post("/admin/reload", headers=auth)
        assert refused.status_code == 400 and "servers[0].name" in refused.json()["error"]
        assert (client.get("/admin/upstreams")).status_code == 401


def test_admin_routes_a_source_lacks_answer_501() -> None:
    with _admin_client(object(), AuthSettings()) as client:
        for path in ("/admin/upstreams", "/admin/cache", "/admin/config", "/admin/decisions/x"):
            resp = client.get(path)
            assert resp.status_code == 501 and "Not Implemented" in resp.json()["error"], resp.text
        assert (client.post("/admin/reload")).status_code == 501


@pytest.mark.parametrize(("peer", "status"), [("127.0.0.1", 200), ("::1", 200), ("198.51.100.4", 403)])
def test_without_an_admin_token_admin_is_for_loopback_peers_only(peer: str, status: int) -> None:
    settings = AuthSettings(tokens=CLIENT_TOKENS)  # client tokens do not open the admin API either
    with _admin_client(FakeSource(), settings, peer=peer) as client:
        resp = client.get("/admin/cache", headers={"Authorization": f"Bearer {CLIENT_TOKENS[0]}"})
        assert resp.status_code == status, resp.text
        # a web page is no loopback client, even when its request comes from this host (DNS rebinding)
        assert client.post("/admin/reload", headers={"Origin": "http://evil.example"}).status_code == 403
        local = client.get("/admin/cache", headers={"Origin": "http://localhost:3000"})
        assert local.status_code == status
