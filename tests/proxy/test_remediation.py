"""Remediation end to end: a real embedded broker (tansu), three real MCP replicas, the proxy as a
subprocess. ``Remediation`` records published on ``mcp.remediation`` with aiokafka take replicas out of
routing within a second and bring them back (restore, valid_until); auto off records alerts only; the
share cap refuses; bad records are rejected precisely while the channel goes on; the alert webhook gets
each change (a real HTTP server in a thread), and a dead webhook never delays routing."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from only1mcp.events import TOPICS, Remediation, RequestEvent
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.jobs.bench._procs import ProcessGroup
from tests.conftest import PYTHON, Stack, wait_port
from tests.proxy._raw import RawClient, final

TOPIC = TOPICS["remediation"]
SERVER = """
[[servers]]
name = "{name}"
policy = "round_robin"
{extra}
{replicas}
"""


class Receiver(http.server.ThreadingHTTPServer):
    """The alert webhook's receiver: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.bodies.append(orjson.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


class Env:
    def __init__(self, broker: EmbeddedBroker, url: str, receiver: Receiver) -> None:
        self.broker, self.url, self.receiver = broker, url, receiver
        self.admin = url.replace("/mcp", "/admin")
        self.client = RawClient(url)
        self.sid = self.client.initialize()

    def record(self, replica: str, action: str = "eject", valid_for: float = 10.0,
               anomaly: str = "a1", **changes: Any) -> Remediation:
        now = time.time()
        base = Remediation(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + valid_for,
                           server=replica.split("/")[0], replica=replica, action=action, severity="high",
                           confidence=0.92, anomaly_id=anomaly, reason="error rate 40 % (baseline 1 %)",
                           model_version="det-1")
        return dataclasses.replace(base, **changes)

    def publish(self, *values: bytes | Remediation) -> float:
        """Publish on mcp.remediation; returns the monotonic time just before the first send."""
        async def send() -> float:
            producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, linger_ms=0)
            await producer.start()
            try:
                started = time.monotonic()
                for value in values:
                    data = value.to_json() if isinstance(value, Remediation) else value
                    key = value.replica.encode() if isinstance(value, Remediation) else b"x"
                    await producer.send_and_wait(TOPIC, data, key=key)
                return started
            finally:
                await producer.stop()

        return asyncio.run(send())

    def call(self, server: str) -> dict[str, Any]:
        """One tools/call of the server's echo; its explanation."""
        message = {"jsonrpc": "2.0", "id": self.client.next_id(), "method": "tools/call",
                   "params": {"name": f"{server}__echo", "arguments": {"text": "x"}}}
        resp = self.client.post(message, sid=self.sid)
        assert resp.status_code == 200 and "result" in final(resp), resp.text
        answer = httpx.get(f"{self.admin}/explain/{resp.headers['only1mcp-request-id']}")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def chosen(self, server: str, n: int = 6) -> list[str]:
        return [self.call(server)["chosen"] for _ in range(n)]

    def avoided_after(self, started: float, replica: str, timeout: float = 5.0) -> float:
        """Seconds from ``started`` until a call's explanation says it skipped ``replica`` for remediation."""
        server = replica.split("/")[0]
        while True:
            explanation = self.call(server)
            now = time.monotonic()
            skipped = (explanation.get("remediation") or {}).get("skipped") or []
            if replica in skipped:
                assert explanation["chosen"] != replica
                return now - started
            assert now - started < timeout, f"{replica} still routed {timeout}s after its eject"

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url.replace("/mcp", "/metrics")).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = rf"^{name}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
        found = re.search(pattern, text, re.M)
        return float(found.group(1)) if found else 0.0

    def remediation(self, server: str) -> dict[str, Any]:
        return httpx.get(f"{self.admin}/remediation").json()["servers"][server]  # type: ignore[no-any-return]

    def restore(self, replica: str) -> None:
        self.publish(self.record(replica, "restore"))
        self.client.poll(lambda: replica not in self.remediation(replica.split("/")[0])["held"], 10, 0.05)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("remediation")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    dead = socket.socket()  # listens but never answers: each POST hangs until its timeout
    dead.bind(("127.0.0.1", 0))
    dead.listen(1)
    try:
        with EmbeddedBroker() as broker, ProcessGroup(tmp) as group:
            broker.create_topics([TOPICS["requests"]], 1)
            broker.create_topics([TOPIC], 2)
            stack = Stack(group, tmp)
            upstreams = [stack.fixture("faults")[0] for _ in range(3)]
            three = "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in upstreams)
            two = "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in upstreams[:2])
            hook = f"http://127.0.0.1:{receiver.server_address[1]}/alerts"
            dead_hook = f"http://127.0.0.1:{dead.getsockname()[1]}/alerts"
            body = (SERVER.format(name="f", extra="", replicas=three)
                    + SERVER.format(name="m", extra="[servers.remediation]\nauto = false", replicas=two)
                    + SERVER.format(name="w", extra=f'[servers.remediation]\nwebhook = "{hook}"', replicas=three)
                    + SERVER.format(name="d", extra=f'[servers.remediation]\nwebhook = "{dead_hook}"\n'
                                                    f'webhook_timeout = 1.0', replicas=three)
                    + f'[events]\nbootstrap = "{broker.bootstrap}"\nspool_dir = "{tmp / "spool"}"\n')
            path, port = stack.write_config(body)
            proc = stack.start(f"proxy-{port}", [PYTHON, "-m", "only1mcp.cli", "proxy", "--config", str(path)])
            wait_port(port, proc, timeout=30)
            environment = Env(broker, f"http://127.0.0.1:{port}/mcp", receiver)
            environment.client.poll(lambda: len(httpx.get(f"{environment.admin}/upstreams").json()["decisions"]
                                                ["assigned"]) == 2, 20)
            try:
                yield environment
            finally:
                environment.client.close()
    finally:
        receiver.shutdown()
        dead.close()


