"""Weights from outside (the learning loop's hook): posted to the admin API, followed while fresh,
and ignored once stale, when the weighted policy falls back to its named fallback."""

from __future__ import annotations

import time

import httpx

from tests.proxy._raw import RawClient


def test_posted_weights_steer_traffic_until_they_go_stale(stack) -> None:  # noqa: ANN001
    upstreams = [stack.fixture("faults")[0] for _ in range(2)]
    replicas = "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in upstreams)
    url, _ = stack.proxy(f'[[servers]]\nname = "f"\npolicy = "weighted"\nfallback_policy = "round_robin"\n'
                         f'{replicas}')
    admin = url.replace("/mcp", "/admin")
    answer = httpx.post(f"{admin}/weights/f", json={"weights": {"f/1": 1.0, "f/0": 0.0},
                                                    "valid_until": time.time() + 60, "model_version": "m7"})
    assert answer.status_code == 200, answer.text
    with RawClient(url) as client:
        sid = client.initialize()
        for i in range(10):
            client.post({"jsonrpc": "2.0", "id": f"w{i}", "method": "tools/call",
                         "params": {"name": "f__echo", "arguments": {"text": "x"}}}, sid=sid)
        chosen = {httpx.get(f"{admin}/decisions/w{i}").json()["calls"][0]["attempts"][0]["replica"]
                  for i in range(10)}
        assert chosen == {"f/1"}
        reason = httpx.get(f"{admin}/decisions/w0").json()["calls"][0]["attempts"][0]["reason"]
        assert "m7" in reason, reason
        httpx.post(f"{admin}/weights/f", json={"weights": {"f/1": 1.0}, "valid_until": time.time() - 1,
                                               "model_version": "m8"})
        for i in range(4):
            client.post({"jsonrpc": "2.0", "id": f"s{i}", "method": "tools/call",
                         "params": {"name": "f__echo", "arguments": {"text": "x"}}}, sid=sid)
        attempts = [httpx.get(f"{admin}/decisions/s{i}").json()["calls"][0]["attempts"][0] for i in range(4)]
        assert {a["replica"] for a in attempts} == {"f/0", "f/1"}  # the round robin fallback
        assert all("fell back" in a["reason"] for a in attempts), attempts[0]
    bad = httpx.post(f"{admin}/weights/f", json={"weights": "nope"})
    assert bad.status_code == 400


def test_weights_for_a_server_that_is_not_weighted_are_refused(stack) -> None:  # noqa: ANN001
    upstream, _ = stack.fixture("faults")
    url, _ = stack.proxy(f'[[servers]]\nname = "f"\n[[servers.replicas]]\nurl = "{upstream}"\n')
    answer = httpx.post(url.replace("/mcp", "/admin/weights/f"), json={"weights": {"f/0": 1}})
    assert answer.status_code == 400 and "not weighted" in answer.text
