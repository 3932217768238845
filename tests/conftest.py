"""Shared fixtures: real processes on free ports, always stopped.

``stack`` starts bundled MCP servers and the proxy as subprocesses, exactly as a
user would run them, and waits until each accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from only1mcp.jobs.bench._procs import Managed, ProcessGroup, free_port

# -- fuzzing (hypothesis): a fixed seed and a bounded number of cases by default ("ci"), the long
# run with ONLY1MCP_FUZZ=1 (`make fuzz`). Tests may read the environment; the product's CLI may not.
FUZZ = os.environ.get("ONLY1MCP_FUZZ", "") not in ("", "0")
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the test extra not installed: the fuzz files skip themselves
    pass
else:
    _QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
              HealthCheck.function_scoped_fixture]
    # ci: the same cases on every run (derandomize), no example database, a bound per test.
    _hypothesis_settings.register_profile("ci", max_examples=300, derandomize=True, database=None, deadline=None,
                                          suppress_health_check=_QUIET, print_blob=True)
    # fuzz: random seeds, many cases per test (the /mcp file sends at least 20,000 requests).
    _hypothesis_settings.register_profile("fuzz", max_examples=2500, derandomize=False, database=None,
                                          deadline=None, suppress_health_check=_QUIET, print_blob=True)
    _hypothesis_settings.load_profile("fuzz" if FUZZ else "ci")

PYTHON = sys.executable
BIN = Path(sys.executable).parent


def wait_port(port: int, proc: Managed, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail(20)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout}s:\n{proc.log_tail(20)}")


class Stack:
    def __init__(self, group: ProcessGroup, tmp: Path) -> None:
        self.group, self.tmp = group, tmp

    def fixture(self, name: str = "conformance", port: int | None = None) -> tuple[str, Managed]:
        """Start a bundled MCP server (conformance fixtures or echo); return its /mcp URL and process."""
        port = port or free_port()
        proc = self.group.start(f"{name}-{port}", [PYTHON, "-m", "only1mcp.cli", "fixture", name,
                                                   "--port", str(port)])
        wait_port(port, proc)
        return f"http://127.0.0.1:{port}/mcp", proc

    def write_config(self, body: str, port: int | None = None, proxy_extra: str = "") -> tuple[Path, int]:
        port = port or free_port()
        path = self.tmp / f"proxy-{port}.toml"
        path.write_text(f'[proxy]\nlisten = "127.0.0.1:{port}"\n{proxy_extra}\n' + textwrap.dedent(body))
        return path, port

    def proxy(self, servers: str, proxy_extra: str = "", wait_ready: bool = True) -> tuple[str, Managed]:
        """Start ``only1mcp proxy`` with the given [[servers]] TOML; return its /mcp URL and process."""
        path, port = self.write_config(servers, proxy_extra=proxy_extra)
        proc = self.group.start(f"proxy-{port}", [PYTHON, "-m", "only1mcp.cli", "proxy", "--config", str(path)])
        wait_port(port, proc, timeout=30)
        return f"http://127.0.0.1:{port}/mcp", proc

    def start(self, name: str, argv: Sequence[str]) -> Managed:
        return self.group.start(name, argv)

    def stop(self, proc: Managed) -> None:
        self.group.stop(proc)


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[str]:
    """A Redis URL (database 15) for the whole session: the machine's own on 6379 when it answers, else
    the bundled redis-server started once here (so no test skips for want of Redis)."""
    from only1mcp.infra.redis import ensure_redis

    with ensure_redis("redis://127.0.0.1:6379/15") as handle:
        yield handle.url


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with ProcessGroup(tmp_path) as group:
        yield Stack(group, tmp_path)


def run(coro):  # noqa: ANN001, ANN201 - tests call async clients from sync tests
    return asyncio.run(coro)


@contextlib.contextmanager
def conformance_proxy(tmp: Path, extra_toml: str = "") -> Iterator[str]:
    """A proxy in front of the conformance fixture as server "conf", with extra top-level tables."""
    with ProcessGroup(tmp) as group:
        stack = Stack(group, tmp)
        fixture_url, _ = stack.fixture("conformance")
        url, _ = stack.proxy(f'[[servers]]\nname = "conf"\n[[servers.replicas]]\nurl = "{fixture_url}"\n\n'
                             + textwrap.dedent(extra_toml))
        yield url


# -- trained latency models, shared by tests/models and tests/jobs (training takes about a second) ----------
# Here rather than in tests/models/conftest.py: a second module named conftest would shadow this one for
# the tests that `from conftest import …`.
_WEAK_PARAMS = {"n_estimators": 4, "max_depth": 2, "learning_rate": 0.3, "early_stopping_rounds": 2}


@pytest.fixture(scope="session")
def frame():  # noqa: ANN201
    """latency = base[tool, replica] × (1 + inflight)^1.5 × lognormal noise, 4 replicas × 5 tools."""
    from only1mcp.models.latency.features import training_frame
    from only1mcp.models.latency.synthetic import load_sensitive_events

    return training_frame(load_sensitive_events(5000, seed=5))


@pytest.fixture(scope="session")
def trained(frame):  # noqa: ANN001, ANN201
    from only1mcp.models.latency.train import train

    X, y, meta = frame
    return train(X, y, meta.ts)


@pytest.fixture(scope="session")
def weak(frame):  # noqa: ANN001, ANN201
    """The same data, a deliberately underpowered model: a worse candidate for the gate."""
    from only1mcp.models.latency.train import train

    X, y, meta = frame
    return train(X, y, meta.ts, params=_WEAK_PARAMS)


@pytest.fixture(scope="session")
def onnx_blobs(trained):  # noqa: ANN001, ANN201
    from only1mcp.models.latency.onnx import export

    return export({"p50": trained.p50, "p95": trained.p95}, trained.X_holdout)


@pytest.fixture(scope="session")
def weak_blobs(weak):  # noqa: ANN001, ANN201
    from only1mcp.models.latency.onnx import export

    return export({"p50": weak.p50, "p95": weak.p95}, weak.X_holdout)[0]