def test_an_eject_leaves_routing_within_a_second_and_restore_brings_it_back(env: Env) -> None:
    assert set(env.chosen("f", 3)) == {"f/0", "f/1", "f/2"}
    started = env.publish(env.record("f/1"))
    latency = env.avoided_after(started, "f/1")
    print(f"\npublication → first call avoiding f/1: {latency * 1000:.0f} ms")
    assert latency < 1.0
    explanations = [env.call("f") for _ in range(8)]
    assert {e["chosen"] for e in explanations} == {"f/0", "f/2"}
    reason = explanations[0]["attempts"][0]["reason"]
    assert reason.startswith("remediation: skipped f/1 (eject, anomaly a1, high); turn "), reason
    upstreams = httpx.get(f"{env.admin}/upstreams").json()["servers"]["f"]
    row = upstreams["replicas"][1]["remediation"]
    assert upstreams["auto_remediation"] is True
    assert row["action"] == "eject" and row["severity"] == "high" and row["confidence"] == 0.92
    assert row["anomaly_id"] == "a1" and row["reason"] == "error rate 40 % (baseline 1 %)"
    assert row["since"] <= time.time() < row["until"]
    assert env.metric("only1mcp_replicas_remediated", server="f", action="eject") == 1
    # the request event carries the same reason
    event = _event(env.broker.bootstrap, explanations[0]["request_id"])
    assert event.reason.startswith("remediation: skipped f/1"), event.reason
    started = time.monotonic()
    env.publish(env.record("f/1", "restore"))
    env.client.poll(lambda: "f/1" in env.chosen("f", 3), 5, 0.0)
    print(f"publication of restore → f/1 routed again: {(time.monotonic() - started) * 1000:.0f} ms")
    assert env.metric("only1mcp_remediations_total", server="f", action="restore", outcome="applied") == 1
    assert env.metric("only1mcp_replicas_remediated", server="f", action="eject") == 0


def test_a_hold_lapses_at_valid_until(env: Env) -> None:
    started = env.publish(env.record("f/2", "drain", valid_for=2.0, anomaly="a2"))
    assert env.avoided_after(started, "f/2") < 1.0
    assert "f/2" not in env.chosen("f", 4)
    remaining = 2.0 - (time.monotonic() - started)
    time.sleep(max(0.0, remaining) + 0.1)
    assert "f/2" in env.chosen("f", 3)  # round robin reaches it again within three calls
    assert env.remediation("f")["held"] == {}
    assert env.metric("only1mcp_remediations_total", server="f", action="drain", outcome="expired") == 1


def test_auto_off_records_an_alert_and_routing_is_unchanged(env: Env) -> None:
    env.publish(env.record("m/0"))
    env.client.poll(lambda: env.metric("only1mcp_remediations_total", server="m", action="eject",
                                       outcome="alert_only") == 1, 10, 0.05)
    assert set(env.chosen("m", 4)) == {"m/0", "m/1"}
    view = env.remediation("m")
    assert view["auto"] is False and view["held"] == {} and view["alerts"]["m/0"]["outcome"] == "alert_only"
    # switched off at run time, then on again, without a restart
    answer = httpx.post(f"{env.admin}/remediation", json={"server": "f", "auto": False})
    assert answer.status_code == 200 and answer.json()["auto"] is False, answer.text
    env.publish(env.record("f/0"))
    env.client.poll(lambda: env.metric("only1mcp_remediations_total", server="f", action="eject",
                                       outcome="alert_only") == 1, 10, 0.05)
    assert set(env.chosen("f", 3)) == {"f/0", "f/1", "f/2"}
    assert httpx.get(f"{env.admin}/upstreams").json()["servers"]["f"]["auto_remediation"] is False
    assert env.remediation("f")["auto_origin"] == "runtime"
    assert httpx.post(f"{env.admin}/remediation", json={"server": "f", "auto": True}).json()["auto"] is True
    refused = httpx.post(f"{env.admin}/remediation", json={"server": "nope", "auto": False})
    assert refused.status_code == 400 and "unknown server 'nope'" in refused.json()["error"]
    assert env.metric("only1mcp_decisions_total", kind="remediation", outcome="alert_only") == 2


