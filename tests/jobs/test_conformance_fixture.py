"""The conformance fixture passes every server check of the MCP conformance suite.

Starts ``only1mcp fixture conformance`` on a free port, runs
``infra/conformance/run.sh`` (``@modelcontextprotocol/conformance`` 0.1.16) against
it with ``--suite all -o`` so each scenario leaves a ``checks.json``, and requires every
scenario to pass except those in ``infra/conformance/expected-failures.yml`` (the SDK
server's own ``server-sse-polling`` WARNINGs), which must still fail there: 44 SUCCESS
checks over 32 scenarios. The expected counts are pinned with the suite's version: a
scenario that silently reports nothing fails the test just like a FAILURE does.

Skipped only when the suite's Node is not installed (``infra/conformance/install.sh``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _conformance import REPO, assert_all_passed, baseline_scenarios, requires_suite, run_suite

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
    proc, checks = run_suite(fixture_url, tmp_path / "results", baseline=True)
    # The baseline's scenario reports WARNINGs, not its 2 SUCCESS checks: 46 - 2.
    assert_all_passed(proc, checks, expected_checks=44, expected_failures=baseline_scenarios())
