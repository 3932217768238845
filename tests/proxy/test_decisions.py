"""The decision channel end to end: a real embedded broker (tansu), three real MCP replicas, the proxy as
a subprocess with ``policy = "learned"``. Routing weights published with aiokafka steer the calls; bad
records are counted and never applied; operator pins and bans beat the weights; every call has a request
id (header, event, explanation); a reload and a stopped broker leave the proxy serving."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from only1mcp.events import TOPICS, RoutingWeights
from only1mcp.infra.broker import EmbeddedBroker
from only1mcp.jobs.bench._procs import ProcessGroup
from tests.conftest import PYTHON, Stack, wait_port
from tests.proxy._raw import RawClient, final
from tests.proxy._topics import request_events

WEIGHTS_TOPIC = TOPICS["routing_weights"]
SERVERS = """
[[servers]]
name = "f"
policy = "learned"
fallback_policy = "round_robin"
exploration = 0.0
{extra}
[servers.tools.write]
pin = ["f/1"]
{replicas}

[[servers]]
name = "classic"
namespace = "c"
policy = "round_robin"
[[servers.replicas]]
url = "{first}"
"""


class Env:
    def __init__(self, stack: Stack, broker: EmbeddedBroker, url: str, config: Path, upstreams: list[str]) -> None:
        self.stack, self.broker, self.url, self.config, self.upstreams = stack, broker, url, config, upstreams
        self.admin = url.replace("/mcp", "/admin")
        self.client = RawClient(url)
        self.sid = self.client.initialize()

    # -- publishing decisions --------------------------------------------------------------
    def publish(self, *values: bytes, key: bytes | None = b"f") -> None:
        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, linger_ms=1)
            await producer.start()
            try:
                await asyncio.gather(*[await producer.send(WEIGHTS_TOPIC, value, key=key) for value in values])
            finally:
                await producer.stop()

        asyncio.run(send())

    def weights(self, tool: str | None = "f__echo", weights: dict[str, float] | None = None,
                predicted_ms: dict[str, list[float]] | None = None, valid_for: float = 60.0,
                model: str | None = None, server: str = "f", source: str = "latency_model") -> RoutingWeights:
        now = time.time()
        return RoutingWeights(decision_id=uuid.uuid4().hex, ts=now, valid_until=now + valid_for, server=server,
                              weights=weights or {}, tool=tool, predicted_ms=predicted_ms or {},
                              model_version=model or f"m-{uuid.uuid4().hex[:6]}", source=source)

    def applied(self, model: str, tool: str | None = "echo", timeout: float = 15.0) -> None:
        """Wait until the proxy shows ``model`` in force for ``tool`` (None = server-wide)."""
        def check() -> bool:
            learned = httpx.get(f"{self.admin}/upstreams").json()["servers"]["f"]["learned"]
            entry = learned["server"] if tool is None else learned["tools"].get(tool)
            return entry is not None and entry["model_version"] == model
        self.client.poll(check, timeout)

    # -- calls and what the proxy says about them ----------------------------------------------
    def call(self, tool: str = "f__echo", sid: str | None = None, rpc_id: Any = None,
             accept: str | None = None) -> tuple[httpx.Response, str]:
        message = {"jsonrpc": "2.0", "id": rpc_id if rpc_id is not None else self.client.next_id(),
                   "method": "tools/call", "params": {"name": tool, "arguments": _args(tool)}}
        resp = self.client.post(message, sid=sid or self.sid, headers={"Accept": accept} if accept else None)
        assert resp.status_code == 200, resp.text
        assert "result" in final(resp), resp.text
        request_id = resp.headers.get("only1mcp-request-id")
        assert request_id and re.fullmatch(r"[0-9a-f]{32}", request_id), resp.headers
        return resp, request_id

    def explain(self, request_id: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.admin}/explain/{request_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def chosen(self, tool: str = "f__echo", n: int = 12) -> list[str]:
        return [self.explain(self.call(tool)[1])["chosen"] for _ in range(n)]

    def metric(self, outcome: str, kind: str = "routing_weights") -> float:
        text = httpx.get(self.url.replace("/mcp", "/metrics")).text
        found = re.search(rf'^only1mcp_decisions_total{{kind="{kind}",outcome="{outcome}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def override(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.admin}/overrides", json=body)


def _args(tool: str) -> dict[str, Any]:
    return {"f__echo": {"text": "x"}, "f__lookup": {"key": "k"}, "f__write": {"key": "k"}, "c__echo": {"text": "y"},
            "f__count": {}}.get(tool, {})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("decisions")
    with EmbeddedBroker() as broker, ProcessGroup(tmp) as group:
        broker.create_topics([TOPICS["requests"]], 1)
        stack = Stack(group, tmp)
        upstreams = [stack.fixture("faults")[0] for _ in range(3)]
        replicas = "".join(f'[[servers.replicas]]\nurl = "{u}"\n' for u in upstreams)
        body = SERVERS.format(extra="", replicas=replicas, first=upstreams[0])
        extra = (f'[events]\nbootstrap = "{broker.bootstrap}"\nspool_dir = "{tmp / "spool"}"\n'
                 f'[decisions]\nlookback = 8\n')
        path, port = stack.write_config(body + extra)
        proc = stack.start(f"proxy-{port}", [PYTHON, "-m", "only1mcp.cli", "proxy", "--config", str(path)])
        wait_port(port, proc, timeout=30)
        # The weights topic appears only now: the subscriber keeps looking for it.
        broker.create_topics([WEIGHTS_TOPIC], 2)
        environment = Env(stack, broker, f"http://127.0.0.1:{port}/mcp", path, upstreams)
        try:
            yield environment
        finally:
            environment.client.close()


def test_without_weights_the_fallback_decides_and_says_why(env: Env) -> None:
    resp, request_id = env.call()
    explanation = env.explain(request_id)
    assert explanation["request_id"] == request_id and explanation["server"] == "f"
    assert explanation["tool"] == "f__echo" and explanation["policy"] == "learned"
    assert explanation["fallback_reason"] == "no weights yet"
    assert {c["replica"] for c in explanation["candidates"]} == {"f/0", "f/1", "f/2"}
    assert all(isinstance(c["inflight"], int) for c in explanation["candidates"])
    assert explanation["chosen"] in {"f/0", "f/1", "f/2"} and explanation["cache_hit"] is False
    assert "fell back to round_robin" in explanation["attempts"][0]["reason"]
    missing = httpx.get(f"{env.admin}/explain/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and "no explanation for request id" in missing.json()["error"]


def test_published_weights_steer_the_calls(env: Env) -> None:
    record = env.weights(weights={"f/2": 1.0}, model="echo-v1")
    env.publish(record.to_json())
    env.applied("echo-v1")
    assert set(env.chosen()) == {"f/2"}
    explanation = env.explain(env.call()[1])
    assert explanation["model_version"] == "echo-v1" and explanation["source"] == "latency_model"
    assert explanation["scope"] == "tool" and explanation["fallback_reason"] is None
    rows = {c["replica"]: c for c in explanation["candidates"]}
    assert rows["f/2"]["probability"] == pytest.approx(1.0) and rows["f/0"]["weight"] == 0.0
    # Server-wide weights cover the tools without their own entry.
    env.publish(env.weights(tool=None, weights={"f/0": 1.0}, model="server-v1").to_json())
    env.applied("server-v1", tool=None)
    assert set(env.chosen("f__count", 6)) == {"f/0"}
    assert set(env.chosen("f__echo", 6)) == {"f/2"}  # the tool's entry beats the server's
    assert env.metric("applied") >= 2 and env.metric("received") >= 2


def test_latency_curves_show_in_the_explanation(env: Env) -> None:
    curves = {"f/0": [50.0, 90.0], "f/1": [5.0, 8.0, 30.0], "f/2": [40.0]}
    env.publish(env.weights(tool="f__lookup", predicted_ms=curves, model="lookup-v1").to_json())
    env.applied("lookup-v1", tool="lookup")
    explanation = env.explain(env.call("f__lookup")[1])
    rows = {c["replica"]: c for c in explanation["candidates"]}
    assert explanation["chosen"] == "f/1"  # idle, predicted 5 ms: exp(-(40/5 - 1)/0.3) ≈ 0 for the others
    assert rows["f/1"]["predicted_ms"] == 5.0 and rows["f/1"]["weight"] == 1.0 and rows["f/0"]["inflight"] == 0
    assert rows["f/0"]["predicted_ms"] == 50.0 and rows["f/0"]["probability"] < 1e-6


def test_bad_records_are_counted_and_never_applied(env: Env) -> None:
    env.publish(env.weights(weights={"f/2": 1.0}, model="good-v2").to_json())
    env.applied("good-v2")
    before = {o: env.metric(o) for o in ("rejected_decode", "rejected_unknown", "rejected_stale", "rejected_policy")}
    stale = dataclasses.replace(env.weights(weights={"f/0": 1.0}, model="stale-v1"), valid_until=time.time() - 5)
    env.publish(b"{not json", b'{"type": "routing_weights", "schema_version": 1}',
                orjson.dumps({**orjson.loads(env.weights(weights={"f/0": 1.0}).to_json()), "weights": {"f/0": -1}}),
                env.weights(server="nope", weights={"nope/0": 1.0}).to_json(),
                env.weights(weights={"f/0": 1.0, "f/9": 1.0}, model="unknown-replica").to_json(),
                env.weights(tool="f__no_such_tool", weights={"f/0": 1.0}).to_json(),
                env.weights(tool="c__echo", weights={"f/0": 1.0}).to_json(),  # a tool of another server
                env.weights(server="classic", tool=None, weights={"classic/0": 1.0}).to_json(),
                stale.to_json())
    expected = {"rejected_decode": 3, "rejected_unknown": 4, "rejected_stale": 1, "rejected_policy": 1}
    env.client.poll(lambda: all(env.metric(o) - before[o] >= n for o, n in expected.items()), 15)
    assert all(env.metric(o) - before[o] == n for o, n in expected.items())
    assert set(env.chosen(n=8)) == {"f/2"}  # still the good weights
    learned = httpx.get(f"{env.admin}/upstreams").json()["servers"]["f"]["learned"]
    assert learned["tools"]["echo"]["model_version"] == "good-v2"
    text = httpx.get(env.url.replace("/mcp", "/metrics")).text
    assert re.search(r'^only1mcp_decision_age_seconds{server="f"} \d', text, re.M), text


def test_pin_and_ban_beat_the_weights(env: Env) -> None:
    env.publish(env.weights(weights={"f/2": 1.0}, model="pinned-v1").to_json())
    env.applied("pinned-v1")
    answer = env.override({"server": "f", "tool": "f__echo", "ban": ["f/2"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["tool"] == "echo"  # stored by the upstream name
    ids = [env.call()[1] for _ in range(6)]
    explanations = [env.explain(i) for i in ids]
    # The tool's weights name only f/2: the server-wide weights (f/0) decide instead.
    assert {e["chosen"] for e in explanations} == {"f/0"}
    assert explanations[0]["scope"] == "server" and explanations[0]["model_version"] == "server-v1"
    assert explanations[0]["overrides"]["ban"] == ["f/2"] and explanations[0]["overrides"]["origin"] == "runtime"
    reason = explanations[0]["attempts"][0]["reason"]
    assert reason.startswith("override (runtime): banned f/2; weights for tool echo (model pinned-v1) name no "
                             "ready replica; learned (server): f/0"), reason
    assert env.override({"server": "f", "tool": "echo", "pin": ["f/0"]}).status_code == 200  # the upstream name
    explanation = env.explain(env.call()[1])
    assert explanation["chosen"] == "f/0" and "pinned to f/0" in explanation["overrides"]["effect"]
    assert set(env.chosen(n=6)) == {"f/0"}
    # ban everything: ignored rather than failing the call, and said so
    env.override({"server": "f", "tool": "echo", "ban": ["f/0", "f/1", "f/2"]})
    explanation = env.explain(env.call()[1])
    assert "ignored: it would leave no routable replica" in explanation["overrides"]["effect"]
    assert explanation["chosen"] == "f/2"
    listed = httpx.get(f"{env.admin}/overrides").json()["overrides"]
    assert {"server": "f", "tool": "echo", "pin": [], "ban": ["f/0", "f/1", "f/2"], "origin": "runtime",
            "active": True} in listed
    assert {"server": "f", "tool": "write", "pin": ["f/1"], "ban": [], "origin": "config", "active": True} in listed
    cleared = env.override({"server": "f", "tool": "f__echo", "pin": [], "ban": []})
    assert cleared.json()["cleared"] is True
    assert set(env.chosen(n=6)) == {"f/2"}  # the weights again
    # the file's pin, for a tool with no weights of its own but under the server's
    explanation = env.explain(env.call("f__write")[1])
    assert explanation["chosen"] == "f/1" and explanation["overrides"]["origin"] == "config"
    # refusals
    for body, words in (({"server": "zz", "tool": "echo", "pin": ["f/0"]}, "unknown server"),
                        ({"server": "f", "tool": "echo", "pin": ["f/7"]}, "unknown replica ids f/7"),
                        ({"server": "f", "tool": "nope", "ban": []}, "unknown tool"),
                        ({"server": "f", "tool": "echo", "ban": "f/0"}, "must be a list"),
                        ({"server": "f", "tool": "echo", "pin": ["classic/0"]}, "unknown replica ids classic/0")):
        refused = env.override(body)
        assert refused.status_code == 400 and words in refused.json()["error"], refused.text


def test_request_ids_join_the_header_the_event_and_the_explanation(env: Env) -> None:
    env.publish(env.weights(weights={"f/2": 1.0}, model="join-v1").to_json())
    env.applied("join-v1")
    _, json_id = env.call()
    sse, sse_id = env.call(accept="text/event-stream, application/json")  # the client prefers a stream
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert json_id != sse_id
    # Two sessions reusing one JSON-RPC id get two explanations.
    other = env.client.initialize()
    _, first = env.call(sid=env.sid, rpc_id="same")
    _, second = env.call(tool="f__count", sid=other, rpc_id="same")
    assert first != second
    assert env.explain(first)["tool"] == "f__echo" and env.explain(second)["tool"] == "f__count"
    assert httpx.get(f"{env.admin}/decisions/same").status_code == 200  # the JSON-RPC id view stays
    # The events carry the request id as event_id, and the replica's load when the call was routed.
    wanted = {json_id, sse_id, first, second}
    events = request_events(env.broker.bootstrap, wanted)
    assert set(events) == wanted
    for request_id, event in events.items():
        explanation = env.explain(request_id)
        assert event.replica == explanation["chosen"]
        loads = {c["replica"]: c["inflight"] for c in explanation["candidates"]}
        assert event.inflight == loads[event.replica] and event.inflight is not None
    # Stateless (2026-07-28) requests get one too.
    stateless = env.client.stateless("tools/call", {"name": "f__echo", "arguments": {"text": "s"}})
    assert stateless.status_code == 200, stateless.text
    assert env.explain(stateless.headers["only1mcp-request-id"])["chosen"] == "f/2"


def test_a_reload_replaces_the_pool_and_the_channel_goes_on(env: Env) -> None:
    env.override({"server": "f", "tool": "lookup", "pin": ["f/0"]})
    text = env.config.read_text().replace('exploration = 0.0\n', 'exploration = 0.0\ntimeout = 30.0\n', 1)
    env.config.write_text(text)
    answer = httpx.post(f"{env.admin}/reload")
    assert answer.status_code == 200, answer.text
    env.client.poll(lambda: httpx.get(f"{env.admin}/config").json()["servers"][0]["timeout"] == 30.0, 10)
    explanation = env.explain(env.call()[1])  # the new pool's table starts empty
    assert explanation["fallback_reason"] == "no weights yet" or explanation["model_version"] == "after-reload"
    env.publish(env.weights(weights={"f/1": 1.0}, model="after-reload").to_json())
    env.applied("after-reload")
    assert set(env.chosen(n=6)) == {"f/1"}
    assert env.explain(env.call("f__lookup")[1])["chosen"] == "f/0"  # runtime overrides outlive the reload
    env.override({"server": "f", "tool": "lookup", "pin": []})
    status = httpx.get(f"{env.admin}/upstreams").json()["decisions"]
    assert status["connected"] is True and len(status["assigned"]) == 2


def test_with_the_broker_stopped_the_proxy_serves_and_explains_the_fallback(env: Env) -> None:
    env.publish(env.weights(weights={"f/2": 1.0}, model="short-v1", valid_for=3.0).to_json())
    env.applied("short-v1")
    assert set(env.chosen(n=3)) == {"f/2"}
    env.broker.stop()
    time.sleep(3.2)
    started = time.monotonic()
    ids = [env.call()[1] for _ in range(6)]
    assert time.monotonic() - started < 5.0  # the calls never wait for the broker
    explanations = [env.explain(i) for i in ids]
    assert {e["chosen"] for e in explanations} == {"f/0", "f/1", "f/2"}  # round robin
    reason = explanations[0]["fallback_reason"]
    assert "weights for tool echo of model short-v1 stale since" in reason, reason
    learned = httpx.get(f"{env.admin}/upstreams").json()["servers"]["f"]["learned"]
    assert learned["tools"]["echo"]["valid_for_s"] < 0
