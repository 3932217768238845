"""The conformance fixture passes every server check of the MCP conformance suite.

Starts ``only1mcp fixture conformance`` on a free port, runs
``infra/conformance/run.sh`` (``@modelcontextprotocol/conformance`` 0.1.16) against
it with ``-o`` so each scenario leaves a ``checks.json``, and requires all 40 checks
of the 30 active scenarios to be SUCCESS. The expected counts are pinned with the
suite's version: a scenario that silently reports nothing (e.g. a WARNING instead
of its checks) fails the test just like a FAILURE does.

Skipped only when the suite's Node is not installed (``infra/conformance/install.sh``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _conformance import REPO, assert_all_passed, requires_suite, run_suite

pytestmark = requires_suite


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(proc: subprocess.Popen, port: int, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"fixture exited with {proc.returncode} before listening:\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"fixture did not listen on {port} within {timeout}s")


@pytest.fixture
def fixture_url(tmp_path: Path):
    port = _free_port()
    log_path = tmp_path / "fixture.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "only1mcp.cli", "fixture", "conformance", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        _wait_for_port(proc, port, log_path)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_fixture_passes_every_conformance_check(fixture_url: str, tmp_path: Path) -> None:
    assert_all_passed(*run_suite(fixture_url, tmp_path / "results"))
