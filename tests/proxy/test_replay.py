"""The replay buffers behind Last-Event-ID (proxy/replay.py): ids per stream, and both memory bounds.

In process, with real settings objects: the per-session bound evicts that session's oldest
events, the overall bound the least recently written session's; an id whose successors were
evicted cannot be resumed; a finished stream with nothing left is forgotten; a session's end
frees its bytes.
"""

from __future__ import annotations

import asyncio

from only1mcp.proxy.replay import _EVENT_OVERHEAD, ReplayBudget, SessionReplay, parse_event_id
from only1mcp.settings import ProxySettings

NOTE = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x" * 100}}


def _budget(per_session: int, total: int) -> ReplayBudget:
    settings = ProxySettings(replay_buffer_bytes=per_session, replay_total_bytes=total)
    return ReplayBudget(lambda: settings)


def _size() -> int:
    probe = SessionReplay(_budget(10**6, 10**6))
    return len(probe.open("post").append(NOTE)) + _EVENT_OVERHEAD


def test_ids_name_their_stream_and_count_within_it() -> None:
    replay = SessionReplay(_budget(10**6, 10**6))
    post, get = replay.open("post"), replay.open("get")
    first = post.append(NOTE)
    assert b"\nid: p1-1\n" in first and b"\nid: g2-1\n" in get.append(NOTE)
    assert b"\nid: p1-2\n" in post.append(NOTE)
    assert parse_event_id(b"p1-2") == ("p", 1, 2) and parse_event_id(b"g2-1") == ("g", 2, 1)
    assert parse_event_id(b"x1-2") is None and parse_event_id(b"p1") is None and parse_event_id(b"p-1") is None
    assert [seq for seq, _ in post.after(0)] == [1, 2] and post.after(1) == [(2, post.events[1][1])]
    assert post.after(3) is None  # not written yet: not an id of this stream


def test_the_session_bound_evicts_its_oldest_events_across_streams() -> None:
    size = _size()
    replay = SessionReplay(_budget(3 * size, 10**6))
    a, b = replay.open("post"), replay.open("post")
    a.append(NOTE)
    b.append(NOTE)
    a.append(NOTE)
    b.append(NOTE)  # four events, room for three: a's first goes
    assert a.after(0) is None and [s for s, _ in a.after(1)] == [2]
    assert [s for s, _ in b.after(0)] == [1, 2]
    assert replay.bytes == 3 * size == replay.budget.bytes


def test_the_overall_bound_evicts_the_least_recently_written_session() -> None:
    size = _size()
    budget = _budget(10 * size, 3 * size)
    old, new = SessionReplay(budget), SessionReplay(budget)
    quiet, busy = old.open("post"), new.open("post")
    quiet.append(NOTE)
    quiet.append(NOTE)
    busy.append(NOTE)
    busy.append(NOTE)  # over the total: the quiet session, written least recently, loses its oldest
    assert quiet.after(0) is None and [s for s, _ in quiet.after(1)] == [2]
    assert [s for s, _ in busy.after(0)] == [1, 2]
    assert budget.bytes == 3 * size


def test_an_event_over_the_bound_is_not_kept_and_spent_streams_are_forgotten() -> None:
    size = _size()
    replay = SessionReplay(_budget(size - 1, 10**6))
    stream = replay.open("post")
    stream.append(NOTE)
    assert stream.after(0) is None and replay.bytes == 0
    stream.finish()
    assert stream.number not in replay.streams  # finished, nothing to replay: its ids are unknown now


def test_a_session_end_frees_its_bytes_and_wakes_followers() -> None:
    async def scenario() -> None:
        budget = _budget(10**6, 10**6)
        replay = SessionReplay(budget)
        stream = replay.open("post")
        stream.append(NOTE)
        waiting = stream.changed()
        replay.clear()
        assert waiting.done() and stream.finished and stream.after(1) is None
        assert budget.bytes == 0 and len(budget) == 0
        stream.append(NOTE)  # a late event of an ended session is not kept
        assert budget.bytes == 0

    asyncio.run(scenario())