def test_the_share_cap_refuses_a_second_eject(env: Env) -> None:
    started = env.publish(env.record("f/0", anomaly="a3"))
    assert env.avoided_after(started, "f/0") < 1.0
    env.publish(env.record("f/2", anomaly="a4"))  # 0.5 × 3 replicas: only one may be out
    env.client.poll(lambda: env.metric("only1mcp_remediations_total", server="f", action="eject",
                                       outcome="rejected_limit") == 1, 10, 0.05)
    assert set(env.chosen("f", 4)) == {"f/1", "f/2"}
    why = httpx.get(f"{env.admin}/upstreams").json()["decisions"]["last_rejections"]["remediation/rejected_limit"]
    assert why == ("eject of f/2 refused: it would take 2 of 3 replicas of f out, max_out_share 0.5 allows 1 "
                   "(out now: f/0 (eject))")
    env.restore("f/0")


def test_bad_records_are_rejected_precisely_and_the_next_good_one_applies(env: Env) -> None:
    outcomes = ("rejected_decode", "rejected_unknown", "rejected_stale")
    before = {o: env.metric("only1mcp_decisions_total", kind="remediation", outcome=o) for o in outcomes}
    bad_action = orjson.loads(env.record("f/1").to_json())
    bad_action["action"] = "reboot"
    started = env.publish(b"{not json", orjson.dumps(bad_action), env.record("zz/0"), env.record("f/9"),
                          env.record("f/1", valid_for=-3.0), env.record("f/1", anomaly="a5"))
    assert env.avoided_after(started, "f/1") < 1.0  # the good record after five bad ones
    expected = {"rejected_decode": 2, "rejected_unknown": 2, "rejected_stale": 1}
    for outcome, n in expected.items():
        assert env.metric("only1mcp_decisions_total", kind="remediation", outcome=outcome) - before[outcome] == n
    why = httpx.get(f"{env.admin}/upstreams").json()["decisions"]["last_rejections"]
    assert why["remediation/rejected_decode"] == ("a record on mcp.remediation does not decode: action: 'reboot' "
                                                  "is not one of eject, drain, restore, alert")
    assert why["remediation/rejected_unknown"] == ("remediation eject for f names unknown replica 'f/9' "
                                                   "(known: f/0, f/1, f/2)")
    assert why["remediation/rejected_stale"].startswith("remediation eject of f/1 stale: valid_until passed 3.")
    env.restore("f/1")


def test_the_webhook_gets_each_change_once(env: Env) -> None:
    env.receiver.bodies.clear()
    started = env.publish(env.record("w/0", anomaly="a6"))
    assert env.avoided_after(started, "w/0") < 1.0
    env.publish(env.record("w/0", anomaly="a6"), env.record("w/0", anomaly="a6"))  # refreshes: no new POST
    env.publish(env.record("w/0", "restore", anomaly="a6"))
    env.client.poll(lambda: len(env.receiver.bodies) >= 2, 10, 0.05)
    time.sleep(0.3)
    bodies = env.receiver.bodies
    assert [(b["action"], b["outcome"]) for b in bodies] == [("eject", "applied"), ("restore", "applied")]
    assert bodies[0]["replica"] == "w/0" and bodies[0]["anomaly_id"] == "a6" and bodies[0]["type"] == "remediation"
    assert env.metric("only1mcp_webhook_failures_total") == 0


def test_a_dead_webhook_never_delays_routing(env: Env) -> None:
    started = env.publish(env.record("d/0"))
    latency = env.avoided_after(started, "d/0")
    print(f"\npublication → first call avoiding d/0 (webhook hanging): {latency * 1000:.0f} ms")
    assert latency < 1.0
    t0 = time.monotonic()
    assert "d/0" not in env.chosen("d", 6)
    assert time.monotonic() - t0 < 2.0  # six calls with explanations, the POST hanging meanwhile
    env.publish(env.record("d/0", "restore"))  # a second change queues behind the hanging POST
    env.client.poll(lambda: env.metric("only1mcp_webhook_failures_total") >= 2, 10, 0.1)
    assert "d/0" in env.chosen("d", 3)
    webhooks = httpx.get(f"{env.admin}/remediation").json()["webhooks"]
    dead = next(w for w in webhooks if w["url"] == env.remediation("d")["webhook"])
    assert dead["failures"] >= 2 and "Timeout" in dead["last_error"], dead


def _event(bootstrap: str, request_id: str, timeout: float = 20.0) -> RequestEvent:
    async def read() -> RequestEvent:
        consumer = AIOKafkaConsumer(TOPICS["requests"], bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = RequestEvent.from_json(record.value)
                        if event.event_id == request_id:
                            return event
        finally:
            await consumer.stop()
        raise AssertionError(f"no request event {request_id}")

    return asyncio.run(read())
