"""An upstream spoken to in the stateless revision 2026-07-28 (`protocol = "2026-07-28"`):
discover instead of initialize, the _meta envelope on every call, input_required answered by
asking the proxy's client, subscriptions/listen for list changes, cancel by closing the stream."""

from __future__ import annotations

import asyncio
import time

import pytest
from mcp import Client, types

from conftest import Stack
from only1mcp.jobs.bench._procs import ProcessGroup

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def modern_proxy(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """One upstream and proxy for the module: the calls tests leave nothing the timeout test looks for."""
    tmp = tmp_path_factory.mktemp("modern")
    with ProcessGroup(tmp) as group:
        stack = Stack(group, tmp)
        upstream_url, upstream = stack.fixture("faults")
        url, proc = stack.proxy(f"""
        [[servers]]
        name = "f"
        timeout = 2.0
        [[servers.replicas]]
        url = "{upstream_url}"
        protocol = "2026-07-28"
        """)
        yield url, proc, upstream


async def _session(url: str, mode: str) -> tuple[list[str], str, str, int]:
    asked = 0

    async def elicit(context, params):  # noqa: ANN001, ANN202
        nonlocal asked
        asked += 1
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with Client(url, mode=mode, elicitation_callback=elicit) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        echoed = (await client.call_tool("f__echo", {"text": "hello"})).content[0].text
        greeted = (await client.call_tool("f__greet", {})).content[0].text
        return names, echoed, greeted, asked


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_calls_and_input_required_through_a_stateless_upstream(modern_proxy, mode: str) -> None:  # noqa: ANN001
    url, proc, _ = modern_proxy
    names, echoed, greeted, asked = asyncio.run(_session(url, mode))
    assert {"f__echo", "f__greet", "f__sleep"} <= set(names)
    assert echoed == "hello"
    assert greeted == "hi Ada" and asked == 1
    assert "2026-07-28" in proc.log_path.read_text()  # the replica's ready line names the revision


def test_a_timed_out_call_closes_its_stream_and_the_upstream_cancels(modern_proxy) -> None:  # noqa: ANN001
    url, _, upstream = modern_proxy

    async def call() -> types.CallToolResult:
        async with Client(url, mode="legacy") as client:
            try:
                return await client.call_tool("f__sleep", {"seconds": 30})
            except Exception as exc:  # the SDK raises the JSON-RPC error
                return exc  # type: ignore[return-value]

    started = time.monotonic()
    outcome = asyncio.run(call())
    assert time.monotonic() - started < 10
    assert "-32001" in repr(getattr(outcome, "error", outcome)) or "did not answer" in str(outcome), outcome
    deadline = time.monotonic() + 10
    while "sleep(30) cancelled" not in upstream.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sleep(30) cancelled" in upstream.log_path.read_text(), upstream.log_tail(20)
