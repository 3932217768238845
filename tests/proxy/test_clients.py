"""The official MCP client (``mcp`` 2.3.0) through the proxy, fronting two real servers at once.

Behind one ``only1mcp proxy``: ``mcp-server-time`` from PyPI, spawned over stdio
under namespace ``time``, and the conformance fixture over Streamable HTTP under
namespace ``conf``. The client talks to the proxy as it would to any server:
in ``legacy`` mode (initialize handshake, Mcp-Session-Id, GET stream), in the
stateless ``2026-07-28`` revision (server-to-client requests bridged through
``input_required``), in ``auto`` mode, and over ``only1mcp stdio``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import Client, StdioServerParameters

from only1mcp.jobs.bench._procs import ProcessGroup
from conftest import Stack

TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
ANSWER = "forty-two, from the client's sampling callback"
USER = {"username": "alice", "email": "alice@example.org"}

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def servers_toml(fixture_url: str) -> str:
    return f"""
        [[servers]]
        name = "time"
        [[servers.replicas]]
        command = ["{TIME_SERVER}"]
        env = {{ TZ = "UTC" }}

        [[servers]]
        name = "conf"
        [[servers.replicas]]
        url = "{fixture_url}"
    """


@pytest.fixture(scope="module")
def proxy_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One proxy (and its two servers) for the module's client tests: each opens its own sessions.
    Not for a test that sets a logging level: that level reaches the shared upstream session."""
    tmp = tmp_path_factory.mktemp("clients")
    with ProcessGroup(tmp) as group:
        stack = Stack(group, tmp)
        fixture_url, _ = stack.fixture("conformance")
        url, _ = stack.proxy(servers_toml(fixture_url))
        yield url


@pytest.fixture
def own_proxy_url(stack) -> str:  # noqa: ANN001 - conftest fixture
    """A proxy of the test's own: its upstream sessions' logging level is the test's business."""
    fixture_url, _ = stack.fixture("conformance")
    url, _ = stack.proxy(servers_toml(fixture_url))
    return url


class Recorder:
    """The client's callbacks; each records what reached it."""

    def __init__(self) -> None:
        self.sampled: list[types.CreateMessageRequestParams] = []
        self.elicited: list[types.ElicitRequestParams] = []
        self.logs: list[types.LoggingMessageNotificationParams] = []

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampled.append(params)
        return types.CreateMessageResult(role="assistant", model="test-model",
                                         content=types.TextContent(type="text", text=ANSWER))

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicited.append(params)
        return types.ElicitResult(action="accept", content=USER)

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    def client(self, server: Any, mode: str, **extra: Any) -> Client:
        return Client(server, mode=mode, sampling_callback=self.sampling, elicitation_callback=self.elicitation,
                      logging_callback=self.logging, **extra)


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def check_both_servers(client: Client) -> None:
    """tools/list merges both namespaces; a call reaches each server."""
    names = [tool.name for tool in (await client.list_tools()).tools]
    assert "time__get_current_time" in names and "conf__test_simple_text" in names, names
    assert all(name.startswith(("time__", "conf__")) for name in names), names

    now = json.loads(text_of(await client.call_tool("time__get_current_time", {"timezone": "UTC"})))
    assert now["timezone"] == "UTC", now
    assert abs((datetime.fromisoformat(now["datetime"]) - datetime.now(UTC)).total_seconds()) < 120, now

    assert text_of(await client.call_tool("conf__test_simple_text")) == "This is a simple text response for testing."


async def check_interactive(client: Client, recorder: Recorder) -> None:
    """Progress, sampling and elicitation in mid-call reach the client and come back."""
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    result = await client.call_tool("conf__test_tool_with_progress", progress_callback=on_progress)
    assert text_of(result) == "Tool with progress executed successfully"
    assert progress == [0, 50, 100], progress

    result = await client.call_tool("conf__test_sampling", {"prompt": "what is six times seven?"})
    assert [m.content.text for p in recorder.sampled for m in p.messages] == ["what is six times seven?"]
    assert text_of(result) == f"LLM response: {ANSWER}"

    result = await client.call_tool("conf__test_elicitation", {"message": "who are you?"})
    assert [p.message for p in recorder.elicited] == ["who are you?"]
    assert text_of(result) == f"User response: action=accept, content={USER}"


def test_legacy_calls_both_servers_and_relays_interaction(proxy_url: str) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        async with recorder.client(proxy_url, "legacy") as client:
            assert client.protocol_version == "2025-11-25"
            assert client.server_info is not None and client.server_info.name == "only1mcp"
            await check_both_servers(client)
            await check_interactive(client, recorder)

    asyncio.run(scenario())


