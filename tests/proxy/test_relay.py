"""What the proxy relays outside a request/response, seen by the official MCP client.

Resource subscriptions (legacy ``resources/subscribe`` with the update on the GET
stream, and the stateless ``subscriptions/listen``), ``tools/list_changed`` from an
upstream whose tool list changes at runtime, and an HTTP upstream that restarts on
the same port, reconnected without the client noticing more than a failed call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp.shared.exceptions import MCPError

WATCHED = "test://watched-resource"
SUBSCRIBED_TEXT = "sent notifications/resources/updated for " + WATCHED

pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def conf_toml(fixture_url: str) -> str:
    return f"""
        [[servers]]
        name = "conf"
        [[servers.replicas]]
        url = "{fixture_url}"
    """


@pytest.fixture
def proxy_url(stack) -> str:  # noqa: ANN001 - conftest fixture
    fixture_url, _ = stack.fixture("conformance")
    url, _ = stack.proxy(conf_toml(fixture_url))
    return url


class Inbox:
    """A client's message_handler: the server notifications it received, awaitable by type."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: Any) -> None:
        self.received.append(message)
        self._changed.set()

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.received if isinstance(m, kind)]

    async def wait_for(self, kind: type, count: int = 1, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def test_resource_update_reaches_every_subscribed_client_only(proxy_url: str) -> None:
    caller, watcher, bystander = Inbox(), Inbox(), Inbox()

    async def scenario() -> None:
        async with (Client(proxy_url, mode="legacy", message_handler=caller) as a,
                    Client(proxy_url, mode="legacy", message_handler=watcher) as b,
                    Client(proxy_url, mode="legacy", message_handler=bystander) as c):
            # Before anyone subscribed, the upstream has no subscription to act on.
            assert text_of(await c.call_tool("conf__test_trigger_resource_update")) == "not subscribed to " + WATCHED
            await a.subscribe_resource(WATCHED)
            await b.subscribe_resource(WATCHED)
            assert text_of(await a.call_tool("conf__test_trigger_resource_update")) == SUBSCRIBED_TEXT
            # b made no request since: the update can only have come on its GET stream.
            for inbox in (caller, watcher):
                updates = await inbox.wait_for(types.ResourceUpdatedNotification)
                assert [str(u.params.uri) for u in updates] == [WATCHED]
            await asyncio.sleep(0.3)
            assert bystander.of(types.ResourceUpdatedNotification) == []

            # Unsubscribed clients stop getting updates; the upstream keeps the one a still wants.
            await b.unsubscribe_resource(WATCHED)
            assert text_of(await a.call_tool("conf__test_trigger_resource_update")) == SUBSCRIBED_TEXT
            assert len(await caller.wait_for(types.ResourceUpdatedNotification, 2)) == 2
            await asyncio.sleep(0.3)
            assert len(watcher.of(types.ResourceUpdatedNotification)) == 1

    asyncio.run(scenario())


def test_a_call_meets_the_subscriptions_while_the_upstream_session_is_busy(proxy_url: str) -> None:
    """The replica's extra upstream sessions take calls only once the first has two in flight: a call
    made while one other request is held there (here a sampling call waiting on its client, in CI a
    health ping) still runs on the session that holds the subscriptions."""
    release = asyncio.Event()
    sampled = 0

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        nonlocal sampled
        sampled += 1
        await release.wait()
        return types.CreateMessageResult(role="assistant", model="m", content=types.TextContent(type="text", text="ok"))

    async def scenario() -> None:
        async with (Client(proxy_url, mode="legacy") as a,
                    Client(proxy_url, mode="legacy", sampling_callback=sampling) as held):
            await a.subscribe_resource(WATCHED)
            busy = [asyncio.create_task(held.call_tool("conf__test_sampling", {"prompt": "wait"}))]
            await _until(lambda: sampled == 1)
            assert text_of(await a.call_tool("conf__test_trigger_resource_update")) == SUBSCRIBED_TEXT
            # Two in flight: calls overflow to an extra session, which has no subscriptions (as documented).
            busy.append(asyncio.create_task(held.call_tool("conf__test_sampling", {"prompt": "wait"})))
            await _until(lambda: sampled == 2)
            assert text_of(await a.call_tool("conf__test_trigger_resource_update")) == "not subscribed to " + WATCHED
            release.set()
            assert [text_of(r) for r in await asyncio.gather(*busy)] == ["LLM response: ok"] * 2
            assert text_of(await a.call_tool("conf__test_trigger_resource_update")) == SUBSCRIBED_TEXT

    asyncio.run(scenario())


async def _until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_stateless_listen_stream_gets_resource_updates_and_list_changes(proxy_url: str) -> None:
    async def scenario() -> None:
        async with Client(proxy_url, mode="2026-07-28") as client:
            async with client.listen(resource_subscriptions=[WATCHED], tools_list_changed=True) as subscription:
                assert list(subscription.honored.resource_subscriptions or []) == [WATCHED]
                assert subscription.honored.tools_list_changed
                assert text_of(await client.call_tool("conf__test_trigger_resource_update")) == SUBSCRIBED_TEXT
                async with asyncio.timeout(5):
                    event = await anext(subscription)
                assert isinstance(event, ResourceUpdated) and event.uri == WATCHED, event

                assert text_of(await client.call_tool("conf__test_add_tool")) == "added test_added_tool"
                async with asyncio.timeout(5):
                    event = await anext(subscription)
                assert isinstance(event, ToolsListChanged), event
                tools = [t.name for t in (await client.list_tools(cache_mode="refresh")).tools]
                assert "conf__test_added_tool" in tools, tools

    asyncio.run(scenario())


def test_tools_list_changed_refreshes_the_catalog_and_reaches_clients(proxy_url: str) -> None:
    caller, watcher = Inbox(), Inbox()

    async def scenario() -> None:
        async with (Client(proxy_url, mode="legacy", message_handler=caller) as a,
                    Client(proxy_url, mode="legacy", message_handler=watcher) as b):
            assert a.server_capabilities.tools is not None and a.server_capabilities.tools.list_changed
            before = [t.name for t in (await b.list_tools()).tools]
            assert "conf__test_add_tool" in before and "conf__test_added_tool" not in before
            assert text_of(await a.call_tool("conf__test_add_tool")) == "added test_added_tool"
            for inbox in (caller, watcher):  # b's only channel is its GET stream
                await inbox.wait_for(types.ToolListChangedNotification)
            after = [t.name for t in (await b.list_tools(cache_mode="refresh")).tools]
            assert after == [*before, "conf__test_added_tool"]
            assert text_of(await b.call_tool("conf__test_added_tool")) == "added tool called"

    asyncio.run(scenario())


def test_one_clients_log_level_does_not_silence_another(proxy_url: str) -> None:
    """The upstream session is shared: a client asking for errors only must not cost another client,
    which set no level, the info logs of its own calls; each still gets only what it asked for."""
    quiet_logs: list[Any] = []
    chatty_logs: list[Any] = []

    async def keep(into: list[Any], params: Any) -> None:
        into.append(params)

    async def scenario() -> None:
        async with (Client(proxy_url, mode="legacy", logging_callback=lambda p: keep(quiet_logs, p)) as quiet,
                    Client(proxy_url, mode="legacy", logging_callback=lambda p: keep(chatty_logs, p)) as chatty):
            await quiet.set_logging_level("error")
            await asyncio.sleep(0.3)  # the fan-out of the level to the upstream runs in the background
            assert text_of(await chatty.call_tool("conf__test_tool_with_logging"))
            assert [p.data for p in chatty_logs] == [
                "Tool execution started", "Tool processing data", "Tool execution completed"], chatty_logs
            assert text_of(await quiet.call_tool("conf__test_tool_with_logging"))
            assert quiet_logs == []  # info logs, below the error level it asked for
            await chatty.set_logging_level("warning")
            await asyncio.sleep(0.3)
            # A client that joins now, setting no level, brings the upstreams back to info for itself.
            async with Client(proxy_url, mode="legacy", logging_callback=lambda p: keep(late_logs, p)) as late:
                await asyncio.sleep(0.3)
                assert text_of(await late.call_tool("conf__test_tool_with_logging"))
                assert len(late_logs) == 3, late_logs

    late_logs: list[Any] = []
    asyncio.run(scenario())


def replica_state(proxy_url: str) -> str:
    body = httpx.get(proxy_url.replace("/mcp", "/admin/upstreams")).json()
    return body["servers"]["conf"]["replicas"][0]["state"]


def test_restarted_http_upstream_is_reconnected(stack) -> None:  # noqa: ANN001 - conftest fixture
    fixture_url, fixture = stack.fixture("conformance")
    port = int(fixture_url.rsplit(":", 1)[1].split("/")[0])
    proxy_url, _ = stack.proxy(conf_toml(fixture_url))

    async def call(client: Client) -> str:
        return text_of(await client.call_tool("conf__test_simple_text"))

    async def scenario() -> None:
        async with Client(proxy_url, mode="legacy") as client:
            assert await call(client) == "This is a simple text response for testing."
            fixture.popen.kill()  # a crash: SIGKILL, no goodbye to anyone
            stack.stop(fixture)
            with pytest.raises(MCPError) as down:  # while it is down, calls fail fast with a reason
                async with asyncio.timeout(5):
                    await call(client)
            assert down.value.error.data == {"server": "conf"}, down.value  # the error names the server

            _, restarted = stack.fixture("conformance", port=port)  # a new process, new sessions
            deadline, last = time.monotonic() + 10, None
            while time.monotonic() < deadline:
                try:
                    assert await call(client) == "This is a simple text response for testing."
                    break
                except MCPError as exc:
                    last = exc
                    await asyncio.sleep(0.2)
            else:
                pytest.fail(f"no successful call within 10 s of the restart; last error: {last}")
            # The session the proxy holds is healthy again: interactive calls work too.
            progress: list[float] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(value)

            result = await client.call_tool("conf__test_tool_with_progress", progress_callback=on_progress)
            assert text_of(result) == "Tool with progress executed successfully" and progress == [0, 50, 100]

            # A restart between two calls: the upstream answers the next one with 404 (unknown
            # session), and the proxy re-initializes and resends it: the client sees no error at all.
            stack.stop(restarted)
            restarted = stack.fixture("conformance", port=port)[1]
            assert await call(client) == "This is a simple text response for testing."

            # The same, once the proxy has seen the upstream go (its GET stream closed) and is in
            # its reconnect backoff: the call cuts the backoff short instead of failing.
            stack.stop(restarted)
            deadline = time.monotonic() + 10
            while replica_state(proxy_url) == "ready":
                assert time.monotonic() < deadline, "the proxy never noticed the upstream going away"
                await asyncio.sleep(0.05)
            stack.fixture("conformance", port=port)
            assert await call(client) == "This is a simple text response for testing."

    asyncio.run(scenario())


async def trigger(client: Client) -> str:
    """The trigger tool's text, or the error of a call that found the replica still reconnecting (-32010:
    a health check that fell into the restart saw the upstream gone, and the reconnect may still be under way)."""
    try:
        return text_of(await client.call_tool("conf__test_trigger_resource_update"))
    except MCPError as exc:
        if exc.error.code != -32010:
            raise
        return f"unavailable: {exc}"


def test_subscription_survives_an_upstream_restart(stack) -> None:  # noqa: ANN001 - conftest fixture
    fixture_url, fixture = stack.fixture("conformance")
    port = int(fixture_url.rsplit(":", 1)[1].split("/")[0])
    proxy_url, _ = stack.proxy(conf_toml(fixture_url))
    inbox = Inbox()

    async def scenario() -> None:
        async with Client(proxy_url, mode="legacy", message_handler=inbox) as client:
            await client.subscribe_resource(WATCHED)
            assert text_of(await client.call_tool("conf__test_trigger_resource_update")) == SUBSCRIBED_TEXT
            await inbox.wait_for(types.ResourceUpdatedNotification)

            stack.stop(fixture)  # the new process knows nothing of the subscription the proxy made
            stack.fixture("conformance", port=port)
            # The proxy re-subscribes on the new upstream session in the background once it is
            # back; the client, still subscribed at the proxy, must not have to do anything.
            deadline = time.monotonic() + 10
            while (text := await trigger(client)) != SUBSCRIBED_TEXT:
                assert time.monotonic() < deadline, f"the upstream subscription was not restored: {text}"
                await asyncio.sleep(0.2)
            await inbox.wait_for(types.ResourceUpdatedNotification, 2)

    asyncio.run(scenario())
