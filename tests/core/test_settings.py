"""Settings: unknown keys and bad values are refused at start-up, naming the file, the key and why.

Parsed from real TOML files (``load_settings``) and through ``only1mcp config`` run
as a subprocess, exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from only1mcp.errors import ConfigError
from only1mcp.settings import load_settings

GOOD = """
    [proxy]
    listen = "127.0.0.1:9000"
    call_timeout = 12.5

    [[servers]]
    name = "web"
    [[servers.replicas]]
    url = "http://127.0.0.1:9101/mcp"
    headers = { Authorization = "Bearer x" }

    [[servers]]
    name = "time"
    namespace = "clock"
    timeout = 3
    [[servers.replicas]]
    command = ["mcp-server-time", "--local-timezone", "UTC"]
    env = { TZ = "UTC" }
"""
HTTP_REPLICA = '[[servers.replicas]]\nurl = "http://127.0.0.1:9101/mcp"\n'


def write(tmp_path: Path, body: str, name: str = "only1mcp.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def refused(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ or {})
    error = info.value
    assert str(error).startswith(f"{error.source}: {error.key}: {error.reason}")
    return error


def server(name: str = "web", extra: str = "", replica: str = HTTP_REPLICA) -> str:
    return f'[[servers]]\nname = "{name}"\n{extra}\n{replica}'


def test_good_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD), {})
    assert settings.source == str(tmp_path / "only1mcp.toml")
    assert (settings.proxy.host, settings.proxy.port, settings.proxy.call_timeout) == ("127.0.0.1", 9000, 12.5)
    web, clock = settings.servers
    assert (web.name, web.namespace, web.timeout) == ("web", "web", None)
    assert web.replicas[0].url == "http://127.0.0.1:9101/mcp"
    assert web.replicas[0].headers == {"Authorization": "Bearer x"}
    assert (clock.namespace, clock.timeout, clock.policy) == ("clock", 3.0, "p2c_ewma")
    assert clock.replicas[0].command == ("mcp-server-time", "--local-timezone", "UTC")
    assert clock.replicas[0].env == {"TZ": "UTC"}


@pytest.mark.parametrize(("body", "key"), [
    ('colour = "blue"\n', "colour"),
    ('[proxy]\nlisten_port = 8080\n', "proxy.listen_port"),
    (server(extra="retries = 3"), "servers[0].retries"),
    (server(replica=HTTP_REPLICA + "verify_tls = false\n"), "servers[web].replicas[0].verify_tls"),
], ids=["top-level", "proxy", "server", "replica"])
def test_unknown_keys(tmp_path: Path, body: str, key: str) -> None:
    error = refused(tmp_path, body)
    assert error.source == str(tmp_path / "only1mcp.toml")
    assert error.key == key
    assert error.reason.startswith("unknown key (expected one of:")
    assert f"{tmp_path / 'only1mcp.toml'}: {key}: unknown key" in str(error)


@pytest.mark.parametrize(("body", "key", "reason"), [
    ('[proxy]\nlisten = "127.0.0.1"\n', "proxy.listen", "expected HOST:PORT, got '127.0.0.1'"),
    ('[proxy]\nlisten = "127.0.0.1:http"\n', "proxy.listen", "expected HOST:PORT"),
    ('[proxy]\ncall_timeout = -1\n', "proxy.call_timeout", "must be a positive number of seconds"),
    ('[proxy]\ncall_timeout = "60"\n', "proxy.call_timeout", "expected float, got '60'"),
    ('[proxy]\nconnect_timeout = nan\n', "proxy.connect_timeout", "must be a positive number of seconds"),
    ('proxy = 5\n', "proxy", "must be a table"),
    ('[servers]\nname = "web"\n', "servers", "must be an array of tables"),
    ('[proxy]\nmax_body_bytes = 0\n', "proxy.max_body_bytes", "must be positive"),
    ('[proxy]\nlog_level = "loud"\n', "proxy.log_level", "expected debug, info, warning or error"),
    (server(extra="timeout = -2"), "servers[web].timeout", "must be a positive number of seconds"),
    (server(extra="timeout = true"), "servers[web].timeout", "must be a positive number of seconds"),
    (server(extra="timeout = nan"), "servers[web].timeout", "must be a positive number of seconds"),
    (server(extra="max_inflight = -1"), "servers[web].max_inflight", "must be an integer ≥ 0 (0 = no cap)"),
    (server(extra="max_inflight = 2.5"), "servers[web].max_inflight", "must be an integer ≥ 0 (0 = no cap)"),
    (server(extra='policy = "fastest"'), "servers[web].policy", "unknown policy 'fastest' (known: round_robin, random"),
    (server(replica='[[servers.replicas]]\nurl = "http://h/mcp"\ncommand = ["srv"]\n'),
     "servers[web].replicas[0]", "exactly one of url (HTTP upstream) or command (stdio upstream) is required"),
    (server(replica='[[servers.replicas]]\ncwd = "/tmp"\n'),
     "servers[web].replicas[0]", "exactly one of url (HTTP upstream) or command (stdio upstream) is required"),
    (server(replica='[[servers.replicas]]\nurl = "ftp://h/mcp"\n'), "servers[web].replicas[0].url",
     "expected an http:// or https:// URL"),
    (server(replica='[[servers.replicas]]\ncommand = []\n'), "servers[web].replicas[0].command",
     "expected a non-empty list of strings"),
    (server(extra="replicas = []", replica=""), "servers[web].replicas", "at least one [[servers.replicas]]"),
    (server(name="bad name"), "servers[0].name", "required: 1-64 characters"),
    (server() + server(), "servers[web].name", "duplicate server name"),
    (server("a", 'namespace = "x"') + server("b", 'namespace = "x"'), "servers[b].namespace",
     "namespace 'x' is already used by server 'a'"),
], ids=["listen-no-port", "listen-bad-port", "negative-timeout", "timeout-string", "timeout-nan", "proxy-not-table",
        "servers-not-array", "zero-body", "log-level", "server-timeout", "server-timeout-bool", "server-timeout-nan", "max-inflight-negative", "max-inflight-float",
        "policy", "url-and-command", "neither", "url-scheme", "empty-command", "no-replicas", "server-name",
        "duplicate-name", "duplicate-namespace"])
def test_bad_values(tmp_path: Path, body: str, key: str, reason: str) -> None:
    error = refused(tmp_path, body)
    assert error.key == key
    assert reason in error.reason


@pytest.mark.parametrize(("body", "key", "reason"), [
    ("max_sessions = 0", "proxy.max_sessions", "must be positive"),
    ("max_sessions_per_client = -1", "proxy.max_sessions_per_client", "must be positive"),
    ("max_sessions = 10\nmax_sessions_per_client = 11", "proxy.max_sessions_per_client",
     "must not exceed max_sessions (10), got 11"),
    ("max_inflight_per_session = 0", "proxy.max_inflight_per_session", "must be positive"),
    ("max_inflight_per_client = 0", "proxy.max_inflight_per_client", "must be positive"),
    ("max_inflight_per_session = 2.5", "proxy.max_inflight_per_session", "expected int, got 2.5"),
    ("body_timeout = 0", "proxy.body_timeout", "must be a positive number of seconds"),
    ("header_timeout = -5", "proxy.header_timeout", "must be a positive number of seconds"),
    ("body_timeout = nan", "proxy.body_timeout", "must be a positive number of seconds"),
    ('stream_write_timeout = "30"', "proxy.stream_write_timeout", "expected float, got '30'"),
    ("stream_write_timeout = -1", "proxy.stream_write_timeout", "must be a positive number of seconds"),
    ("max_stream_buffer_bytes = 100", "proxy.max_stream_buffer_bytes", "must be at least 4096 bytes"),
    ("replay_buffer_bytes = -1", "proxy.replay_buffer_bytes", "must be 0 (resumption off) or a number of bytes"),
    ("replay_total_bytes = 1.5", "proxy.replay_total_bytes", "expected int, got 1.5"),
    ("send_buffer_bytes = 100", "proxy.send_buffer_bytes", "must be 0 (the kernel's autotuning) or 4096 to 64 MiB"),
    ("send_buffer_bytes = -1", "proxy.send_buffer_bytes", "must be 0 (the kernel's autotuning) or 4096 to 64 MiB"),
], ids=["sessions", "per-client", "per-client-over-total", "inflight-session", "inflight-client", "inflight-float",
        "body-timeout", "header-timeout", "body-timeout-nan", "write-timeout-string", "write-timeout", "stream-buffer",
        "replay-buffer", "replay-total-float", "send-buffer-small", "send-buffer-negative"])
def test_bad_limits(tmp_path: Path, body: str, key: str, reason: str) -> None:
    error = refused(tmp_path, f"[proxy]\n{body}\n")
    assert error.key == key
    assert reason in error.reason


def test_limit_defaults_and_overrides(tmp_path: Path) -> None:
    proxy = load_settings(write(tmp_path, "[proxy]\n"), {}).proxy
    assert (proxy.max_sessions, proxy.max_sessions_per_client, proxy.max_inflight_per_session,
            proxy.max_inflight_per_client) == (10_000, 1_000, 100, 256)
    assert (proxy.header_timeout, proxy.body_timeout, proxy.max_stream_buffer_bytes,
            proxy.stream_write_timeout) == (10.0, 30.0, 1 << 20, 30.0)
    assert (proxy.replay_buffer_bytes, proxy.replay_total_bytes, proxy.send_buffer_bytes) == (1 << 20, 64 << 20, 256 << 10)
    proxy = load_settings(write(tmp_path, "[proxy]\nbody_timeout = 5\n"),
                          {"ONLY1MCP_PROXY_MAX_INFLIGHT_PER_SESSION": "7"}).proxy
    assert (proxy.body_timeout, proxy.max_inflight_per_session) == (5.0, 7)


def test_empty_namespaces_may_repeat(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, server("a", 'namespace = ""') + server("b", 'namespace = ""')), {})
    assert [s.namespace for s in settings.servers] == ["", ""]


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml", {})
    assert refused(tmp_path, "[proxy\n").reason.startswith("invalid TOML:")


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    settings = load_settings(path, {"ONLY1MCP_PROXY_CALL_TIMEOUT": "7.5",
                                    "ONLY1MCP_PROXY_ALLOWED_ORIGINS": "https://a.example, https://b.example",
                                    "UNRELATED_VARIABLE": "ignored"})
    assert settings.proxy.call_timeout == 7.5  # the environment beats the file's 12.5
    assert settings.proxy.allowed_origins == ("https://a.example", "https://b.example")
    assert load_settings(path, {}).proxy.call_timeout == 12.5


def test_env_errors(tmp_path: Path) -> None:
    error = refused(tmp_path, GOOD, {"ONLY1MCP_PROXY_NOPE": "1"})
    assert (error.source, error.key) == ("ONLY1MCP_PROXY_NOPE", "proxy.nope")
    assert "unknown setting" in error.reason
    error = refused(tmp_path, GOOD, {"ONLY1MCP_PROXY_CALL_TIMEOUT": "soon"})
    assert (error.source, error.key, error.reason) == ("ONLY1MCP_PROXY_CALL_TIMEOUT", "proxy.call_timeout",
                                                       "expected a float, got 'soon'")
    error = refused(tmp_path, GOOD, {"ONLY1MCP_PROXY_CALL_TIMEOUT": "-3"})  # validated like the file's value
    assert (error.key, error.reason) == ("proxy.call_timeout", "must be a positive number of seconds")


def run_config(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ONLY1MCP_")} | env
    return subprocess.run([sys.executable, "-m", "only1mcp.cli", "config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env=environ)


def test_config_command_good_file(tmp_path: Path) -> None:
    result = run_config(write(tmp_path, GOOD), ONLY1MCP_PROXY_PAGE_SIZE="25")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["proxy"]["listen"] == "127.0.0.1:9000" and resolved["proxy"]["page_size"] == 25
    assert [s["name"] for s in resolved["servers"]] == ["web", "time"]
    assert resolved["servers"][1]["replicas"][0]["command"] == ["mcp-server-time", "--local-timezone", "UTC"]
    assert resolved["source"] == str(tmp_path / "only1mcp.toml")


def test_config_command_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, server(extra="retries = 3"))
    result = run_config(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"only1mcp: configuration error: {path}: servers[0].retries: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_config(write(tmp_path, GOOD), ONLY1MCP_PROXY_NOPE="1")
    assert result.returncode == 2
    assert "ONLY1MCP_PROXY_NOPE: proxy.nope: unknown setting" in result.stderr


def test_remediation_defaults_and_values(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, server("a") + server("b", '[servers.outlier]\nmax_ejected_share = 0.25\n')
                                   + server("c", '[servers.remediation]\nauto = false\nmax_out_share = 0.75\n'
                                                 'min_out_s = 0\nwebhook = "https://alerts.example/hook"\n'
                                                 'webhook_timeout = 0.5\n')), {})
    a, b, c = (s.remediation for s in settings.servers)
    assert (a.auto, a.max_out_share, a.min_out_s, a.webhook, a.webhook_timeout) == (True, 0.5, 10.0, "", 2.0)
    assert b.max_out_share == 0.25  # not set: the server's outlier max_ejected_share
    assert (c.auto, c.max_out_share, c.min_out_s, c.webhook, c.webhook_timeout) == (
        False, 0.75, 0.0, "https://alerts.example/hook", 0.5)
    assert "mcp.remediation" in settings.decisions.topics


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ('auto = "no"', "auto", "expected bool, got 'no'"),
    ("max_out_share = 1.5", "max_out_share", "must be between 0 and 1"),
    ("max_out_share = nan", "max_out_share", "expected float"),
    ("min_out_s = -1", "min_out_s", "must be zero or positive"),
    ('webhook = "ftp://x/hook"', "webhook", "expected an http:// or https:// URL"),
    ("webhook = 5", "webhook", "expected str, got 5"),
    ("webhook_timeout = 0", "webhook_timeout", "must be positive"),
    ("automatic = true", "automatic", "unknown key (expected one of: auto, max_out_share, min_out_s, webhook"),
], ids=["auto", "share", "share-nan", "min-out", "webhook-scheme", "webhook-type", "webhook-timeout", "unknown"])
def test_remediation_bad_values(tmp_path: Path, extra: str, key: str, reason: str) -> None:
    error = refused(tmp_path, server(extra=f"[servers.remediation]\n{extra}\n"))
    assert error.key == f"servers[web].remediation.{key}"
    assert reason in error.reason, error.reason


def test_remediation_must_be_a_table(tmp_path: Path) -> None:
    error = refused(tmp_path, server(extra="remediation = true"))
    assert (error.key, error.reason) == ("servers[web].remediation", "must be a table")

def test_anomaly_defaults_and_a_good_table(tmp_path: Path) -> None:
    defaults = load_settings(write(tmp_path, ""), {}).anomaly
    assert defaults.enabled and 0.25 <= defaults.tick_interval <= 0.5
    assert (defaults.topic, defaults.remediation_topic) == ("mcp.anomalies", "mcp.remediation")
    assert (defaults.critical_action, defaults.high_action, defaults.medium_action, defaults.low_action) == (
        "eject", "drain", "log", "log")
    assert defaults.high_min_confidence == 0.9 and defaults.valid_for == 5.0
    assert defaults.features == ("error_rate", "timeout_rate", "latency_p50_ms", "latency_p95_ms")
    assert (defaults.window, defaults.max_window, defaults.min_calls, defaults.per_tool) == (1.0, 10.0, 5, False)
    anomaly = load_settings(write(tmp_path, """
        [anomaly]
        enabled = false
        tick_interval = 0.5
        window = 10
        features = ["error_rate", "latency_p95_ms", "inflight_mean"]
        min_calls = 3
        down_after = 3
        high_action = "alert"
        close_after = 30
        valid_for = 8
        state_dir = "/var/lib/only1mcp/anomaly"
        """), {}).anomaly
    assert (anomaly.enabled, anomaly.tick_interval, anomaly.window, anomaly.min_calls) == (False, 0.5, 10.0, 3)
    assert anomaly.features == ("error_rate", "latency_p95_ms", "inflight_mean")
    assert (anomaly.high_action, anomaly.close_after, anomaly.valid_for) == ("alert", 30.0, 8.0)


@pytest.mark.parametrize(("body", "key", "reason"), [
    ("tick_interval = 2", "anomaly.tick_interval", "must be between 0.05 and 0.5 seconds"),
    ("tick_interval = 0", "anomaly.tick_interval", "must be between 0.05 and 0.5 seconds"),
    ('features = ["error_rate", "cpu"]', "anomaly.features", "(unknown: cpu)"),
    ("features = []", "anomaly.features", "expected distinct names among calls_per_s"),
    ('features = ["error_rate", "error_rate"]', "anomaly.features", "expected distinct names"),
    ('critical_action = "reboot"', "anomaly.critical_action", "expected one of eject, drain, alert, log, got 'reboot'"),
    ("high_min_confidence = 1.5", "anomaly.high_min_confidence", "must be between 0 and 1"),
    ("close_after = -1", "anomaly.close_after", "must be positive"),
    ("min_calls = 0", "anomaly.min_calls", "must be positive"),
    ("min_calls = 2.5", "anomaly.min_calls", "expected int, got 2.5"),
    ('enabled = "yes"', "anomaly.enabled", "expected bool, got 'yes'"),
    ("valid_for = nan", "anomaly.valid_for", "expected float, got nan"),
    ("colour = 1", "anomaly.colour", "unknown key (expected one of:"),
], ids=["tick-slow", "tick-zero", "feature-unknown", "features-empty", "features-twice", "action", "confidence",
        "close-after", "min-calls", "min-calls-float", "enabled", "valid-for-nan", "unknown"])
def test_anomaly_bad_values(tmp_path: Path, body: str, key: str, reason: str) -> None:
    error = refused(tmp_path, f"[anomaly]\n{body}\n")
    assert error.key == key
    assert reason in error.reason


def test_a_small_max_sessions_alone_lowers_the_per_client_default(tmp_path: Path) -> None:
    proxy = load_settings(write(tmp_path, "[proxy]\nmax_sessions = 10\n"), {}).proxy
    assert (proxy.max_sessions, proxy.max_sessions_per_client) == (10, 10)
    proxy = load_settings(write(tmp_path, "[proxy]\nmax_sessions = 10\nmax_sessions_per_client = 4\n"), {}).proxy
    assert proxy.max_sessions_per_client == 4


def test_cache_scope_and_adaptive_ttl_settings(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, server(extra='[servers.tools.t]\ncache_ttl = 5\n')), {})
    assert settings.servers[0].tools["t"].cache_scope == "client"  # per client unless declared shared
    assert (settings.cache.adaptive_ttl, settings.cache.min_ttl, settings.cache.max_ttl) == (False, 1.0, 3600.0)
    body = server(extra='[servers.tools.t]\ncache_scope = "shared"\n') + "\n[cache]\nadaptive_ttl = true\nmax_ttl = 60\n"
    settings = load_settings(write(tmp_path, body), {})
    assert settings.servers[0].tools["t"].cache_scope == "shared" and settings.cache.max_ttl == 60.0
    error = refused(tmp_path, server(extra='[servers.tools.t]\ncache_scope = "everyone"\n'))
    assert error.key == "servers[web].tools.t.cache_scope" and "expected one of client, shared" in error.reason
    error = refused(tmp_path, "[cache]\nmin_ttl = 10\nmax_ttl = 5\n")
    assert error.key == "cache.min_ttl" and "must not exceed max_ttl (5 s)" in error.reason
    error = refused(tmp_path, "[cache]\nmin_ttl = 0\n")
    assert error.key == "cache.min_ttl" and "must be positive" in error.reason
