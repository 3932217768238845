"""``only1mcp up --demo`` finds the demo's slow replica, and ``only1mcp anomalies tail`` shows it.

The demo fleet's last replica (``sim/2``) slows down 6x from one minute after the fleet starts
(reached over 30 s). The worker's anomaly agent must publish a medium or higher anomaly of it,
received by ``anomalies tail`` run as printed in the banner, within the demo's first five minutes
(measured from the fleet's start). Slow: about two minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from only1mcp.commands._up_support import DEMO_SLOWDOWN
from only1mcp.jobs.bench._procs import free_port

WITHIN_S = 300.0


def test_the_demo_slowdown_reaches_anomalies_tail(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("up's process checks read /proc")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP", None)
    env.pop("REDIS_URL", None)
    out_path = tmp_path / "up.out"
    up = subprocess.Popen([sys.executable, "-m", "only1mcp.cli", "up", "--demo", "--run-dir", str(tmp_path / "run"),
                           "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}",
                           "--startup-timeout", "60"], stdout=out_path.open("w"), stderr=subprocess.STDOUT,
                          env=env, cwd=tmp_path)
    tail = None
    try:
        fleet_started = _wait_for(out_path, r"only1mcp up: sim: starting", up, 90)
        _wait_for(out_path, r"only1mcp up: ready at", up, 120)
        command = re.search(r"^\s+(only1mcp anomalies tail .*)$", out_path.read_text(), re.M)
        assert command, out_path.read_text()
        argv = command.group(1).split()[1:]  # as the banner prints it, plus JSON and the slow replica
        tail_out = tmp_path / "tail.out"
        tail = subprocess.Popen([sys.executable, "-m", "only1mcp.cli", *argv, "--json", "--from-beginning",
                                 "--replica", "sim/2", "--severity", "medium"], stdout=tail_out.open("w"),
                                stderr=subprocess.STDOUT, env=env)
        deadline = fleet_started + WITHIN_S
        while True:
            found = [json.loads(line) for line in tail_out.read_text().splitlines() if line.startswith("{")]
            # opened or updated after the slowdown began (a close reports an earlier peak)
            found = [e for e in found if e["ts"] >= fleet_started + DEMO_SLOWDOWN[0] and e["state"] != "close"]
            if found:
                first = found[0]
                print(f"\n{first['severity']} {first['kind']} anomaly of sim/2 at {first['ts'] - fleet_started:.0f} s "
                      f"(slowdown from {DEMO_SLOWDOWN[0]} s): {first['explanation']}")
                assert first["replica"] == "sim/2" and first["server"] == "sim"
                break
            assert up.poll() is None, out_path.read_text()
            assert time.time() < deadline, (f"no medium+ anomaly of sim/2 within {WITHIN_S:g} s of the fleet's start\n"
                                            f"tail: {tail_out.read_text()[-3000:]}\n{_worker_log(tmp_path)}")
            time.sleep(1.0)
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=15) == 0  # Ctrl-C: a clean exit
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """The time ``pattern`` first showed up in ``path`` (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, path.read_text(errors="replace")):
            return time.time()
        assert proc.poll() is None, path.read_text(errors="replace")
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {timeout:g} s:\n{path.read_text(errors='replace')}")


def _worker_log(tmp_path: Path) -> str:
    log = tmp_path / "run" / "worker.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "worker log:\n" + "\n".join(line for line in lines if "anomal" in line)[-4000:]
