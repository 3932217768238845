"""infra/priority.py: the loop's processes run nicer than the request path, never the other way."""

from __future__ import annotations

import os
import subprocess
import sys

from only1mcp.infra.priority import lower_priority


def test_lowers_a_child_relative_to_us_and_never_raises_it_back() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert lower_priority(child.pid, 5)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
        assert lower_priority(child.pid, 2)  # already nicer than asked: left as it is
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
        assert not lower_priority(child.pid, 0)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
    finally:
        child.kill()
        child.wait()


def test_a_process_that_is_gone_is_reported_not_raised(caplog) -> None:  # noqa: ANN001 - pytest fixture
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not lower_priority(child.pid, 5)
    assert f"could not lower the priority of process {child.pid}" in caplog.text
