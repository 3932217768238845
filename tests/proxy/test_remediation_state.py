"""Remediation decisions on a real (unstarted) gateway, record by record through the decision subscriber's
``handle``: holds, restore, expiry, the share cap, auto off, flaps, rejections, what routing and the views
show. No broker here (tests/proxy/test_remediation.py has the end-to-end path). The replicas are marked
connected ("ready") without upstreams: routing only reads that state, and no call is sent."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import orjson
import pytest

from only1mcp.events import TOPICS, Remediation, RoutingWeights
from only1mcp.proxy.gateway import Gateway
from only1mcp.proxy.metrics import ProxyMetrics
from only1mcp.proxy.routing import RouteRequest
from only1mcp.settings import load_settings

TOPIC = TOPICS["remediation"]
POLICIES = {"rr": 'policy = "round_robin"', "st": 'policy = "p2c_ewma"\nsticky = true',
            "lr": 'policy = "learned"\nexploration = 0.0', "wt": 'policy = "weighted"',
            "ch": 'policy = "consistent_hash"'}


def replicas(n: int, base: int) -> str:
    return "".join(f'[[servers.replicas]]\nurl = "http://127.0.0.1:{base + i}/mcp"\n' for i in range(n))


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    body = '[proxy]\nlisten = "127.0.0.1:1"\n[decisions]\nbootstrap = "127.0.0.1:1"\n'  # never started
    for i, (name, policy) in enumerate(POLICIES.items()):
        body += f'[[servers]]\nname = "{name}"\n{policy}\n{replicas(3, 2000 + 10 * i)}'
    body += (f'[[servers]]\nname = "two"\npolicy = "round_robin"\n[servers.remediation]\nmax_out_share = 1.0\nmin_out_s = 30\n{replicas(2, 3000)}'
             f'[[servers]]\nname = "off"\npolicy = "round_robin"\n[servers.remediation]\nauto = false\n{replicas(2, 3100)}')
    path = tmp_path / "proxy.toml"
    path.write_text(body)
    gateway = Gateway(load_settings(path))
    for pool in gateway.pools.values():
        for replica in pool.replicas:
            replica.state = "ready"  # as if connected: routing reads only this
    return gateway


def decision(server: str, replica: str, action: str = "eject", valid_for: float = 5.0, **changes: object) -> bytes:
    now = time.time()
    record = Remediation(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + valid_for, server=server,
                         replica=replica, action=action, severity="high", confidence=0.9, anomaly_id="a1",
                         reason="p99 latency 8x its baseline", model_version="det-1")
    return dataclasses.replace(record, **changes).to_json()


def chosen(gateway: Gateway, server: str, n: int = 30, session: str | None = None, now: float | None = None) -> set[str]:
    pool = gateway.pools[server]
    now = asyncio.get_running_loop().time() if now is None else now
    picks = set()
    for i in range(n):
        route = RouteRequest(server, "tools/call", "echo", session or f"s{i}", f"h{i}", now)
        picks.add(pool.choose(route).replica.id)
    return picks


def test_an_eject_takes_the_replica_out_of_every_policy_and_restore_brings_it_back(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        assert sub is not None
        for name in ("lr", "wt"):  # learned and weighted steered onto the replica that will be ejected
            now = time.time()
            weights = RoutingWeights(decision_id="w", ts=now, valid_until=now + 30, server=name,
                                     weights={f"{name}/1": 1.0}, model_version="m")
            assert sub.handle(TOPICS["routing_weights"], weights.to_json()) == "applied"
            assert chosen(gateway, name) == {f"{name}/1"}
        sticky = gateway.pools["st"]
        session = next(f"pin{i}" for i in range(100) if chosen(gateway, "st", 1, f"pin{i}") == {"st/1"})
        for name in POLICIES:
            assert sub.handle(TOPIC, decision(name, f"{name}/1")) == "applied"
            assert gateway.pools[name].health.held_out == {f"{name}/1"}
            assert f"{name}/1" not in chosen(gateway, name), name
        route = RouteRequest("st", "tools/call", "echo", session, None, asyncio.get_running_loop().time())
        moved = sticky.choose(route)
        assert moved.replica.id != "st/1" and "re-pinned" in moved.reason
        assert moved.reason.startswith("remediation: skipped st/1 (eject, anomaly a1, high); "), moved.reason
        assert moved.detail["remediation"]["skipped"] == ["st/1"]
        # restore: routable again at once (round robin reaches it within three calls)
        assert sub.handle(TOPIC, decision("rr", "rr/1", "restore")) == "applied"
        assert gateway.pools["rr"].health.held_out == frozenset()
        assert chosen(gateway, "rr", 3) == {"rr/0", "rr/1", "rr/2"}
        assert sub.counts[("remediation", "applied")] == 6
        assert gateway.remediations.counts[("rr", "restore", "applied")] == 1

    asyncio.run(run())


def test_a_hold_lapses_at_valid_until_and_drain_reports_inflight(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        pool = gateway.pools["rr"]
        pool.replicas[2].inflight = 3  # calls still running on the replica being drained
        assert sub.handle(TOPIC, decision("rr", "rr/2", "drain", valid_for=2.0)) == "applied"
        now = asyncio.get_running_loop().time()
        assert chosen(gateway, "rr", 6, now=now) == {"rr/0", "rr/1"}
        view = gateway.admin_upstreams()["servers"]["rr"]
        row = view["replicas"][2]["remediation"]
        assert row["action"] == "drain" and row["inflight"] == 3 and row["anomaly_id"] == "a1"
        assert row["severity"] == "high" and row["confidence"] == 0.9 and row["until"] > row["since"]
        assert view["auto_remediation"] is True and view["replicas"][0]["remediation"] is None
        # a refresh extends the hold; it is not a change
        assert sub.handle(TOPIC, decision("rr", "rr/2", "drain", valid_for=4.0)) == "applied"
        assert pool.health.held_until == pytest.approx(now + 4.0, abs=0.5)
        assert chosen(gateway, "rr", 6, now=now + 3.0) == {"rr/0", "rr/1"}
        assert chosen(gateway, "rr", 6, now=now + 4.5) == {"rr/0", "rr/1", "rr/2"}  # lapsed: back
        assert pool.remediation.holds == {} and gateway.remediations.counts[("rr", "drain", "expired")] == 1

    asyncio.run(run())


def test_the_share_cap_counts_health_ejections_and_keeps_the_last_replica(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        assert sub.handle(TOPIC, decision("rr", "rr/0")) == "applied"
        assert sub.handle(TOPIC, decision("rr", "rr/1")) == "rejected_limit"  # 0.5 × 3 replicas: one out
        assert gateway.pools["rr"].health.held_out == {"rr/0"}
        assert sub.handle(TOPIC, decision("rr", "rr/0", "drain")) == "applied"  # a change of a hold in force
        # health already took ch/0 out (outlier ejection): a remediation may not take another
        health = gateway.pools["ch"].health
        now = asyncio.get_running_loop().time()
        for _ in range(5):
            health.record("ch/0", False, 0.01, now)
        assert health.detector.is_ejected("ch/0", now)
        assert sub.handle(TOPIC, decision("ch", "ch/2")) == "rejected_limit"
        # max_out_share = 1.0, but never the last routable replica
        assert sub.handle(TOPIC, decision("two", "two/0")) == "applied"
        assert sub.handle(TOPIC, decision("two", "two/1")) == "rejected_limit"
        assert chosen(gateway, "two", 4) == {"two/1"}
        assert sub.counts[("remediation", "rejected_limit")] == 3
        assert gateway.remediations.counts[("ch", "eject", "rejected_limit")] == 1

    asyncio.run(run())


def test_refusal_reasons_are_precise(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        gateway.pools["rr"].replicas[2].state = "down"
        assert sub.handle(TOPIC, decision("rr", "rr/1")) == "rejected_limit"
        assert sub.handle(TOPIC, decision("zz", "zz/0")) == "rejected_unknown"
        assert sub.status()["last_rejections"]["remediation/rejected_unknown"] == (
            "remediation eject for unknown server 'zz'")
        assert sub.handle(TOPIC, decision("rr", "rr/7", "drain")) == "rejected_unknown"
        assert sub.handle(TOPIC, decision("two", "two/0", valid_for=-2.0)) == "rejected_stale"
        bad_action = orjson.loads(decision("rr", "rr/0"))
        bad_action["action"] = "reboot"
        assert sub.handle(TOPIC, orjson.dumps(bad_action)) == "rejected_decode"
        assert sub.status()["last_rejections"]["remediation/rejected_decode"] == (
            "a record on mcp.remediation does not decode: action: 'reboot' is not one of eject, drain, restore, alert")
        assert sub.handle(TOPIC, b"{half a record") == "rejected_decode"
        assert sub.handle(TOPIC, decision("two", "two/0")) == "applied"  # the channel goes on
        return sub.status()["last_rejections"]

    why = asyncio.run(run())
    assert why["remediation/rejected_limit"] == ("eject of rr/1 refused: it would take 2 of 3 replicas of rr out, "
                                                 "max_out_share 0.5 allows 1 (out now: rr/2 (down))")
    assert why["remediation/rejected_unknown"] == ("remediation drain for rr names unknown replica 'rr/7' "
                                                   "(known: rr/0, rr/1, rr/2)")
    assert why["remediation/rejected_stale"].startswith("remediation eject of two/0 stale: valid_until passed 2.")
    assert why["remediation/rejected_decode"].startswith("a record on mcp.remediation does not decode: not JSON")


def test_auto_off_records_alerts_only_and_a_runtime_switch_lifts_holds(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        assert sub.handle(TOPIC, decision("off", "off/0")) == "alert_only"
        assert gateway.pools["off"].health.held_out == frozenset()
        assert chosen(gateway, "off", 4) == {"off/0", "off/1"}
        assert sub.handle(TOPIC, decision("rr", "rr/2", "alert", severity="low")) == "applied"  # routing unchanged
        assert chosen(gateway, "rr", 3) == {"rr/0", "rr/1", "rr/2"}
        view = gateway.admin_remediation()["servers"]
        assert view["off"]["auto"] is False and view["off"]["auto_origin"] == "config"
        assert view["off"]["alerts"]["off/0"]["outcome"] == "alert_only"
        assert view["rr"]["alerts"]["rr/2"]["action"] == "alert"
        # an operator switches rr off at run time: its hold ends, further ejects are alerts only
        assert sub.handle(TOPIC, decision("rr", "rr/1")) == "applied"
        answer = gateway.admin_set_remediation({"server": "rr", "auto": False})
        assert answer == {"server": "rr", "auto": False, "lifted": 1}
        assert gateway.pools["rr"].health.held_out == frozenset()
        assert sub.handle(TOPIC, decision("rr", "rr/1")) == "alert_only"
        assert gateway.admin_upstreams()["servers"]["rr"]["auto_remediation"] is False
        assert gateway.admin_set_remediation({"server": "rr", "auto": True})["auto"] is True
        assert sub.handle(TOPIC, decision("rr", "rr/1")) == "applied"
        for body, words in (({"server": "nope", "auto": False}, "unknown server 'nope'"),
                            ({"server": "rr", "auto": "no"}, "auto must be true or false"),
                            ({"server": "rr"}, 'expected {"server"')):
            with pytest.raises(ValueError, match=words):
                gateway.admin_set_remediation(body)
        assert sub.counts[("remediation", "alert_only")] == 2
        assert gateway.remediations.counts[("rr", "eject", "lifted")] == 1

    asyncio.run(run())


def test_a_quick_eject_after_a_restore_is_honoured_and_counted_as_a_flap(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        state = gateway.pools["two"].remediation
        assert sub.handle(TOPIC, decision("two", "two/0")) == "applied"
        assert sub.handle(TOPIC, decision("two", "two/0", "restore")) == "applied"
        assert sub.handle(TOPIC, decision("two", "two/0", "restore")) == "applied"  # nothing held: no-op
        assert sub.handle(TOPIC, decision("two", "two/0")) == "applied"  # within min_out_s = 30
        assert state.holds["two/0"].action == "eject" and gateway.remediations.flaps == {"two": 1}
        assert gateway.admin_remediation()["servers"]["two"]["flaps"] == 1

    asyncio.run(run())


def test_metrics_show_counts_and_held_replicas(gateway: Gateway) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        sub.handle(TOPIC, decision("rr", "rr/0"))
        sub.handle(TOPIC, decision("rr", "rr/1"))
        sub.handle(TOPIC, decision("st", "st/1", "drain"))
        metrics = ProxyMetrics()
        gateway.attach_metrics(metrics)
        text = metrics.render()[0].decode()
        assert 'only1mcp_remediations_total{action="eject",outcome="applied",server="rr"} 1.0' in text
        assert 'only1mcp_remediations_total{action="eject",outcome="rejected_limit",server="rr"} 1.0' in text
        assert 'only1mcp_replicas_remediated{action="eject",server="rr"} 1.0' in text
        assert 'only1mcp_replicas_remediated{action="drain",server="st"} 1.0' in text
        assert 'only1mcp_replicas_remediated{action="drain",server="rr"} 0.0' in text
        assert "only1mcp_webhook_failures_total 0.0" in text
        assert 'only1mcp_decisions_total{kind="remediation",outcome="rejected_limit"} 1.0' in text

    asyncio.run(run())


def test_a_reload_keeps_the_holds_of_a_changed_server(gateway: Gateway, tmp_path: Path) -> None:
    async def run() -> None:
        sub = gateway.subscriber
        assert sub.handle(TOPIC, decision("rr", "rr/1")) == "applied"
        old = gateway.pools["rr"]
        fresh = gateway.make_pool(dataclasses.replace(old.settings, timeout=9.0))  # what reload.apply does
        assert fresh.health.held_out == {"rr/1"} and fresh.remediation.holds["rr/1"].anomaly_id == "a1"

    asyncio.run(run())


def test_the_admin_switch_is_guarded_like_every_admin_route(gateway: Gateway) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from only1mcp.proxy.admin import admin_mount
    from only1mcp.proxy.auth import AuthMiddleware
    from only1mcp.traffic import AuthSettings

    app = AuthMiddleware(Starlette(routes=[admin_mount(gateway)]), AuthSettings(tokens=("client-t",),
                                                                                admin_token="admin-t"))
    admin = {"Authorization": "Bearer admin-t"}
    with TestClient(app, base_url="http://proxy", client=("203.0.113.7", 40000)) as client:
        body = {"server": "rr", "auto": False}
        assert client.post("/admin/remediation", json=body).status_code == 401
        assert client.post("/admin/remediation", json=body,
                           headers={"Authorization": "Bearer client-t"}).status_code == 403
        assert client.get("/admin/remediation").status_code == 401
        switched = client.post("/admin/remediation", json=body, headers=admin)
        assert switched.status_code == 200 and switched.json() == {"server": "rr", "auto": False, "lifted": 0}
        view = client.get("/admin/remediation", headers=admin).json()
        assert view["servers"]["rr"]["auto"] is False and view["servers"]["rr"]["auto_origin"] == "runtime"
        assert view["servers"]["two"]["max_out_share"] == 1.0 and view["servers"]["rr"]["max_out_share"] == 0.5
        bad = client.post("/admin/remediation", json={"server": "rr", "auto": 0}, headers=admin)
        assert bad.status_code == 400 and bad.json()["error"] == "remediation switch refused: auto must be true or false, got 0"
        not_json = client.post("/admin/remediation", content=b"{", headers=admin)
        assert not_json.status_code == 400
