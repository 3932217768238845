"""Resumable SSE streams (``Last-Event-ID``), through real proxy processes and real upstreams, by raw HTTP.

Every event of a session's SSE stream carries an id ``<p|g><stream>-<seq>``; a 2025-11-25 stream
opens with a priming event (an id, ``retry``, empty data). A client that loses a stream GETs the
endpoint with the last id it got and is sent exactly what followed on that stream — the call goes
on meanwhile — then the stream carries on live. Ids whose successors were evicted (the replay
buffers are bounded) answer 400; 2026-07-28 streams carry no ids at all. The proxy also resumes an
upstream's stream that the upstream ended mid-call (the conformance fixture's ``test_reconnection``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _raw import STATELESS, VERSION, RawClient, expect_error, sse_events
from conftest import Stack

from only1mcp.jobs.bench._procs import ProcessGroup

_META = "io.modelcontextprotocol/"


class Proxies:
    def __init__(self, stack: Stack) -> None:
        faults, _ = stack.fixture("faults")
        conformance, _ = stack.fixture("conformance")
        servers = (f'[[servers]]\nname = "faults"\n[[servers.replicas]]\nurl = "{faults}"\n\n'
                   f'[[servers]]\nname = "conf"\n[[servers.replicas]]\nurl = "{conformance}"\n')
        faults_only = f'[[servers]]\nname = "faults"\n[[servers.replicas]]\nurl = "{faults}"\n'
        self.stack, self.faults_only = stack, faults_only
        self.url, self.proc = stack.proxy(servers)
        self.small, _ = stack.proxy(faults_only, proxy_extra="replay_buffer_bytes = 4096")
        self.off, _ = stack.proxy(faults_only, proxy_extra="replay_buffer_bytes = 0")


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxies]:
    tmp: Path = tmp_path_factory.mktemp("resume")
    with ProcessGroup(tmp) as group:
        yield Proxies(Stack(group, tmp))


def _headers(sid: str, version: str = VERSION, **extra: str) -> dict[str, str]:
    return {"Accept": "text/event-stream, application/json", "Content-Type": "application/json",
            "Mcp-Session-Id": sid, "MCP-Protocol-Version": version, **extra}


def _chatter(request_id: int, token: str, count: int, size: int = 10, interval: float = 0.0) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "faults__chatter", "arguments": {"count": count, "size": size, "interval": interval},
                       "_meta": {"progressToken": token}}}


def _events(lines: Iterator[str], count: int | None = None) -> list[dict[str, Any]]:
    """Read events off a streamed response (all of them, or the first ``count``; comments skipped)."""
    found: list[dict[str, Any]] = []
    block: list[str] = []
    for line in lines:
        if line:
            block.append(line)
            continue
        found.extend(sse_events("\n".join(block) + "\n\n") if any(not b.startswith(":") for b in block) else [])
        block = []
        if count is not None and len(found) >= count:
            break
    return found


def _seq(event_id: str) -> tuple[str, int]:
    stream, _, seq = event_id.partition("-")
    return stream, int(seq)


def _progress(events: list[dict[str, Any]]) -> list[int]:
    return [e["message"]["params"]["progress"] for e in events
            if e.get("message", {}).get("method") == "notifications/progress"]


def _result_text(events: list[dict[str, Any]]) -> str:
    replies = [e["message"] for e in events if "result" in e.get("message", {})]
    assert len(replies) == 1, events
    return replies[0]["result"]["content"][0]["text"]


def test_session_streams_carry_ids_and_a_priming_event(proxies: Proxies) -> None:
    with RawClient(proxies.url) as raw:
        sid = raw.initialize()
        resp = raw.post(_chatter(1, "t", 3), sid=sid)
        events = sse_events(resp.text)
        assert events[0] == {"id": events[0]["id"], "retry": 1000}, events[0]  # id, retry, empty data: first
        streams = {_seq(e["id"])[0] for e in events}
        assert len(streams) == 1 and streams.pop().startswith("p")
        assert [_seq(e["id"])[1] for e in events] == list(range(1, 6))  # priming, 3 progress, the answer
        assert _progress(events) == [1, 2, 3] and _result_text(events) == "done"
        other = sse_events(raw.post(_chatter(2, "u", 1), sid=sid).text)
        assert _seq(other[0]["id"])[0] != _seq(events[0]["id"])[0]  # each answer is its own stream

        older = raw.initialize("2025-06-18")  # before 2025-11-25: ids, but no empty priming event
        events = sse_events(raw.post(_chatter(3, "t", 2), sid=older, version="2025-06-18").text)
        assert all("message" in e and "id" in e for e in events) and len(events) == 3


def test_a_lost_stream_resumes_with_exactly_the_missing_events(proxies: Proxies) -> None:
    with RawClient(proxies.url) as raw, httpx.Client(timeout=30) as http:
        sid = raw.initialize()
        other: dict[str, Any] = {}

        def concurrent_call() -> None:  # another stream of the same session, running at the same time
            other["events"] = sse_events(raw.post(_chatter(9, "other", 6, interval=0.1), sid=sid).text)

        worker = threading.Thread(target=concurrent_call)
        worker.start()
        with http.stream("POST", proxies.url, json=_chatter(1, "mine", 8, interval=0.15),
                         headers=_headers(sid)) as resp:
            seen = _events(resp.iter_lines(), 3)  # priming and two progress events, then the connection drops
        assert _progress(seen) == [1, 2]
        last = seen[-1]["id"]
        with http.stream("GET", proxies.url, headers=_headers(sid, **{"Last-Event-ID": last})) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            rest = _events(resp.iter_lines())  # to the end: the stream ends after the answer
        worker.join(timeout=20)

        stream, after = _seq(last)
        assert [_seq(e["id"]) for e in rest] == [(stream, after + i) for i in range(1, len(rest) + 1)]
        assert _progress(rest) == [3, 4, 5, 6, 7, 8]  # nothing seen before, nothing twice
        assert _result_text(rest) == "done"  # the disconnect did not cancel the call
        tokens = {e["message"]["params"]["progressToken"] for e in rest if "method" in e["message"]}
        assert tokens == {"mine"}  # nothing of the other stream
        assert _progress(other["events"]) == [1, 2, 3, 4, 5, 6] and _result_text(other["events"]) == "done"
        assert {_seq(e["id"])[0] for e in other["events"]} != {stream}


def test_resuming_a_stream_still_open_ends_the_old_connection(proxies: Proxies) -> None:
    with RawClient(proxies.url) as raw, httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as second:
        sid = raw.initialize()
        with first.stream("POST", proxies.url, json=_chatter(1, "t", 10, interval=0.3), headers=_headers(sid)) as old:
            lines = old.iter_lines()
            seen = _events(lines, 2)
            with second.stream("GET", proxies.url,
                               headers=_headers(sid, **{"Last-Event-ID": seen[-1]["id"]})) as new:
                new_lines = new.iter_lines()
                took_over = _events(new_lines, 1)
                leftover = _events(lines)  # the old connection ends now, without the answer
                rest = took_over + _events(new_lines)
        assert not any("result" in e.get("message", {}) for e in leftover)
        assert _result_text(rest) == "done"
        assert _progress(seen + rest) == list(range(1, 11))


def test_a_get_stream_resumes_and_the_old_connection_stops(proxies: Proxies) -> None:
    with RawClient(proxies.url) as raw, httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as second:
        sid = raw.initialize()
        raw.request(sid, "resources/subscribe", {"uri": "test://watched-resource"})

        def trigger() -> None:
            assert "sent" in raw.call_tool(sid, "conf__test_trigger_resource_update")["result"]["content"][0]["text"]

        with first.stream("GET", proxies.url, headers=_headers(sid)) as old:
            lines = old.iter_lines()
            priming = _events(lines, 1)[0]
            assert priming["id"].startswith("g") and "message" not in priming
            trigger()
            trigger()
            updates = _events(lines, 2)
            assert [e["message"]["method"] for e in updates] == ["notifications/resources/updated"] * 2, updates
            with second.stream("GET", proxies.url,
                               headers=_headers(sid, **{"Last-Event-ID": updates[0]["id"]})) as new:
                new_lines = new.iter_lines()
                replayed = _events(new_lines, 1)
                assert replayed[0]["id"] == updates[1]["id"], (updates, replayed)  # what followed, on that stream
                leftover = _events(lines)
                assert leftover == [], leftover  # the old connection ended, and got nothing more
                trigger()
                live = _events(new_lines, 1)
        stream, seq = _seq(updates[1]["id"])
        assert _seq(live[0]["id"]) == (stream, seq + 1), (updates, live)


def test_evicted_or_unknown_ids_answer_400_and_are_counted(proxies: Proxies) -> None:
    with RawClient(proxies.small) as raw, httpx.Client(timeout=30) as http:
        sid = raw.initialize()
        with http.stream("POST", proxies.small, json=_chatter(1, "t", 40, size=200), headers=_headers(sid)) as resp:
            early = _events(resp.iter_lines(), 2)[-1]["id"]
        stream, _ = _seq(early)
        time.sleep(1.0)  # the call ends meanwhile: 40 events of ~300 bytes, far more than 4096 bytes buffered

        def resume(event_id: str) -> httpx.Response:
            return raw.send("GET", sid=sid, headers={"Accept": "text/event-stream", "Last-Event-ID": event_id})

        expect_error(resume(early), 400, -32600, "cannot be resumed")
        newest = resume(f"{stream}-41")  # priming 1, progress 2-41, the answer 42: the newest events stay
        assert newest.status_code == 200 and _result_text(sse_events(newest.text)) == "done"
        for unknown in ("p999-1", "garbage", f"{stream}-999"):
            expect_error(resume(unknown), 400, -32600, "cannot be resumed")
        with http.stream("GET", proxies.small, headers=_headers(sid, **{"Last-Event-ID": "g999-3"})) as fresh:
            first_lines = [next(fresh.iter_lines()) for _ in range(1)]
        assert fresh.status_code == 200 and first_lines[0] == ": stream open"  # a GET stream starts anew
        metrics = httpx.get(proxies.small.replace("/mcp", "/metrics")).text
        assert 'only1mcp_limit_refusals_total{limit="resume_unavailable"} 5.0' in metrics, metrics[-2000:]


def test_without_a_replay_buffer_there_are_no_ids(proxies: Proxies) -> None:
    with RawClient(proxies.off) as raw:
        sid = raw.initialize()
        resp = raw.post(_chatter(1, "t", 2), sid=sid)
        assert "id:" not in resp.text and _progress(sse_events(resp.text)) == [1, 2]
        expect_error(raw.send("GET", sid=sid, headers={"Accept": "text/event-stream", "Last-Event-ID": "p1-2"}),
                     400, -32600, "cannot be resumed")


def test_stateless_streams_are_not_resumable(proxies: Proxies) -> None:
    body = _chatter(5, "t", 3)
    body["params"]["_meta"].update({f"{_META}protocolVersion": STATELESS, f"{_META}clientCapabilities": {}})
    headers = {"Accept": "text/event-stream, application/json", "Content-Type": "application/json",
               "MCP-Protocol-Version": STATELESS, "Mcp-Method": "tools/call", "Mcp-Name": "faults__chatter",
               "Last-Event-ID": "p1-1"}  # ignored: 2026-07-28 has no resumption
    resp = httpx.post(proxies.url, content=json.dumps(body), headers=headers, timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert all("id" not in e and "retry" not in e for e in events), resp.text
    assert _progress(events) == [1, 2, 3] and _result_text(events) == "done"


def test_the_proxy_resumes_an_upstream_stream_ended_mid_call(proxies: Proxies) -> None:
    with RawClient(proxies.url) as raw:
        sid = raw.initialize()
        started = time.monotonic()
        reply = raw.call_tool(sid, "conf__test_reconnection")  # the fixture ends its stream before answering
        assert reply["result"]["content"][0]["text"] == "Reconnection test completed", reply
        assert time.monotonic() - started < 5  # resumed after the fixture's 200 ms retry, not a timeout
        assert "Traceback" not in proxies.proc.log_path.read_text()


def test_held_get_streams_do_not_keep_the_proxy_from_stopping(proxies: Proxies) -> None:
    url, proc = proxies.stack.proxy(proxies.faults_only)
    with RawClient(url) as raw, httpx.Client(timeout=30) as http:
        sid = raw.initialize()
        with http.stream("GET", url, headers=_headers(sid)) as held:
            lines = held.iter_lines()
            assert next(lines) == ": stream open"
            started = time.monotonic()
            proxies.stack.stop(proc)  # SIGTERM; SIGKILL (-9) after 5 s
            code, took = proc.popen.returncode, time.monotonic() - started
            # uvicorn re-raises the SIGTERM it caught once shut down: -15 is a graceful exit.
            assert code == -15 and took < 4, (code, took, proc.log_tail(10))
            list(lines)  # the stream was ended, not cut
