"""Session stickiness through a real proxy: with `sticky = true` every call of a client session
lands on the same replica (the replica's pid is in each answer), while sessions still spread."""

from __future__ import annotations

from tests.proxy._raw import RawClient


def test_sticky_sessions_keep_their_replica(stack) -> None:  # noqa: ANN001
    upstreams = [stack.fixture("faults")[0] for _ in range(2)]
    replicas = "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in upstreams)
    url, _ = stack.proxy(f'[[servers]]\nname = "f"\npolicy = "round_robin"\nsticky = true\n{replicas}')
    seen_by_session = []
    with RawClient(url) as client:
        for _ in range(4):
            sid = client.initialize()
            pids = {client.call_tool(sid, "f__lookup", {"key": str(i)})["result"]["content"][0]["text"].split("@")[1]
                    for i in range(6)}
            seen_by_session.append(pids)
    assert all(len(pids) == 1 for pids in seen_by_session), seen_by_session
    assert len(set().union(*seen_by_session)) == 2, "round robin under the pins still spreads sessions"
