"""Prefetch at the proxy through a real app (uvicorn, in this process) in front of a real upstream (the
tracker of ``_prefetch_upstream.py``, where ids flow from results into arguments), with decisions handed
to the proxy's own decision subscriber: what runs, what is refused and why, what a client gets.
(Budget and memory bounds: test_prefetch_limits.py; over a real broker: test_prefetch_broker.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from only1mcp.events import keyed_hash
from tests.proxy._prefetch_env import TOKENS, Client, Served, config, until, upstream


@pytest.fixture
def served(stack, tmp_path: Path):  # noqa: ANN001, ANN201
    url = upstream(stack)
    with Served(config(tmp_path, url, comments="prefetch = false")) as proxy:
        yield proxy


def _taught(served: Served, client: Client, rounds: int = 4) -> None:
    """The client searches and reads the first hit, ``rounds`` times: the argument model learns that
    get_issue's id comes from the previous search's first hit."""
    for i in range(rounds):
        client.search_then_get(f"warmup-{i}")
    served.learned(2 * rounds)


def test_a_decision_fetches_the_id_the_last_result_named_and_the_next_call_hits(served: Served) -> None:
    client = Client(served.url)
    try:
        _taught(served, client)
        hit = client.call("t__search", query="the bug")["hits"][0]["id"]  # the id the next call will need
        served.learned(9)
        session = served.session_hash(client.sid)
        assert served.handle(served.decision(session)) == "applied"
        until(lambda: served.counts()["stored"] == 1)
        assert client.executions()[f"get_issue {hit}"] == 1  # fetched ahead, with the id from the result
        before = len(served.events("t__get_issue"))
        assert client.call("t__get_issue", id=hit)["id"] == hit
        assert client.executions()[f"get_issue {hit}"] == 1  # the client's call did not reach the upstream
        events = served.events("t__get_issue")
        assert len(events) == before + 1  # the prefetch itself emitted no request event
        assert events[-1].prefetch_hit and events[-1].cache_hit and events[-1].attempts == 0
        assert not any(e.prefetch_hit for e in events[:-1])
        counts = served.counts()
        assert counts["issued"] == 1 and counts["used"] == 1 and counts["wasted"] == 0, counts
        admin = served.admin()
        assert admin["counts"]["used"] == 1 and admin["precision"] == 1.0 and admin["memory"]["sessions"] == 1
        assert hit not in str(admin) and client.sid not in str(admin)  # counts only: no values, no ids
        metrics = served.metrics()
        assert "only1mcp_prefetch_issued_total 1.0" in metrics and "only1mcp_prefetch_used_total 1.0" in metrics
        assert 'only1mcp_decisions_total{kind="prefetch",outcome="applied"} 1.0' in metrics
        assert hit not in metrics
    finally:
        client.close()


def test_an_args_hash_picks_the_filling_or_vetoes_and_low_confidence_vetoes(served: Served) -> None:
    client = Client(served.url)
    try:
        _taught(served, client)
        hit = client.call("t__search", query="hashed")["hits"][0]["id"]
        served.learned(9)
        session = served.session_hash(client.sid)
        key = served.gateway.telemetry.key  # the proxy's key of keyed hashes (the worker's args_hash uses it)
        assert served.handle(served.decision(session, args_hash=keyed_hash(key, {"id": "ISS-0"}))) == "vetoed"
        assert served.handle(served.decision(session, confidence=0.2)) == "vetoed"  # 0.2 × ≤1 < 0.5
        assert client.executions().get(f"get_issue {hit}") is None  # neither ran
        assert served.handle(served.decision(session, args_hash=keyed_hash(key, {"id": hit}))) == "applied"
        until(lambda: client.executions().get(f"get_issue {hit}") == 1)
        until(lambda: served.counts()["stored"] == 1)
        # the same call again while cached: not fetched twice
        assert served.handle(served.decision(session)) == "rejected_duplicate"
        assert served.counts()["vetoed"] == 2
        rejections = served.gateway.subscriber.status()["last_rejections"]  # type: ignore[union-attr]
        assert "min_confidence" in rejections["prefetch/vetoed"] or "args_hash" in rejections["prefetch/vetoed"]
    finally:
        client.close()


def test_unsafe_tools_are_never_prefetched_nor_cached_and_opt_outs_hold(served: Served) -> None:
    client = Client(served.url)
    try:
        _taught(served, client)
        client.call("t__update_issue", id="ISS-1")
        client.call("t__update_issue", id="ISS-1")  # a write: never answered from the cache
        client.call("t__touch_issue", id="ISS-1")
        client.call("t__touch_issue", id="ISS-1")  # idempotent, not read-only: never cached either
        client.call("t__list_comments", id="ISS-1")
        client.search_then_get("other server", server="o")
        served.learned(8 + 7)
        counts = client.executions()
        assert counts["update_issue ISS-1"] == 2 and counts["touch_issue ISS-1"] == 2
        session = served.session_hash(client.sid)
        outcomes = {tool: served.handle(served.decision(session, tool=tool, server=tool[0]))
                    for tool in ("t__update_issue", "t__touch_issue", "t__list_comments", "o__get_issue")}
        assert outcomes == dict.fromkeys(outcomes, "rejected_policy"), outcomes
        assert served.counts()["issued"] == 0
        assert client.executions() == counts  # nothing more reached the upstream
        # a tool the session never called is not prefetched either, however likely
        fresh = Client(served.url)
        try:
            fresh.call("t__search", query="new session")
            served.learned(8 + 7 + 3)  # its own calls, counts() twice, the new session's search
            assert served.handle(served.decision(served.session_hash(fresh.sid))) == "rejected_policy"
        finally:
            fresh.close()
    finally:
        client.close()


def test_a_prefetched_result_never_reaches_another_client(served: Served) -> None:
    a, b = Client(served.url, TOKENS[0]), Client(served.url, TOKENS[1])
    try:
        _taught(served, a)
        hit = a.call("t__search", query="private")["hits"][0]["id"]
        served.learned(9)
        assert served.handle(served.decision(served.session_hash(a.sid))) == "applied"
        until(lambda: served.counts()["stored"] == 1)
        first = b.call("t__get_issue", id=hit)  # another client (token): the upstream answers it
        assert first["version"] == 2 and a.executions()[f"get_issue {hit}"] == 2
        assert not served.events("t__get_issue")[-1].prefetch_hit
        assert a.call("t__get_issue", id=hit)["version"] == 1  # A gets the result fetched for A
        assert served.events("t__get_issue")[-1].prefetch_hit
        assert served.counts()["used"] == 1
    finally:
        a.close()
        b.close()


@pytest.fixture
def served_short_ttl(stack, tmp_path: Path):  # noqa: ANN001, ANN201
    url = upstream(stack)
    with Served(config(tmp_path, url, get_ttl=1.0)) as proxy:
        yield proxy


def test_a_value_one_client_typed_never_fills_another_clients_prefetch(served_short_ttl: Served) -> None:
    """A's sessions each read the same issue first: the argument model learns that id as a constant, of
    A. A decision for a session of A is filled with it; one for B's session finds no source: vetoed,
    and A's value never reaches the upstream on B's behalf."""
    served, secret = served_short_ttl, "ISS-ACME-SECRET"
    clients: list[Client] = []
    try:
        for _ in range(8):
            clients.append(Client(served.url, TOKENS[0]))
            clients[-1].call("t__get_issue", id=secret)
        a, b = Client(served.url, TOKENS[0]), Client(served.url, TOKENS[1])
        clients += [a, b]
        a.call("t__get_issue", id="ISS-1")  # each has called the tool in its session: both eligible
        b.call("t__get_issue", id="ISS-2")
        served.learned(10)
        time.sleep(1.2)  # A's cached answers for the secret id expire: a prefetch of it is no duplicate
        before = a.executions()[f"get_issue {secret}"]
        assert served.handle(served.decision(served.session_hash(b.sid))) == "vetoed"
        assert served.handle(served.decision(served.session_hash(a.sid))) == "applied"
        until(lambda: served.counts()["stored"] == 1)
        assert a.executions()[f"get_issue {secret}"] == before + 1  # A's prefetch; nothing for B
        assert served.counts()["issued"] == 1 and served.counts()["vetoed"] == 1
    finally:
        for client in clients:
            client.close()


def test_stale_unknown_and_malformed_decisions_are_rejected_and_never_run(served: Served) -> None:
    client = Client(served.url)
    try:
        _taught(served, client)
        hit = client.call("t__search", query="stale")["hits"][0]["id"]
        served.learned(9)
        session = served.session_hash(client.sid)
        assert served.handle(served.decision(session, valid_for=-0.5)) == "rejected_stale"
        assert served.handle(served.decision(session, tool="t__nope")) == "rejected_unknown"
        assert served.handle(served.decision(session, server="o")) == "rejected_unknown"  # not o's tool
        assert served.handle(served.decision("f" * 32)) == "rejected_unknown"  # no such session here
        good = served.decision(session).to_json()
        assert served.handle(b"\xff not json") == "rejected_decode"
        assert served.handle(good.replace(b'"confidence":0.9', b'"confidence":1.5')) == "rejected_decode"
        assert served.handle(good.replace(b'"tool":"t__get_issue"', b'"tool":""')) == "rejected_decode"
        assert served.handle(good.replace(b'"schema_version":1', b'"schema_version":9')) == "rejected_decode"
        assert client.executions().get(f"get_issue {hit}") is None  # none of them ran
        counts = served.gateway.subscriber.counts  # type: ignore[union-attr]
        assert counts[("prefetch", "rejected_decode")] == 4 and counts[("prefetch", "rejected_unknown")] == 3
        assert counts[("prefetch", "rejected_stale")] == 1 and served.counts()["issued"] == 0
    finally:
        client.close()
