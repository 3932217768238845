"""Prefetch's bounds through a real app in front of the tracker upstream (see test_prefetch.py): the
session memory goes with the session and stays bounded; the budget holds under a burst of decisions."""

from __future__ import annotations

import time
from pathlib import Path

from only1mcp.proxy.prefetch import SlidingCount
from tests.proxy._prefetch_env import Client, Served, config, until, upstream


def _session_with_pending_id(served: Served, client: Client, query: str) -> str:
    """The session has called get_issue, and its latest search named an id not fetched yet."""
    client.search_then_get(f"{query}-warm")
    return client.call("t__search", query=query)["hits"][0]["id"]  # type: ignore[no-any-return]


def test_memory_goes_with_the_session_and_is_bounded(stack, tmp_path: Path) -> None:  # noqa: ANN001
    url = upstream(stack)
    prefetch = "max_sessions = 2\nmax_calls = 3\nmax_values = 5\nsession_idle = 2.0\n"
    with Served(config(tmp_path, url, prefetch=prefetch)) as served:
        learner = served.gateway.prefetch.learner  # type: ignore[union-attr]
        a = Client(served.url)
        for i in range(4):
            a.search_then_get(f"q{i}")
        a.call("t__list_comments", id="ISS-1")
        served.learned(9)
        memory = learner.store.peek(served.session_hash(a.sid))
        assert memory is not None
        assert len(memory.latest) <= 3 and len(memory.history) <= 3  # max_calls
        assert all(len(m.values) <= 5 for m in memory.latest.values()) and len(memory.any_args) <= 5  # max_values
        # DELETE ends the session: its memory goes at once, and a decision for it is unknown
        assert a.delete() == 200
        assert learner.store.peek(served.session_hash(a.sid)) is None and served.admin()["memory"]["sessions"] == 0
        assert served.handle(served.decision(served.session_hash(a.sid))) == "rejected_unknown"
        # at most max_sessions remembered: the least recently active goes first
        clients = [Client(served.url) for _ in range(3)]
        try:
            for client in clients:
                client.call("t__search", query="x")
            served.learned(12)
            hashes = [served.session_hash(c.sid) for c in clients]
            assert [learner.store.peek(h) is not None for h in hashes] == [False, True, True]
            assert set(learner.sessions) == set(hashes[1:])  # the hash → session map follows the store
            assert served.handle(served.decision(hashes[0])) == "rejected_unknown"
            # idle past session_idle: forgotten by the housekeeping, although the proxy session lives on
            until(lambda: len(learner.store) == 0, timeout=8.0)
            assert served.admin()["memory"]["sessions"] == 0 and not learner.sessions
        finally:
            for client in clients:
                client.close()
        a.close()


def test_max_concurrent_holds_under_a_burst(stack, tmp_path: Path) -> None:  # noqa: ANN001
    url = upstream(stack)
    with Served(config(tmp_path, url, prefetch="max_concurrent = 2\nmax_share = 1.0\n")) as served:
        clients = [Client(served.url) for _ in range(6)]
        try:
            teacher = clients[0]
            for i in range(4):
                teacher.search_then_get(f"teach-{i}")
            ids = [_session_with_pending_id(served, c, f"burst-{i}") for i, c in enumerate(clients)]
            served.learned(8 + 18)
            clients[0].call("t__set_delay", seconds=0.6)  # the upstream holds each read for 0.6 s
            outcomes = [served.handle(served.decision(served.session_hash(c.sid))) for c in clients]
            assert outcomes.count("applied") == 2 and outcomes.count("rejected_limit") == 4, outcomes
            assert served.admin()["budget"]["inflight"] == 2
            until(lambda: served.counts()["stored"] == 2, timeout=5.0)
            assert served.admin()["budget"]["inflight"] == 0
            clients[0].call("t__set_delay", seconds=0.0)
            executions = clients[0].executions()
            fetched = [i for i in ids if executions.get(f"get_issue {i}")]
            assert len(fetched) == 2  # only the applied ones reached the upstream
            assert "max_concurrent 2" in served.gateway.subscriber.last_rejections["prefetch/rejected_limit"]  # type: ignore[union-attr]
            # with the two done, the next decisions run again
            late = [served.handle(served.decision(served.session_hash(c.sid))) for c in clients]
            assert late.count("rejected_duplicate") == 2 and late.count("applied") >= 2, late  # quick ones now
        finally:
            for client in clients:
                client.close()


