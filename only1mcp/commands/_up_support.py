"""Helpers of ``only1mcp up``: the demo fleet, TOML writing, and small network and process checks."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["to_toml", "demo_fleet", "anomaly_subscriber_command", "DEFAULT_BASE", "DEMO_SLOWDOWN", "HOST"]

DEFAULT_BASE = ".only1mcp"
DEMO_SLOWDOWN = (60, 240)  # seconds after the fleet starts: the last demo replica's slowdown
HOST = "127.0.0.1"


def demo_fleet(ports: list[int], seed: int = 0) -> list[dict[str, Any]]:
    """The ``--fleet`` spec of the demo replicas: default profiles, 4 workers each, and the last
    replica slowing down (6x, reached over 30 s) from 1 to 4 minutes in: something for the anomaly
    agent within the demo's first minutes (its detectors learn the normal first)."""
    from only1mcp.jobs.sim.model import DEFAULT_PROFILE

    fleet = []
    for i, port in enumerate(ports):
        profile = json.loads(json.dumps(DEFAULT_PROFILE))
        profile["workers"] = 4
        if i == len(ports) - 1 and len(ports) > 1:
            profile["faults"] = [{"kind": "latency_ramp", "start": DEMO_SLOWDOWN[0], "end": DEMO_SLOWDOWN[0] + 30,
                                 "factor": 6.0, "until": DEMO_SLOWDOWN[1]}]
        fleet.append({"port": port, "replica_id": f"r{i}", "seed": seed + i, "profile": profile})
    return fleet


def anomaly_subscriber_command(bootstrap: str) -> str:
    """The command that prints the anomalies the worker publishes, as they come."""
    return f"only1mcp anomalies tail --bootstrap {bootstrap}"


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(data: Mapping[str, Any]) -> str:
    """A configuration mapping as TOML: scalars first, then ``[table]``s and ``[[array]]``s of
    tables; anything deeper is written inline. Enough for only1mcp configurations."""
    out: list[str] = []
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_table_array(v)}
    out += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        if _is_table(value):
            out += ["", f"[{_key(key)}]"] + [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
    for key, value in data.items():
        if _is_table_array(value):
            for item in value:
                out += ["", f"[[{_key(key)}]]"] + [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _configured_redis(config: str | None) -> str | None:
    if not config:
        return None
    with open(config, "rb") as fh:
        store = tomllib.load(fh).get("store")
    url = store.get("redis_url") if isinstance(store, dict) else None
    return url if isinstance(url, str) and url else None


def _has_command(name: str) -> bool:
    from only1mcp.cli import COMMANDS

    return name in COMMANDS


def _fail(reason: str) -> bool:
    raise RuntimeError(reason)


def _tcp(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int:
    try:
        with _NO_PROXY.open(url, timeout=2.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return HOST
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _mask(url: str) -> str:
    return re.sub(r"//([^:/@]*):([^@]*)@", r"//\1:***@", url)


def _shell_quote(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_./:=@%+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def _mcp_server_time() -> str | None:
    beside = Path(sys.executable).parent / "mcp-server-time"
    if beside.exists():
        return str(beside)
    return shutil.which("mcp-server-time")


def _ignore_in_git(run_dir: Path) -> None:
    """The run directory (and ``.only1mcp`` above it) hold nothing to commit."""
    for folder in (run_dir, *(p for p in run_dir.parents if p.name == DEFAULT_BASE)):
        marker = folder / ".gitignore"
        if not marker.exists():
            with contextlib.suppress(OSError):
                marker.write_text("*\n")
