"""Floods and slow clients against a real proxy process in front of real fixture servers.

Each offender has its own token (so its own client identity) and gets a precise error —
429 with ``TOO_MANY_SESSIONS`` or ``TOO_MANY_INFLIGHT`` and ``Retry-After``, 408 with the
connection closed, or its SSE stream cut with ``STREAM_OVERRUN`` and the upstream call
cancelled — while a well-behaved client on the same proxy keeps getting answers. Memory is
checked on the proxy's own /proc status (resident and peak), and the caps on /metrics.
The limits are small here so that each test stays fast; the p99 bar is the benchmark's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _raw import RawClient, text_of
from conftest import Stack

from only1mcp.errors import INVALID_REQUEST, STREAM_OVERRUN, TOO_MANY_INFLIGHT, TOO_MANY_SESSIONS
from only1mcp.jobs.bench import _offenders as off
from only1mcp.jobs.bench._procs import Managed, ProcessGroup
from only1mcp.proxy.limits import Limits, Watchdog
from only1mcp.proxy.sessions import SessionLimit, SessionStore
from only1mcp.settings import ProxySettings

GOOD, FLOOD, SLOW, BUSY, STREAM, OTHER = (f"{name}-token-{i:04d}" for i, name in enumerate(
    ["good", "flood", "slow", "busy", "stream", "other"]))
PER_CLIENT, INFLIGHT, BODY_TIMEOUT, BUFFER, WRITE_TIMEOUT, IDLE, HEAD_TIMEOUT = 20, 10, 1.5, 65536, 2.0, 6.0, 2.0
COUNT, SIZE = 2000, 30_000  # a 60 MB progress stream if nobody stopped it


# -- the session store on its own ------------------------------------------------------------

def test_store_caps_per_client_then_overall_and_reaps_idle_sessions() -> None:
    store = SessionStore(idle_timeout=0.2, max_sessions=3, max_per_client=2)
    a1, _a2 = (store.create("2025-11-25", {}, {}, "a") for _ in range(2))
    with pytest.raises(SessionLimit) as mine:
        store.create("2025-11-25", {}, {}, "a")
    assert (mine.value.status, mine.value.code, mine.value.retry_after) == (429, TOO_MANY_SESSIONS, 1)
    assert "already holds 2 sessions" in mine.value.message
    store.create("2025-11-25", {}, {}, "b")
    with pytest.raises(SessionLimit) as full:
        store.create("2025-11-25", {}, {}, "c")
    assert full.value.status == 503 and "holds 3 sessions" in full.value.message
    assert store.delete(a1.id)  # type: ignore[arg-type]
    store.create("2025-11-25", {}, {}, "c")  # a freed place is taken again
    time.sleep(0.3)  # every session idles out: the next create reaps them first
    store.create("2025-11-25", {}, {}, "a")
    assert len(store) == 1 and store.clients() == 1


# -- the watchdog and a stream write to a client that never reads --------------------------------

def test_watchdog_cancels_only_overdue_tasks_and_lets_them_answer() -> None:
    async def main() -> list[str]:
        watchdog, said = Watchdog(tick=0.05), []

        async def wait(name: str, limit: float, work: float) -> None:
            task = watchdog.arm(limit)
            try:
                await asyncio.sleep(work)
                said.append(f"{name} done")
            except asyncio.CancelledError:
                if not watchdog.fired(task):
                    raise
                said.append(f"{name} timed out")
            finally:
                watchdog.disarm(task)

        quick = asyncio.ensure_future(wait("quick", 5.0, 0.01))
        slow = asyncio.ensure_future(wait("slow", 0.1, 5.0))
        other = asyncio.ensure_future(wait("other", 5.0, 5.0))
        await asyncio.gather(quick, slow)
        other.cancel()  # a cancellation that is not the watchdog's goes through
        with pytest.raises(asyncio.CancelledError):
            await other
        assert len(watchdog) == 0
        return said

    started = time.perf_counter()
    assert asyncio.run(main()) == ["quick done", "slow timed out"]
    assert time.perf_counter() - started < 2.0


def test_a_stream_write_that_never_gets_through_is_given_up() -> None:
    settings = ProxySettings(stream_write_timeout=0.2)

    async def main() -> tuple[bool, bool, float]:
        limits = Limits(lambda: settings)
        stuck = asyncio.Event()

        async def never(message: dict[str, object]) -> None:  # a client that reads nothing
            await stuck.wait()

        async def instant(message: dict[str, object]) -> None:
            return None

        started = time.perf_counter()
        dropped = await limits.write(never, b"data: x\n\n")
        elapsed = time.perf_counter() - started
        assert limits.refused["stream_write_timeout"] == 1
        return dropped, await limits.write(instant, b"data: y\n\n"), elapsed

    dropped, written, elapsed = asyncio.run(main())
    assert (dropped, written) == (False, True)
    assert 0.2 <= elapsed < 0.2 + 1.5, elapsed  # the watchdog ticks every 0.25 s


# -- a real proxy -------------------------------------------------------------------------------

class Front:
    def __init__(self, url: str, proxy: Managed, faults: Managed) -> None:
        self.url, self.proxy, self.faults = url, proxy, faults
        self.base = url.removesuffix("/mcp")

    def metric(self, name: str) -> float:
        text = httpx.get(self.base + "/metrics", headers={"Authorization": f"Bearer {GOOD}"}).text
        match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))

    def refused(self, limit: str) -> float:
        return self.metric(f'only1mcp_limit_refusals_total{{limit="{limit}"}}')


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    tmp: Path = tmp_path_factory.mktemp("floods")
    with ProcessGroup(tmp) as group:
        stack = Stack(group, tmp)
        faults_url, faults = stack.fixture("faults")
        tokens = ", ".join(f'"{t}"' for t in (GOOD, FLOOD, SLOW, BUSY, STREAM, OTHER))
        url, proxy = stack.proxy(f"""
            [auth]
            tokens = [{tokens}]

            [[servers]]
            name = "faults"
            [[servers.replicas]]
            url = "{faults_url}"
            """, proxy_extra=f"max_sessions = 200\nmax_sessions_per_client = {PER_CLIENT}\n"
                             f"max_inflight_per_session = {INFLIGHT}\nmax_inflight_per_client = {INFLIGHT}\n"
                             f"body_timeout = {BODY_TIMEOUT}\nmax_stream_buffer_bytes = {BUFFER}\n"
                             f"stream_write_timeout = {WRITE_TIMEOUT}\nsession_idle_timeout = {IDLE}\n"
                             f"header_timeout = {HEAD_TIMEOUT}\n")
        yield Front(url, proxy, faults)


class WellBehaved:
    """A client with its own token calling echo in a loop on a thread while an offender runs."""

    def __init__(self, url: str) -> None:
        self.raw = RawClient(url)
        self.raw.http.headers["Authorization"] = f"Bearer {GOOD}"
        self.answers: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sid = self.raw.initialize()
        while not self._stop.is_set():
            word = uuid.uuid4().hex
            started = time.perf_counter()
            try:
                got = text_of(self.raw.call_tool(sid, "faults__echo", {"text": word}))
            except (AssertionError, httpx.HTTPError) as exc:
                self.failures.append(repr(exc)[:300])
                continue
            if got == word:
                self.answers.append(time.perf_counter() - started)
            else:
                self.failures.append(f"wrong answer {got!r}")
            time.sleep(0.02)

    def __enter__(self) -> WellBehaved:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.raw.assert_no_traceback()
        self.raw.close()

    def assert_served(self) -> None:
        assert not self.failures, self.failures[:3]
        assert len(self.answers) >= 3, f"only {len(self.answers)} answers while the offender ran"
        assert max(self.answers) < 5.0, f"slowest answer {max(self.answers):.2f} s"


def test_session_flood_gets_429_sessions_stay_capped_and_idle_ones_are_reaped(front: Front) -> None:
    rss_before = off.rss_kib(front.proxy.pid)
    with WellBehaved(front.url) as good:
        counts, replies = asyncio.run(off.session_flood(front.url, FLOOD, 600, concurrency=8))
        good_sid = good.raw.initialize()  # another client may still open sessions
        assert text_of(good.raw.call_tool(good_sid, "faults__echo", {"text": "mine"})) == "mine"
    good.assert_served()
    assert counts == {"200": PER_CLIENT, f"429/{TOO_MANY_SESSIONS}": 600 - PER_CLIENT}, counts
    refusal = next(r for r in replies if r.status == 429)
    assert "already holds 20 sessions" in refusal.message
    assert refusal.retry_after is not None and 1 <= int(refusal.retry_after) <= IDLE
    assert refusal.data == {"retryAfter": int(refusal.retry_after)}
    assert front.refused("sessions_per_client") >= 600 - PER_CLIENT
    assert PER_CLIENT < front.metric("only1mcp_sessions") <= PER_CLIENT + 5  # the flood's 20, the good client's
    grown_mib = (off.rss_kib(front.proxy.pid) - rss_before) / 1024
    assert grown_mib < 20, f"the proxy grew {grown_mib:.1f} MiB under a session flood"

    # The flood's sessions idle out and are reaped: the same client may open sessions again.
    time.sleep(int(refusal.retry_after) + 0.5)
    again, _ = asyncio.run(off.session_flood(front.url, FLOOD, PER_CLIENT + 1, concurrency=1))
    assert again == {"200": PER_CLIENT, f"429/{TOO_MANY_SESSIONS}": 1}, again


def test_slowloris_body_gets_408_and_the_connection_closed(front: Front) -> None:
    with RawClient(front.url) as raw:
        raw.http.headers["Authorization"] = f"Bearer {SLOW}"
        sid = raw.initialize()

    async def dribblers() -> list[tuple[off.Reply, bool]]:
        return list(await asyncio.gather(*(off.slow_body(front.url, SLOW, sid, interval=0.2, give_up_s=15)
                                           for _ in range(20))))

    with WellBehaved(front.url) as good:
        outcomes = asyncio.run(dribblers())
    good.assert_served()
    for reply, closed in outcomes:
        assert (reply.status, reply.code) == (408, INVALID_REQUEST), reply
        assert "Request Timeout: the body did not arrive within 1.5 s" in reply.message
        assert closed, "the connection stayed open after the 408"
        # the watchdog ticks every 0.25 s; the margin is for a loaded machine, not for the limit
        assert BODY_TIMEOUT <= reply.elapsed_s < BODY_TIMEOUT + 5, reply.elapsed_s
    assert front.refused("body_timeout") >= 20


def test_a_stalled_request_head_or_an_idle_connection_is_closed(front: Front) -> None:
    """What uvicorn does not bound: a connection that never completes its request line and headers."""
    port = int(front.url.split(":")[2].split("/")[0])

    def stall(head: bytes) -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(head)
            started = time.perf_counter()
            assert sock.recv(100) == b""  # closed, nothing answered
            return time.perf_counter() - started

    with WellBehaved(front.url) as good, ThreadPoolExecutor(20) as pool:
        heads = [b"", b"POST /mcp HTTP/1.1\r\nHost: x\r\n", b"POST /mc"] * 7
        waited = list(pool.map(stall, heads[:20]))
    good.assert_served()  # its calls (kept-alive connections, heads sent at once) were never cut
    assert all(HEAD_TIMEOUT - 0.5 <= w < HEAD_TIMEOUT + 5 for w in waited), waited


def test_each_client_connection_has_a_capped_kernel_send_buffer(front: Front) -> None:
    """send_buffer_bytes (default 256 KiB) is set on every accepted socket, so a slow reader cannot park
    megabytes in an autotuned kernel buffer beyond max_stream_buffer_bytes. Read from the kernel (ss)."""
    port = int(front.url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        local = sock.getsockname()[1]
        deadline = time.monotonic() + 5
        while True:  # the server side's row: source port = the proxy's, destination = this socket
            out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} and dport = :{local} )"],
                                 capture_output=True, text=True, check=True).stdout
            sizes = re.findall(r"\btb(\d+)\b", out)
            if sizes or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert sizes == [str(2 * 256 * 1024)], out  # Linux doubles what SO_SNDBUF asks for


def test_a_stalled_sse_reader_loses_its_stream_and_the_upstream_call_is_cancelled(front: Front) -> None:
    with RawClient(front.url) as raw:
        raw.http.headers["Authorization"] = f"Bearer {STREAM}"
        sid = raw.initialize()
    rss_before = off.rss_kib(front.proxy.pid)
    with WellBehaved(front.url) as good:
        outcome = asyncio.run(off.stalled_sse(front.url, STREAM, sid, COUNT, SIZE, stall_s=5.0, give_up_s=15))
    good.assert_served()
    assert outcome.status == 200 and outcome.closed, outcome
    # Closed either with the overrun error, if it still fitted in the socket buffers, or without
    # (the final write found no room within stream_write_timeout): never left hanging.
    assert outcome.code in (None, STREAM_OVERRUN), outcome
    assert outcome.progress < COUNT // 4 and outcome.bytes_read < COUNT * SIZE // 4, outcome
    assert front.refused("stream_overrun") >= 1
    peak_mib = (off.peak_rss_kib(front.proxy.pid) - rss_before) / 1024
    assert peak_mib < 30, f"the proxy's peak grew {peak_mib:.1f} MiB for one stalled stream"
    # The upstream call was cancelled long before its end (the faults server says so on stderr).
    log = front.faults.log_path
    deadline = time.monotonic() + 10
    while f"faults: chatter({COUNT}) cancelled after" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the upstream chatter was not cancelled"
        time.sleep(0.2)
    sent = int(re.findall(rf"chatter\({COUNT}\) cancelled after (\d+)", log.read_text())[-1])
    assert sent < COUNT // 2, sent


def test_a_slow_sse_reader_gets_the_stream_overrun_error(front: Front) -> None:
    with RawClient(front.url) as raw:
        raw.http.headers["Authorization"] = f"Bearer {STREAM}"
        sid = raw.initialize()
    # Reads 64 KiB every 0.05 s (at most 1.3 MB/s, pauses well within stream_write_timeout) while the
    # upstream streams much faster: the buffer fills, the call is cancelled, and once the reader has
    # taken what the sockets held, the last event it gets is the overrun error, then the end. Slower
    # (64 KiB every 0.2 s through an 8 KiB receive buffer, ~100 KB/s) was flaky: the kernel wakes a
    # blocked writer only once a share of its send buffer (autotuned to megabytes) is free, which at
    # that pace took longer than stream_write_timeout, and the stream was dropped before the error.
    outcome = asyncio.run(off.stalled_sse(front.url, STREAM, sid, COUNT, SIZE, stall_s=0.2, pause=0.05,
                                          rcvbuf=65536, read_chunk=65536, give_up_s=25))
    assert outcome.status == 200 and outcome.closed, outcome
    assert outcome.code == STREAM_OVERRUN, outcome
    assert outcome.progress < COUNT // 4, outcome


def test_thousands_of_calls_in_flight_on_one_session_are_refused_past_the_cap(front: Front) -> None:
    with RawClient(front.url) as raw:
        raw.http.headers["Authorization"] = f"Bearer {BUSY}"
        sid = raw.initialize()
    started = time.perf_counter()
    with WellBehaved(front.url) as good:
        counts, replies = asyncio.run(off.inflight_flood(front.url, BUSY, sid, 1000, seconds=4.0))
    good.assert_served()
    refused = [r for r in replies if r.status == 429]
    assert counts[f"429/{TOO_MANY_INFLIGHT}"] == len(refused) >= 900, counts
    assert INFLIGHT <= counts["200"] <= 1000 - 900 and sum(counts.values()) == 1000, counts
    assert "this session already has 10 calls in flight" in refused[0].message
    assert refused[0].retry_after == "1"
    assert max(r.elapsed_s for r in refused) < 15, "a refusal waited instead of being answered at once"
    assert time.perf_counter() - started < 20
    assert front.refused("inflight_session") >= 900


def test_stateless_calls_in_flight_are_capped_per_client(front: Front) -> None:
    counts, replies = asyncio.run(off.inflight_flood(front.url, OTHER, None, 200, seconds=3.0))
    assert counts[f"429/{TOO_MANY_INFLIGHT}"] >= 150, counts
    assert counts["200"] >= INFLIGHT and sum(counts.values()) == 200, counts
    refused = next(r for r in replies if r.status == 429)
    assert "this client already has 10 calls in flight" in refused.message
    # Another client is not affected by that one's cap.
    with RawClient(front.url) as raw:
        raw.http.headers["Authorization"] = f"Bearer {GOOD}"
        ok = raw.stateless("tools/call", {"name": "faults__echo", "arguments": {"text": "free"}})
        assert ok.status_code == 200 and text_of(ok.json()) == "free"
    assert front.refused("inflight_client") >= 150


def test_held_listen_streams_count_as_calls_in_flight_of_their_client(front: Front) -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"Authorization": f"Bearer {SLOW}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": "subscriptions/listen"}

    def listen(http: httpx.Client, stack: contextlib.ExitStack) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": "subscriptions/listen",
                "params": {"notifications": {"toolsListChanged": True}, "_meta": meta}}
        return stack.enter_context(http.stream("POST", front.url, json=body, headers=headers))

    with httpx.Client(timeout=10) as http, contextlib.ExitStack() as stack:
        held = [listen(http, stack) for _ in range(INFLIGHT)]
        assert all(r.status_code == 200 for r in held)
        extra = listen(http, stack)
        extra.read()
        assert extra.status_code == 429 and extra.json()["error"]["code"] == TOO_MANY_INFLIGHT, extra.text
    with httpx.Client(timeout=10) as http, contextlib.ExitStack() as stack:  # closed streams give places back
        deadline = time.monotonic() + 10
        while listen(http, stack).status_code != 200:
            assert time.monotonic() < deadline, "the closed listen streams were not released"
            time.sleep(0.2)


def test_the_proxy_log_stays_clean(front: Front) -> None:
    text = front.proxy.log_path.read_text(errors="replace")
    assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]
    assert "ASGI callable returned without completing response" not in text
