"""The conformance fixture: an MCP server with every feature the MCP conformance suite tests.

``@modelcontextprotocol/conformance`` 0.1.16 (``conformance server --url URL``) runs
30 server scenarios, 40 checks (32 and 46 with ``--suite all``), each as a client of this
server: tools returning
text/image/audio/resource content, a failing tool, tools that log, report progress,
and ask the client for sampling and elicitation in mid-call, resources (static,
binary, template, subscribable), prompts, completion, ``logging/setLevel``, ping,
concurrent POST SSE streams and DNS-rebinding protection; and the tools of the two pending
scenarios (``conformance_pending.py``): a JSON Schema 2020-12 input schema, and a tool that
closes its stream mid-call so the client must resume it with ``Last-Event-ID``.

The fixture is a plain ``MCPServer`` from the mcp SDK served over Streamable HTTP
at ``/mcp`` with SDK defaults: stateful sessions (``Mcp-Session-Id``), SSE responses
to POSTs, server-to-client requests and notifications on the originating POST's
stream, and Host/Origin checks that admit only loopback names; plus an event store, so
its streams carry event ids and can be resumed with ``Last-Event-ID``. The proxy is later
put in front of it and must pass the same checks, so nothing here is tuned to the
suite beyond the fixture names and payloads it asks for.

``only1mcp fixture conformance --port 9101`` runs it (see ``cli.py``).
"""

from __future__ import annotations

import asyncio
import warnings
from collections import OrderedDict
from collections.abc import Mapping

from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    AudioContent,
    ClientCapabilities,
    Completion,
    CompletionArgument,
    CompletionContext,
    ElicitationCapability,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    LoggingLevel,
    PromptReference,
    ResourceTemplateReference,
    SamplingCapability,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)

from only1mcp.jobs.servers import conformance_catalog as catalog
from only1mcp.jobs.servers.conformance_pending import register_pending_tools
from only1mcp.jobs.servers.event_store import MemoryEventStore

__all__ = ["build_server", "build_app", "serve", "LOOPBACK_SECURITY"]

# DNS-rebinding protection (dns-rebinding-protection scenario): only loopback
# Host/Origin values pass, whatever address the fixture is bound to. The SDK
# switches this on by itself only when bound to a loopback name.
LOOPBACK_SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1", "localhost", "[::1]", "127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)

_LEVELS: tuple[LoggingLevel, ...] = (
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"
)  # fmt: skip
_MAX_SESSIONS_TRACKED = 4096  # bounds the per-session state of a long-lived fixture


class _SessionState:
    """Per-session ``logging/setLevel`` level and ``resources/subscribe`` URIs.

    Keyed by the ``Mcp-Session-Id`` header, so one client's setLevel never filters
    another's logs; the oldest sessions are forgotten past a fixed count.
    """

    def __init__(self) -> None:
        self.levels: OrderedDict[str, LoggingLevel] = OrderedDict()
        self.subscriptions: OrderedDict[str, set[str]] = OrderedDict()

    @staticmethod
    def key(headers: Mapping[str, str] | None) -> str:
        return (headers or {}).get("mcp-session-id", "")

    @staticmethod
    def _remember(table: OrderedDict, key: str, value: object) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > _MAX_SESSIONS_TRACKED:
            table.popitem(last=False)

    def set_level(self, key: str, level: LoggingLevel) -> None:
        self._remember(self.levels, key, level)

    def allows(self, key: str, level: LoggingLevel) -> bool:
        # No setLevel yet: send everything, as the spec leaves the default to the server.
        threshold = self.levels.get(key, "debug")
        return _LEVELS.index(level) >= _LEVELS.index(threshold)

    def subscribe(self, key: str, uri: str) -> None:
        self._remember(self.subscriptions, key, self.subscriptions.get(key, set()) | {uri})

    def unsubscribe(self, key: str, uri: str) -> None:
        self.subscriptions.get(key, set()).discard(uri)


def _headers(ctx: ServerRequestContext) -> Mapping[str, str] | None:
    return getattr(ctx.request, "headers", None)


def build_server() -> MCPServer:
    """A fresh conformance fixture server (fresh per-session state on every call)."""
    server: MCPServer = MCPServer("only1mcp-conformance-fixture", version="0.1.0", log_level="WARNING")
    state = _SessionState()
    _register_content_tools(server)
    _register_interactive_tools(server, state)
    register_pending_tools(server)
    catalog.register_resources(server)
    catalog.register_prompts(server)
    _register_handlers(server, state)
    return server


def _register_content_tools(server: MCPServer) -> None:
    """Tools whose whole behaviour is their result: one per content type, and an error."""

    @server.tool()
    def test_simple_text() -> str:
        """Tests simple text content response"""
        return "This is a simple text response for testing."

    @server.tool()
    def test_image_content() -> list[ImageContent]:
        """Tests image content response"""
        return [ImageContent(type="image", data=catalog.TEST_IMAGE_BASE64, mime_type="image/png")]

    @server.tool()
    def test_audio_content() -> list[AudioContent]:
        """Tests audio content response"""
        return [AudioContent(type="audio", data=catalog.TEST_AUDIO_BASE64, mime_type="audio/wav")]

    @server.tool()
    def test_embedded_resource() -> list[EmbeddedResource]:
        """Tests embedded resource content response"""
        resource = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return [EmbeddedResource(type="resource", resource=resource)]

    @server.tool()
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        """Tests response with multiple content types (text, image, resource)"""
        resource = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
        )
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=catalog.TEST_IMAGE_BASE64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=resource),
        ]

    @server.tool()
    def test_error_handling() -> str:
        """Tests error response handling (always fails with isError: true)"""
        # ToolError, not a bare exception: the SDK turns both into isError results,
        # but only an unexpected exception is logged with a traceback.
        raise ToolError("This tool intentionally returns an error for testing")


