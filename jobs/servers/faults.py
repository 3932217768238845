"""The faults upstream: an MCP server whose tools misbehave on request, for failure tests.

Tools: ``echo(text)`` answers at once; ``sleep(seconds)`` answers "slept" after
waiting, so a proxy's call timeout and cancellation can be tested (a cancelled
sleep says so on stderr); ``crash()`` kills the whole process in the middle of the
call (``os._exit(1)``: no reply, no clean shutdown, like a segfault); ``count()``
returns how many tool calls this process has executed, itself included, so a test
can tell whether a call reached the upstream, or reached a fresh process;
``roots()`` asks the client for its roots (a server-to-client request); ``greet()`` elicits
a name the revision-independent way (``Resolve(Elicit)``); ``chatter(count, size)`` streams
``count`` progress notifications of ``size`` characters each before it answers (a long
stream, for slow-reader tests; a cancelled chatter says so on stderr).

``only1mcp fixture faults --port 9201`` serves it over Streamable HTTP at ``/mcp``;
``only1mcp fixture faults --stdio`` serves it over stdin/stdout (see ``cli.py``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings

from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel

__all__ = ["build_server", "serve", "serve_stdio"]


class _Name(BaseModel):
    name: str


def _ask_name() -> Elicit[_Name]:
    return Elicit("What is your name?", _Name)


def build_server(journal: str | None = None) -> MCPServer:
    """A fresh faults server; its call counter starts at zero. With ``journal``, every
    execution of ``lookup`` and ``write`` appends a line ``tool key pid`` to that file, so a
    test can count upstream executions across replicas, even of one that was killed."""
    server: MCPServer = MCPServer("only1mcp-faults", log_level="WARNING")
    calls = 0

    def note(tool: str, key: str) -> None:
        if journal:
            with open(journal, "a") as fh:  # one short append per call: whole lines, never interleaved
                fh.write(f"{tool} {key} {os.getpid()}\n")

    def executed() -> int:
        nonlocal calls
        calls += 1
        return calls

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        executed()
        return text

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def lookup(key: str) -> str:
        """Read-only: safe to cache and to retry. Answers with the key and this process's pid."""
        executed()
        note("lookup", key)
        return f"{key}@{os.getpid()}"

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False))
    def write(key: str) -> str:
        """Side-effecting: must never be sent twice."""
        executed()
        note("write", key)
        return f"wrote {key}@{os.getpid()}"

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Wait the given number of seconds, then answer "slept"."""
        executed()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            # Said on stderr so a test can see the client's notifications/cancelled arrive.
            print(f"faults: sleep({seconds:g}) cancelled", file=sys.stderr, flush=True)
            raise
        return "slept"

    @server.tool()
    async def chatter(ctx: Context, count: int, size: int = 100, interval: float = 0.0) -> str:
        """Report progress ``count`` times, each with a message of ``size`` characters, ``interval`` s apart
        (only when the call carries a progress token), then answer "done"."""
        executed()
        pad = "x" * size
        sent = 0
        try:
            for sent in range(1, count + 1):
                await ctx.report_progress(progress=sent, total=count, message=pad)
                await asyncio.sleep(interval)
        except asyncio.CancelledError:
            print(f"faults: chatter({count}) cancelled after {sent}", file=sys.stderr, flush=True)
            raise
        return "done"

    @server.tool()
    def crash() -> str:
        """Kill this server process in the middle of the call (it never answers)."""
        executed()
        sys.stderr.flush()
        os._exit(1)

    @server.tool()
    def count() -> int:
        """How many tool calls this process has executed, this one included."""
        return executed()

    @server.tool()
    def greet(who: Annotated[_Name, Resolve(_ask_name)]) -> str:
        """Asks the client for a name by elicitation, the way that works in every revision
        (2026-07-28 turns it into an input_required result, sessions into elicitation/create)."""
        executed()
        return f"hi {who.name}"

    @server.tool()
    async def roots(ctx: Context) -> str:
        """The client's roots, asked with roots/list outside any call's stream (as list_roots does)."""
        executed()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # roots are deprecated at 2026-07-28, still served before it
            result = await ctx.session.list_roots()
        return ",".join(str(root.uri) for root in result.roots)

    return server


def serve(host: str, port: int, journal: str | None = None) -> None:
    """Serve the faults server over Streamable HTTP at ``http://host:port/mcp`` until stopped."""
    import uvicorn

    app = build_server(journal).streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def serve_stdio(journal: str | None = None) -> None:
    """Serve the faults server over stdin/stdout until stdin closes."""
    build_server(journal).run("stdio")
