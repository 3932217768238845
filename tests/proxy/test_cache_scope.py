"""Cache scope and adaptive TTLs through a real proxy in front of a real upstream
(``_hinted_upstream.py``, which counts its own executions and returns the cache hints it is asked for).

Two clients are two bearer tokens. A read-only tool's cached result answers only the client that
caused it unless the tool is ``cache_scope = "shared"`` or the result says ``cacheScope: "public"``;
``ttlMs`` sets an entry's TTL (capped at ``[cache] max_ttl``); a tool that is not read-only is never
cached whatever its result says; adaptive TTLs grow for a stable result and shrink for a changing one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from only1mcp.jobs.bench._procs import free_port
from tests.conftest import wait_port
from tests.proxy._raw import RawClient, final, text_of

UPSTREAM = Path(__file__).with_name("_hinted_upstream.py")
TOKENS = ("tok-a-0123456789", "tok-b-0123456789")
AUTH = f'\n[auth]\ntokens = ["{TOKENS[0]}", "{TOKENS[1]}"]\n'


def _upstream(stack) -> str:  # noqa: ANN001
    port = free_port()
    proc = stack.start(f"hinted-{port}", [sys.executable, str(UPSTREAM), str(port)])
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}/mcp"


def _proxy(stack, tools: str, extra: str = "") -> str:  # noqa: ANN001
    """A proxy with servers "c" and "s" on one upstream, both with the given [servers.tools.*] tables
    (two servers: adaptive TTLs are learned per server and tool)."""
    upstream = _upstream(stack)
    body = "".join(f'[[servers]]\nname = "{name}"\n[[servers.replicas]]\nurl = "{upstream}"\n'
                   + tools.replace("NAME", name) + "\n" for name in ("c", "s"))
    url, _ = stack.proxy(body + AUTH + extra)
    return url


class _Client:
    """One client (one token) with one session."""

    def __init__(self, url: str, token: str) -> None:
        self.raw = RawClient(url)
        self.raw.http.headers["Authorization"] = f"Bearer {token}"
        self.sid = self.raw.initialize()

    def call(self, tool: str, **arguments: Any) -> str:
        return text_of(self.raw.call_tool(self.sid, tool, arguments))

    def counts(self) -> dict[str, int]:
        return json.loads(self.call("c__counts"))

    def close(self) -> None:
        self.raw.close()


def _clients(url: str) -> tuple[_Client, _Client]:
    return _Client(url, TOKENS[0]), _Client(url, TOKENS[1])


def _admin(url: str) -> Any:
    return httpx.get(url.replace("/mcp", "/admin/cache")).json()  # loopback: no admin token needed


def _metrics(url: str) -> str:
    return httpx.get(url.replace("/mcp", "/metrics"), headers={"Authorization": f"Bearer {TOKENS[0]}"}).text


def test_scope_client_never_answers_another_client(stack) -> None:  # noqa: ANN001
    url = _proxy(stack, "[servers.tools.read]\ncache_ttl = 60.0\n")  # the default scope: client
    a, b = _clients(url)
    try:
        assert a.call("c__read", key="k", mode="changing") == "k#1"
        assert a.call("c__read", key="k", mode="changing") == "k#1"  # the same client: from the cache
        assert b.call("c__read", key="k", mode="changing") == "k#2"  # another client: not A's result
        assert b.call("c__read", key="k", mode="changing") == "k#2"  # B's own entry
        assert a.call("c__read", key="k", mode="changing") == "k#1"  # and A still has its own
        assert a.counts()["read k"] == 2  # the upstream ran once per client
    finally:
        a.close()
        b.close()


def test_scope_shared_answers_every_client(stack) -> None:  # noqa: ANN001
    url = _proxy(stack, '[servers.tools.read]\ncache_ttl = 60.0\ncache_scope = "shared"\n')
    a, b = _clients(url)
    try:
        assert a.call("s__read", key="k", mode="changing") == "k#1"
        assert b.call("s__read", key="k", mode="changing") == "k#1"  # A's cached result, as declared
        assert a.counts()["read k"] == 1
        stats = _admin(url)
        assert stats["hits"] == 1 and stats["misses"] == 1, stats
    finally:
        a.close()
        b.close()


def test_stateless_clients_are_kept_apart_too(stack) -> None:  # noqa: ANN001
    """2026-07-28 requests have no session: the client identity comes from each request's token."""
    url = _proxy(stack, "[servers.tools.read]\ncache_ttl = 60.0\n")
    texts = []
    for token in (TOKENS[0], TOKENS[1], TOKENS[0]):
        with RawClient(url) as raw:
            raw.http.headers["Authorization"] = f"Bearer {token}"
            resp = raw.stateless("tools/call", {"name": "c__read", "arguments": {"key": "k", "mode": "changing"}})
            assert resp.status_code == 200, resp.text
            texts.append(text_of(final(resp)))
    assert texts == ["k#1", "k#2", "k#1"]