def _register_interactive_tools(server: MCPServer, state: _SessionState) -> None:
    """Tools that talk back to the client while they run (server -> client traffic)."""

    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Tests tool that emits log messages during execution"""
        key = state.key(ctx.headers)
        for i, text in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if i:
                await asyncio.sleep(0.05)  # spaced out, so they arrive as separate events
            if state.allows(key, "info"):
                # Related to this request, so they ride its POST SSE stream.
                await ctx.log("info", text, logger_name="conformance")
        return "Tool with logging executed successfully"

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Tests tool that reports progress notifications"""
        # report_progress is a no-op when the call carried no _meta.progressToken.
        for step in (0, 50, 100):
            if step:
                await asyncio.sleep(0.05)
            await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
        return "Tool with progress executed successfully"

    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Tests server-initiated sampling (sampling/createMessage to the client)"""
        if not ctx.session.check_client_capability(ClientCapabilities(sampling=SamplingCapability())):
            raise ToolError("The client did not declare the sampling capability")
        # related_request_id puts the request on this call's POST SSE stream; without
        # it the SDK would use the standalone GET stream, which may not be open.
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        text = content.text if isinstance(content, TextContent) else f"<{getattr(content, 'type', '?')} content>"
        return f"LLM response: {text}"

    async def _elicit(ctx: Context, message: str, schema: dict) -> str:
        if not ctx.session.check_client_capability(ClientCapabilities(elicitation=ElicitationCapability())):
            raise ToolError("The client did not declare the elicitation capability")
        # The raw form request, not ctx.elicit(model): the suite checks the exact
        # schema keywords, which a pydantic-generated schema would not reproduce.
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return f"action={result.action}, content={result.content or {}}"

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Tests server-initiated elicitation (elicitation/create to the client)"""
        return "User response: " + await _elicit(ctx, message, catalog.USER_INFO_SCHEMA)

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Tests elicitation with default values for all primitive types (SEP-1034)"""
        outcome = await _elicit(ctx, "Please provide user information", catalog.SEP1034_DEFAULTS_SCHEMA)
        return "Elicitation completed: " + outcome

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Tests elicitation with the enum schema variants of SEP-1330"""
        outcome = await _elicit(ctx, "Please select options", catalog.SEP1330_ENUMS_SCHEMA)
        return "Elicitation completed: " + outcome

    @server.tool()
    async def test_trigger_resource_update(ctx: Context) -> str:
        """Sends notifications/resources/updated for test://watched-resource if this session subscribed"""
        # Not used by the suite: it lets a relay be tested for notifications that
        # travel on the standalone GET stream (no related request).
        if catalog.WATCHED_RESOURCE_URI not in state.subscriptions.get(state.key(ctx.headers), set()):
            return "not subscribed to " + catalog.WATCHED_RESOURCE_URI
        await ctx.session.send_resource_updated(catalog.WATCHED_RESOURCE_URI)
        return "sent notifications/resources/updated for " + catalog.WATCHED_RESOURCE_URI

    @server.tool()
    async def test_add_tool(ctx: Context) -> str:
        """Registers the tool test_added_tool and sends notifications/tools/list_changed"""
        # Not used by the suite: it lets a relay be tested for list_changed propagation.
        def test_added_tool() -> str:
            return "added tool called"

        if "test_added_tool" not in {tool.name for tool in await server.list_tools()}:
            server.add_tool(test_added_tool, description="A tool registered at runtime by test_add_tool")
        await ctx.session.send_tool_list_changed()
        return "added test_added_tool"


def _register_handlers(server: MCPServer, state: _SessionState) -> None:
    """Completion, logging/setLevel and resources/(un)subscribe."""

    @server.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        return catalog.complete(argument.value)

    async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
        state.set_level(state.key(_headers(ctx)), params.level)
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
        state.subscribe(state.key(_headers(ctx)), str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
        state.unsubscribe(state.key(_headers(ctx)), str(params.uri))
        return EmptyResult()

    # MCPServer has no public hook for these three (the SDK's own conformance
    # server registers them the same way); registering them is also what makes
    # the server advertise the logging capability and resources.subscribe.
    lowlevel = server._lowlevel_server  # noqa: SLF001
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)


def build_app(host: str = "127.0.0.1"):
    """The Starlette app serving a fresh fixture at ``/mcp`` (Streamable HTTP, stateful, resumable: its
    events carry ids, kept by an event store, and clients are told to wait 200 ms before reconnecting)."""
    return build_server().streamable_http_app(host=host, transport_security=LOOPBACK_SECURITY,
                                              event_store=MemoryEventStore(), retry_interval=200)


def serve(host: str, port: int) -> None:
    """Serve the fixture at ``http://host:port/mcp`` until stopped."""
    import uvicorn

    # Logging, sampling and elicitation are deprecated in the 2026-07-28 revision,
    # but the suite negotiates 2025-11-25 where they are current: the fixture uses
    # them on purpose, so their warnings are noise here.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    config = uvicorn.Config(build_app(host), host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()
