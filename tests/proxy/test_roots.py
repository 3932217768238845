"""roots/list from an upstream reaches the client and the answer goes back, over both upstream
transports: on HTTP the request arrives on the upstream's GET stream (related to no call) and the
proxy asks the client on its own GET stream; on stdio it arrives on the one shared stream."""

from __future__ import annotations

import asyncio
import sys

import pytest
from mcp import Client, types

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def _roots_seen(url: str, tool: str) -> tuple[str, int]:
    asked = 0

    async def list_roots(context):  # noqa: ANN001, ANN202
        nonlocal asked
        asked += 1
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    async with Client(url, mode="legacy", list_roots_callback=list_roots) as client:
        await asyncio.sleep(0.5)  # the client's GET stream opens after initialized
        result = await client.call_tool(tool, {})
        assert not result.is_error, result
        return result.content[0].text, asked


def test_roots_request_is_relayed_from_http_and_stdio_upstreams(stack) -> None:  # noqa: ANN001
    http_url, _ = stack.fixture("faults")
    url, _ = stack.proxy(f"""
    [[servers]]
    name = "web"
    [[servers.replicas]]
    url = "{http_url}"

    [[servers]]
    name = "local"
    [[servers.replicas]]
    command = ["{sys.executable}", "-m", "only1mcp.cli", "fixture", "faults", "--stdio"]
    """)
    for tool in ("web__roots", "local__roots"):
        text, asked = asyncio.run(_roots_seen(url, tool))
        assert text == "file:///work/project" and asked == 1, (tool, text, asked)
