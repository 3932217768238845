"""``only1mcp anomalies tail`` as an operator runs it: a subprocess reading a real embedded broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from only1mcp.events import TOPICS, AnomalyEvent
from only1mcp.infra.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        running.create_topics([TOPICS["anomalies"]], 2)
        yield running


def event(severity: str, server: str = "sim", replica: str = "sim/1", state: str = "open", **extra: Any) -> AnomalyEvent:
    return AnomalyEvent(anomaly_id=uuid.uuid4().hex, ts=time.time(), state=state, server=server, replica=replica,
                        score=0.8, severity=severity, confidence=0.9, kind="latency",
                        explanation=f"{severity} on {replica}", opened_at=time.time(), **extra)


def publish(bootstrap: str, events: list[AnomalyEvent]) -> None:
    async def send() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for e in events:
                await producer.send_and_wait(TOPICS["anomalies"], e.to_json(), key=e.replica.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def tail(*args: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "only1mcp.cli", "anomalies", "tail", *args],
                            stdout=out.open("w"), stderr=subprocess.PIPE, text=True)


def wait_lines(out: Path, n: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines()
        if len(lines) >= n:
            return lines
        assert proc.poll() is None or len(lines) >= n, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    raise AssertionError(f"{n} lines expected, got: {out.read_text()!r}")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=15)


def test_tail_filters_by_severity_and_server_and_prints_lines_or_json(broker: EmbeddedBroker, tmp_path: Path) -> None:
    wanted = event("critical", tool="search", time_to_failure_s=120.0)
    publish(broker.bootstrap, [event("low"), event("high", server="other", replica="other/0"), wanted,
                               event("high", state="close")])
    lines_out, json_out = tmp_path / "lines.txt", tmp_path / "json.txt"
    started = time.monotonic()
    readable = tail("--from-beginning", "--severity", "high", "--server", "sim", "--bootstrap", broker.bootstrap,
                    out=lines_out)
    raw = tail("--from-beginning", "--json", "--replica", "other/0", "--bootstrap", broker.bootstrap, out=json_out)
    try:
        lines = wait_lines(lines_out, 2, readable)
        records = [AnomalyEvent.from_json(line) for line in wait_lines(json_out, 1, raw)]
    finally:
        codes = stop(readable), stop(raw)
    print(f"\ntail printed its first events {time.monotonic() - started:.1f} s after it started")
    assert codes == (0, 0)
    assert "OPEN" in lines[0] and "critical" in lines[0] and "sim/1 × search" in lines[0]
    assert "score=0.80" in lines[0] and "conf=0.90" in lines[0] and "TTF=120s" in lines[0]
    assert "critical on sim/1" in lines[0] and "latency" in lines[0]
    assert "CLOSE" in lines[1] and len(lines) == 2  # the low one and the other server's are filtered out
    assert [(r.server, r.severity) for r in records] == [("other", "high")]


def test_tail_starts_from_the_end(broker: EmbeddedBroker, tmp_path: Path) -> None:
    publish(broker.bootstrap, [event("medium", replica="sim/old")])
    out = tmp_path / "new.txt"
    proc = tail("--bootstrap", broker.bootstrap, "--limit", "1", out=out)
    time.sleep(4.0)  # subscribed and at the end by now
    publish(broker.bootstrap, [event("medium", replica="sim/new")])
    assert proc.wait(timeout=20) == 0  # --limit 1: exits after the first event
    assert "sim/new" in out.read_text() and "sim/old" not in out.read_text()


def test_tail_without_a_broker_fails_clearly(tmp_path: Path) -> None:
    from only1mcp.jobs.bench._procs import free_port

    started = time.monotonic()
    proc = tail("--bootstrap", f"127.0.0.1:{free_port()}", "--connect-timeout", "2", out=tmp_path / "none.txt")
    code = proc.wait(timeout=30)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 1 and "did not answer within 2 s" in stderr and "Traceback" not in stderr
    assert time.monotonic() - started < 15