def test_legacy_relays_logging_at_the_level_set(own_proxy_url: str) -> None:
    proxy_url = own_proxy_url
    recorder = Recorder()
    expected = ["Tool execution started", "Tool processing data", "Tool execution completed"]

    async def scenario() -> None:
        async with recorder.client(proxy_url, "legacy") as client:
            assert client.server_capabilities.logging is not None
            await client.set_logging_level("info")
            result = await client.call_tool("conf__test_tool_with_logging")
            assert text_of(result) == "Tool with logging executed successfully"
            relayed = [(m.level, m.logger, m.data) for m in recorder.logs]
            assert relayed == [("info", "conformance", text) for text in expected]

            await client.set_logging_level("warning")  # info messages are now below the client's level
            recorder.logs.clear()
            assert text_of(await client.call_tool("conf__test_tool_with_logging"))
            assert recorder.logs == []

    asyncio.run(scenario())


def test_legacy_resources_prompts_and_completion(proxy_url: str) -> None:
    async def scenario() -> None:
        async with Client(proxy_url, mode="legacy") as client:
            caps = client.server_capabilities
            assert caps.resources is not None and caps.resources.subscribe and caps.prompts and caps.completions

            uris = [str(r.uri) for r in (await client.list_resources()).resources]
            assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= set(uris), uris
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            assert templates == ["test://template/{id}/data"]

            static = (await client.read_resource("test://static-text")).contents
            assert [(str(c.uri), c.text) for c in static] == [
                ("test://static-text", "This is the content of the static text resource.")]
            templated = (await client.read_resource("test://template/7/data")).contents
            assert json.loads(templated[0].text) == {"id": "7", "templateTest": True, "data": "Data for ID: 7"}

            prompts = [p.name for p in (await client.list_prompts()).prompts]
            assert "conf__test_prompt_with_arguments" in prompts and "conf__test_simple_prompt" in prompts, prompts
            prompt = await client.get_prompt("conf__test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
            assert [m.content.text for m in prompt.messages] == ["Prompt with arguments: arg1='a', arg2='b'"]

            ref = types.PromptReference(type="ref/prompt", name="conf__test_prompt_with_arguments")
            completion = (await client.complete(ref, {"name": "arg1", "value": "par"})).completion
            assert completion.values == ["paris", "park", "party"]
            template_ref = types.ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data")
            completion = (await client.complete(template_ref, {"name": "id", "value": "test"})).completion
            assert completion.values == ["test-value", "testing"]

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["2026-07-28", "auto"])
def test_stateless_calls_both_servers_and_relays_interaction(proxy_url: str, mode: str) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        async with recorder.client(proxy_url, mode, log_level="info") as client:
            assert client.protocol_version == "2026-07-28"  # auto discovers that the proxy speaks it
            await check_both_servers(client)
            await check_interactive(client, recorder)

            # Stateless: the elicitation travels as an input_required result, answered by a retry.
            first = await client.session.call_tool("conf__test_elicitation", {"message": "again?"},
                                                   allow_input_required=True)
            assert isinstance(first, types.InputRequiredResult), first
            [(key, request)] = first.input_requests.items()
            assert request.method == "elicitation/create" and request.params.message == "again?"
            final = await client.session.call_tool(
                "conf__test_elicitation", {"message": "again?"}, allow_input_required=True,
                input_responses={key: types.ElicitResult(action="decline")}, request_state=first.request_state)
            assert text_of(final) == "User response: action=decline, content={}"

            # Logging opted into per request (_meta logLevel) reaches the logging callback.
            recorder.logs.clear()
            assert text_of(await client.call_tool("conf__test_tool_with_logging"))
            assert [m.data for m in recorder.logs] == [
                "Tool execution started", "Tool processing data", "Tool execution completed"]

    asyncio.run(scenario())


def test_stdio_front_calls_both_servers(stack) -> None:  # noqa: ANN001 - conftest fixture
    fixture_url, _ = stack.fixture("conformance")
    config, _ = stack.write_config(servers_toml(fixture_url))
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "only1mcp.cli", "stdio", "--config", str(config)])
    recorder = Recorder()

    async def scenario() -> None:
        async with recorder.client(params, "legacy") as client:
            assert client.server_info is not None and client.server_info.name == "only1mcp"
            await check_both_servers(client)
            result = await client.call_tool("conf__test_elicitation", {"message": "over stdio?"})
            assert text_of(result) == f"User response: action=accept, content={USER}"
            assert [p.message for p in recorder.elicited] == ["over stdio?"]

    asyncio.run(scenario())