def test_cache_hints_scope_and_ttl(stack) -> None:  # noqa: ANN001
    url = _proxy(stack, "[servers.tools.read]\ncache_ttl = 60.0\n[servers.tools.write]\ncache_ttl = 60.0\n",
                 extra="\n[cache]\nmax_ttl = 2.0\n")
    # The tool is client-scoped: the hints alone decide what is shared.
    a, b = _clients(url)
    try:
        # "public": shared although the tool is client-scoped.
        assert a.call("c__read", key="pub", mode="changing", cacheScope="public") == "pub#1"
        assert b.call("c__read", key="pub", mode="changing", cacheScope="public") == "pub#1"
        # "private": per client.
        assert a.call("c__read", key="priv", mode="changing", cacheScope="private") == "priv#1"
        assert b.call("c__read", key="priv", mode="changing", cacheScope="private") == "priv#2"
        assert a.call("c__read", key="priv", mode="changing", cacheScope="private") == "priv#1"
        # ttlMs 0: immediately stale, never reused.
        assert a.call("c__read", key="zero", mode="changing", ttlMs=0) == "zero#1"
        assert a.call("c__read", key="zero", mode="changing", ttlMs=0) == "zero#2"
        # ttlMs shorter than cache_ttl: the hint wins; longer than max_ttl (2 s): capped.
        assert a.call("c__read", key="short", mode="changing", ttlMs=500) == "short#1"
        assert a.call("c__read", key="long", mode="changing", ttlMs=600_000) == "long#1"
        assert a.call("c__read", key="short", mode="changing", ttlMs=500) == "short#1"  # still fresh
        time.sleep(0.6)
        assert a.call("c__read", key="short", mode="changing", ttlMs=500) == "short#2"  # 500 ms are over
        assert a.call("c__read", key="long", mode="changing", ttlMs=600_000) == "long#1"  # within max_ttl
        time.sleep(1.5)
        assert a.call("c__read", key="long", mode="changing", ttlMs=600_000) == "long#2"  # past max_ttl
        # Not read-only: never cached, whatever the result claims.
        for _ in range(3):
            a.call("c__write", key="w", ttlMs=60_000, cacheScope="public")
        assert a.counts()["write w"] == 3
    finally:
        a.close()
        b.close()


def test_private_hint_beats_shared_scope(stack) -> None:  # noqa: ANN001
    url = _proxy(stack, '[servers.tools.read]\ncache_ttl = 60.0\ncache_scope = "shared"\n')
    a, b = _clients(url)
    try:
        assert a.call("s__read", key="p", mode="changing", cacheScope="private") == "p#1"
        assert b.call("s__read", key="p", mode="changing", cacheScope="private") == "p#2"
        assert a.call("s__read", key="p", mode="changing", cacheScope="private") == "p#1"
        assert b.call("s__read", key="p", mode="changing", cacheScope="private") == "p#2"
        assert a.call("s__read", key="x", mode="changing", cacheScope="unheard-of") == "x#1"
        assert b.call("s__read", key="x", mode="changing", cacheScope="unheard-of") == "x#2"  # not understood: kept apart
        assert a.counts() == {"read p": 2, "read x": 2}
    finally:
        a.close()
        b.close()


def _ttl(url: str, server: str = "c", tool: str = "read") -> float:
    return _admin(url)["adaptive_ttl"]["ttls"][server][tool]["ttl"]


def test_adaptive_ttl_grows_for_a_stable_result_and_shrinks_for_a_changing_one(stack) -> None:  # noqa: ANN001
    url = _proxy(stack, "[servers.tools.read]\ncache_ttl = 0.4\n",
                 extra="\n[cache]\nadaptive_ttl = true\nmin_ttl = 0.1\nmax_ttl = 30.0\n")
    a, _b = _clients(url)
    try:
        a.call("c__read", key="st")  # stored for the configured 0.4 s
        time.sleep(0.5)
        a.call("c__read", key="st")  # expired, and the same again: 0.4 × 1.5
        assert abs(_ttl(url) - 0.6) < 1e-9, _admin(url)
        time.sleep(0.7)
        a.call("c__read", key="st")  # 0.6 × 1.5, and stored for 0.9 s
        assert abs(_ttl(url) - 0.9) < 1e-9
        time.sleep(0.45)  # past the configured 0.4 s, well within the learned 0.9 s
        a.call("c__read", key="st")
        assert a.counts()["read st"] == 3  # answered from the cache: the learned TTL is in force
        metrics = _metrics(url)
        assert 'only1mcp_cache_ttl_seconds{server="c",tool="read"} 0.9' in metrics, \
            [line for line in metrics.splitlines() if "ttl" in line]

        a.call("c__read", key="ch", mode="changing")  # stored for 0.9 s
        time.sleep(1.0)
        a.call("c__read", key="ch", mode="changing")  # expired, and different: 0.9 × 0.5
        assert abs(_ttl(url) - 0.45) < 1e-9
        view = _admin(url)["adaptive_ttl"]["ttls"]["c"]["read"]
        assert view["unchanged"] == 2 and view["changed"] == 1 and view["configured"] == 0.4, view
        assert "s" not in _admin(url)["adaptive_ttl"]["ttls"]  # learned per server and tool
    finally:
        a.close()
        _b.close()


def test_adaptive_ttl_is_off_unless_asked(stack) -> None:  # noqa: ANN001
    url = _proxy(stack, "[servers.tools.read]\ncache_ttl = 0.3\n")
    a, b = _clients(url)
    try:
        a.call("c__read", key="st")
        time.sleep(0.4)
        a.call("c__read", key="st")
        time.sleep(0.35)  # past the fixed 0.3 s: a grown TTL (0.45 s) would still hold it
        a.call("c__read", key="st")
        assert a.counts()["read st"] == 3
        assert _admin(url)["adaptive_ttl"] == {"enabled": False, "min_ttl": 1.0, "max_ttl": 3600.0, "ttls": {}}
    finally:
        a.close()
        b.close()
