"""Exposure rules, each through the real thing:

- tokens meet client input only through ``hmac.compare_digest`` (checked on the middleware's AST);
- the admin API from a non-loopback peer: real connections from this host's own non-loopback
  address to ``only1mcp proxy`` processes, with and without an admin token (forwarding headers
  do not make a remote peer local);
- the published demo tokens: refused by ``only1mcp proxy`` unless ``[proxy] demo = true``;
- configuration errors, ``only1mcp config``, ``/admin/config`` and the webhook status name a
  credential but never show it.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Stack, wait_port

from only1mcp.errors import ConfigError
from only1mcp.jobs.bench._procs import ProcessGroup, free_port
from only1mcp.proxy.auth import DEMO_TOKENS, exposure_refusal
from only1mcp.proxy.redact import redact_url
from only1mcp.proxy.webhook import Webhook
from only1mcp.settings import load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TOKEN, ADMIN_TOKEN = "exposure-client-token-5e1f", "exposure-admin-token-77c2"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "only1mcp.cli", *args]


# -- constant-time comparison ------------------------------------------------------------------

_SECRET_NAMES = ("token", "bearer", "api_key", "presented", "digest", "_admin", "expected")


def test_the_middleware_compares_credentials_only_in_constant_time() -> None:
    tree = ast.parse((ROOT / "proxy" / "auth.py").read_text())
    middleware = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AuthMiddleware")
    plain = [ast.unparse(node) for node in ast.walk(middleware) if isinstance(node, ast.Compare)
             and any(word in ast.unparse(node).lower() for word in _SECRET_NAMES)
             and not all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops)]  # `x is None` reveals nothing
    assert plain == [], f"credentials compared with ==, != or in: {plain}"
    digests = [n for n in ast.walk(middleware) if isinstance(n, ast.Attribute) and n.attr == "compare_digest"]
    assert len(digests) >= 2  # client tokens and the admin token


# -- the admin API and non-loopback peers --------------------------------------------------------

def _own_address() -> str | None:
    """This host's address on its default route (no packet is sent), if it is not a loopback one."""
    for target in ("198.51.100.1", "10.255.255.254"):  # documentation / private: only picks the interface
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))
            except OSError:
                continue
            address = probe.getsockname()[0]
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


def _public_proxy(stack: Stack, tmp_path: Path, admin: str) -> int:
    port = free_port()
    config = tmp_path / f"public-{port}.toml"
    config.write_text(f'[proxy]\nlisten = "0.0.0.0:{port}"\n[auth]\ntokens = ["{CLIENT_TOKEN}"]\n{admin}\n')
    wait_port(port, stack.start(f"public-{port}", _cli("proxy", "--config", str(config))))
    return port


SPOOFS = ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}, {"X-Real-IP": "127.0.0.1"})