def test_max_share_holds_under_a_burst(stack, tmp_path: Path) -> None:  # noqa: ANN001
    url = upstream(stack)
    with Served(config(tmp_path, url, prefetch="max_concurrent = 100\nmax_share = 0.2\n")) as served:
        clients = [Client(served.url) for _ in range(8)]
        try:
            for i in range(4):
                clients[0].search_then_get(f"teach-{i}")
            for i, client in enumerate(clients):
                _session_with_pending_id(served, client, f"share-{i}")
            calls = 8 + 3 * len(clients)  # client tools/calls in the window: 32
            served.learned(calls)
            outcomes = [served.handle(served.decision(served.session_hash(c.sid))) for c in clients]
            allowed = int(0.2 * calls)  # 6: prefetches over the window ≤ 0.2 × client calls
            assert outcomes.count("applied") == allowed, outcomes
            assert outcomes.count("rejected_limit") == len(clients) - allowed
            assert "max_share 0.2" in served.gateway.subscriber.last_rejections["prefetch/rejected_limit"]  # type: ignore[union-attr]
            budget = served.admin()["budget"]
            assert budget["prefetches_in_window"] == allowed and budget["client_calls_in_window"] == calls
        finally:
            for client in clients:
                client.close()


def test_a_call_meeting_its_prefetch_in_flight_joins_it_and_unused_entries_count_wasted(
        stack, tmp_path: Path) -> None:  # noqa: ANN001
    url = upstream(stack)
    with Served(config(tmp_path, url, get_ttl=1.0)) as served:
        client = Client(served.url)
        try:
            for i in range(4):
                client.search_then_get(f"teach-{i}")
            hit = client.call("t__search", query="slow")["hits"][0]["id"]
            served.learned(9)
            client.call("t__set_delay", seconds=0.8)
            assert served.handle(served.decision(served.session_hash(client.sid))) == "applied"
            started = time.monotonic()
            assert client.call("t__get_issue", id=hit)["version"] == 1  # the prefetch's answer, waited for
            assert time.monotonic() - started < 0.8 + 0.5  # one upstream wait, not two
            client.call("t__set_delay", seconds=0.0)
            assert client.executions()[f"get_issue {hit}"] == 1
            event = served.events("t__get_issue")[-1]
            assert event.prefetch_hit and event.cache_hit
            counts = served.counts()
            assert counts["joined"] == 1 and counts["used"] == 1 and counts["issued"] == 1, counts
            # a prefetch nobody uses: wasted once its entry expires (get_issue's TTL here: 1 s)
            other = client.call("t__search", query="unused")["hits"][0]["id"]
            served.learned(14)
            assert served.handle(served.decision(served.session_hash(client.sid))) == "applied"
            until(lambda: served.counts()["stored"] == 2)
            assert served.admin()["unused_entries"] == 1
            until(lambda: served.counts()["wasted"] == 1, timeout=5.0)
            assert served.admin()["unused_entries"] == 0 and served.counts()["used"] == 1
            assert client.executions()[f"get_issue {other}"] == 1
            assert 'only1mcp_prefetch_wasted_total 1.0' in served.metrics()
        finally:
            client.close()


def test_the_sliding_count_forgets_what_left_the_window() -> None:
    count = SlidingCount(10.0)  # buckets of 0.5 s
    now = 1000.0
    for i in range(10):
        count.add(now + i)  # one per second
    assert count.value(now + 9) == 10
    assert count.value(now + 14.6) == 5  # only the last ten seconds' (in whole buckets): 1005 … 1009
    assert count.value(now + 100) == 0
    count.add(now + 100)
    assert count.value(now + 100.1) == 1
