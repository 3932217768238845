"""infra/priority.py: the loop's processes run nicer than the request path, never the other way, and
their autogroup with them when they lead their own session (never the group of anyone else)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from only1mcp.infra.priority import lower_priority

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]
AUTOGROUPS = Path("/proc/self/autogroup").exists()


def autogroup_nice(pid: int) -> int | None:
    """The autogroup's nice value; None for a process in the root autogroup (a session that started
    before autogroups, as CI's runner may be), whose file reads empty."""
    text = Path(f"/proc/{pid}/autogroup").read_text().split()
    return int(text[-1]) if text else None


def test_lowers_a_child_relative_to_us_and_never_raises_it_back() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    child = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        assert lower_priority(child.pid, 5)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
        assert lower_priority(child.pid, 2)  # already nicer than asked: left as it is
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
        assert not lower_priority(child.pid, 0)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
        if AUTOGROUPS:  # its own session: its own autogroup, which now weighs like its niceness
            assert autogroup_nice(child.pid) == min(19, ours + 5)
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not AUTOGROUPS, reason="the kernel has no autogroup scheduling (nothing to leave alone)")
def test_a_child_in_our_session_leaves_our_autogroup_alone() -> None:
    ours = autogroup_nice(os.getpid())
    child = subprocess.Popen(SLEEPER)  # same session, same autogroup as this process
    try:
        assert lower_priority(child.pid, 5)
        assert autogroup_nice(child.pid) == autogroup_nice(os.getpid()) == ours
    finally:
        child.kill()
        child.wait()


def test_a_process_that_is_gone_is_reported_not_raised(caplog) -> None:  # noqa: ANN001 - pytest fixture
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not lower_priority(child.pid, 5)
    assert f"could not lower the priority of process {child.pid}" in caplog.text