def test_admin_refuses_non_loopback_peers_without_the_admin_token(stack: Stack, tmp_path: Path) -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this host has no non-loopback address to connect from")
    loopback_only = _public_proxy(stack, tmp_path, admin="")
    guarded = _public_proxy(stack, tmp_path, admin=f'admin_token = "{ADMIN_TOKEN}"')

    # No admin token configured: loopback peers only, whatever a remote peer claims or presents.
    assert httpx.get(f"http://127.0.0.1:{loopback_only}/admin/config").status_code == 200
    remote = f"http://{address}:{loopback_only}/admin/config"
    for headers in ({}, *SPOOFS, {"Authorization": f"Bearer {CLIENT_TOKEN}"}):
        resp = httpx.get(remote, headers=headers)
        assert resp.status_code == 403, (headers, resp.text)
        assert resp.headers["content-type"] == "application/json" and "loopback" in resp.json()["error"]

    # With an admin token: every peer needs it, a remote one too; nothing else opens the API.
    remote = f"http://{address}:{guarded}/admin/config"
    for headers in ({}, *SPOOFS):
        resp = httpx.get(remote, headers=headers)
        assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer"), resp.text
        assert "admin_token" in resp.json()["error"]
    for token in ("wrong", CLIENT_TOKEN):
        resp = httpx.get(remote, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 403 and "Forbidden" in resp.json()["error"], resp.text
    assert httpx.get(remote, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{guarded}/admin/config").status_code == 401


# -- the published demo tokens ---------------------------------------------------------------------

def _settings(listen: str, demo: bool | None = None, **auth: object) -> object:
    proxy: dict[str, object] = {"listen": listen}
    if demo is not None:
        proxy["demo"] = demo
    return parse_settings({"proxy": proxy, "auth": auth}, "<test>", {})


@pytest.mark.parametrize(("auth", "setting"), [
    ({"tokens": ["mine-1", "only1mcp-demo-token"]}, "[auth] tokens"),
    ({"tokens": ["mine-1"], "admin_token": "only1mcp-demo-admin-token"}, "[auth] admin_token"),
    ({"tokens": ["only1mcp-demo-admin-token"]}, "[auth] tokens"),  # either demo token, in either place
])
def test_a_demo_token_is_refused_unless_the_proxy_is_a_demo(auth: dict[str, object], setting: str) -> None:
    for listen in ("127.0.0.1:8080", "0.0.0.0:8080"):
        refusal = exposure_refusal(_settings(listen, **auth))
        assert setting in refusal and "[proxy] demo = true" in refusal and "ONLY1MCP_PROXY_DEMO" in refusal
        assert not any(token in refusal for token in DEMO_TOKENS), refusal  # names settings, not values
        assert exposure_refusal(_settings(listen, demo=True, **auth)) == ""
    assert exposure_refusal(_settings("0.0.0.0:8080", demo=True)).startswith("refusing to listen")  # no token: still


def test_the_demo_flag_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[proxy]\ndemo = true\n")
    assert load_settings(path).proxy.demo is True
    assert load_settings(path, {"ONLY1MCP_PROXY_DEMO": "false"}).proxy.demo is False
    assert load_settings(tmp_path / "p.toml", {"ONLY1MCP_PROXY_DEMO": "1"}).proxy.demo is True
    with pytest.raises(ConfigError, match="proxy.demo: expected true or false"):
        load_settings(path, {"ONLY1MCP_PROXY_DEMO": "maybe"})
    path.write_text('[proxy]\ndemo = "yes"\n')
    with pytest.raises(ConfigError, match="proxy.demo: expected bool"):
        load_settings(path)


def test_only1mcp_proxy_starts_with_a_demo_token_only_as_a_demo(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "compose-like.toml"
    config.write_text(f'[proxy]\nlisten = "0.0.0.0:{port}"\n')
    env = {**os.environ, "ONLY1MCP_AUTH_TOKENS": "only1mcp-demo-token",
           "ONLY1MCP_ADMIN_TOKEN": "only1mcp-demo-admin-token"}
    done = subprocess.run(_cli("proxy", "--config", str(config)), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "demo token" in done.stderr and "ONLY1MCP_PROXY_DEMO" in done.stderr, done.stderr
    with ProcessGroup(tmp_path, env={**env, "ONLY1MCP_PROXY_DEMO": "true"}) as group:
        proc = group.start("demo", _cli("proxy", "--config", str(config)))
        wait_port(port, proc)
        ok = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer only1mcp-demo-token"})
        assert ok.status_code == 200
        assert "demo mode" in proc.log_tail(20)  # said once at start-up


def test_up_demo_marks_its_configuration_as_a_demo(tmp_path: Path) -> None:
    from only1mcp.cli import build_parser
    from only1mcp.commands.up import Up

    args = build_parser().parse_args(["up", "--demo", "--run-dir", str(tmp_path / "run")])
    assert Up(args, {}).plan().settings.proxy.demo is True
    args = build_parser().parse_args(["up", "--run-dir", str(tmp_path / "run")])
    assert Up(args, {}).plan().settings.proxy.demo is False


# -- credentials named, never shown -------------------------------------------------------------

@pytest.mark.parametrize(("raw", "key"), [
    ({"auth": {"tokens": "s3cret-token-as-a-string"}}, "auth.tokens"),
    ({"auth": {"admin_token": ["s3cret-admin-in-a-list"]}}, "auth.admin_token"),
    ({"events": {"hash_key": 987654321987}}, "events.hash_key"),
    ({"servers": [{"name": "s", "replicas": [{"url": "http://127.0.0.1:1/mcp"}],
                   "remediation": {"webhook": "hooks.example/services/s3cret-hook"}}]},
     "servers[s].remediation.webhook"),
], ids=["tokens", "admin-token", "hash-key", "webhook"])
def test_a_refused_credential_is_named_not_shown(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(raw, "f.toml", {})
    assert info.value.key == key
    assert not any(word in str(info.value) for word in ("s3cret", "987654321987")), str(info.value)


def test_only1mcp_config_prints_credentials_as_set(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"""
[auth]
tokens = ["{CLIENT_TOKEN}"]
admin_token = "{ADMIN_TOKEN}"
[events]
hash_key = "s3cret-hash"
[store]
redis_url = "redis://user:s3cret-redis@redis.example:6380/2"
[[servers]]
name = "web"
[servers.remediation]
webhook = "https://hooks.example/services/s3cret-hook"
[[servers.replicas]]
url = "https://bob:s3cret-pw@mcp.example/mcp?key=s3cret-query"
headers = {{ Authorization = "Bearer s3cret-upstream" }}
[[servers]]
name = "local"
[[servers.replicas]]
command = ["local-mcp"]
env = {{ API_KEY = "s3cret-env" }}
""")
    done = subprocess.run(_cli("config", "--config", str(config)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not any(secret in done.stdout for secret in ("s3cret", CLIENT_TOKEN, ADMIN_TOKEN)), done.stdout
    assert '"1 configured"' in done.stdout and '"Authorization": "***"' in done.stdout
    assert '"API_KEY": "***"' in done.stdout and "https://***@mcp.example/mcp?***" in done.stdout
    assert "redis://***@redis.example:6380/2" in done.stdout and "https://hooks.example/***" in done.stdout


@pytest.mark.parametrize(("url", "keep_path", "shown"), [
    ("http://127.0.0.1:9100/mcp", True, "http://127.0.0.1:9100/mcp"),
    ("https://u:p@h.example/mcp?k=v#f", True, "https://***@h.example/mcp?***"),
    ("https://token@h.example/x", True, "https://***@h.example/x"),
    ("http://[::1]:8/mcp", True, "http://[::1]:8/mcp"),
    ("https://hooks.example/services/T0/B0/XYZ", False, "https://hooks.example/***"),
    ("https://hooks.example/", False, "https://hooks.example/"),
    ("http://[bad/secret", True, "***"),
    ("", True, ""),
])
def test_redact_url(url: str, keep_path: bool, shown: str) -> None:
    assert redact_url(url, keep_path) == shown


def test_a_failing_webhook_reports_without_its_url(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}/services/s3cret-path?token=s3cret-query"

    async def fail(url: str) -> dict[str, object]:
        hook = Webhook(url, timeout=2.0)
        hook.send({"action": "eject"})
        for _ in range(200):
            if hook.failures:
                break
            await asyncio.sleep(0.02)
        await hook.close()
        return hook.status()

    with caplog.at_level(logging.WARNING, logger="only1mcp.webhook"):
        for url in (dead, "http://[bad/s3cret-path"):
            status = asyncio.run(fail(url))
            assert status["failures"] == 1 and status["last_error"], status
            assert "s3cret" not in str(status), status
    assert caplog.records and "s3cret" not in caplog.text, caplog.text
