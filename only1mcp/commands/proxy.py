"""``only1mcp proxy``: serve the MCP endpoint over Streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from only1mcp.settings import Settings

__all__ = ["add_arguments", "run", "server_config"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override [proxy] listen")


def run(args: argparse.Namespace) -> int:
    from only1mcp.commands._common import load_or_exit, setup_logging
    from only1mcp.proxy.app import build_app
    from only1mcp.proxy.auth import demo_tokens_in, exposure_refusal

    environ = dict(args.environ)
    if args.listen:
        environ["ONLY1MCP_PROXY_LISTEN"] = args.listen
    settings = load_or_exit(args.config, environ)
    refusal = exposure_refusal(settings)
    if refusal:
        print(f"only1mcp: {refusal}", file=sys.stderr)
        return 2
    setup_logging(settings.proxy.log_level, stream=sys.stderr)
    from only1mcp.settings import load_settings

    app = build_app(settings, reload_from=lambda: load_settings(args.config, environ))
    log = logging.getLogger("only1mcp")
    if demo_tokens_in(settings.auth):
        log.warning("demo mode ([proxy] demo = true): the published demo tokens are accepted; never expose this proxy")
    log.info("serving MCP at http://%s/mcp", settings.proxy.listen)
    logging.getLogger("uvicorn.error").addFilter(_abandoned_on_purpose)
    _closing_server(server_config(app, settings), getattr(app, "close_streams", None)).run()
    return 0


def _closing_server(config: Any, close_streams: Any) -> Any:
    """A uvicorn server that ends the held SSE streams when it shuts down: its graceful shutdown waits for
    every response to end, and a GET stream never does (clients resume with Last-Event-ID)."""
    import uvicorn

    from only1mcp.commands._common import freeze_startup_heap

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            freeze_startup_heap()  # after the lifespan: upstream sessions and catalogs are start-up state too

        async def shutdown(self, sockets: Any = None) -> None:
            if close_streams is not None:
                close_streams()
            await super().shutdown(sockets)

    return Server(config)


def server_config(app: Any, settings: Settings) -> Any:
    """The uvicorn configuration the proxy runs with (tests serve the app in process with the same)."""
    import uvicorn

    from only1mcp.proxy.limits import head_timeout_protocol

    # uvicorn's own limits stay as they are: timeout_keep_alive (5 s) closes idle keep-alive connections;
    # the proxy adds what uvicorn lacks (header_timeout here, body_timeout, stream limits, session and
    # inflight caps in the app). header_timeout is read at start-up only. proxy_headers=False: the peer
    # address (loopback or not, for the admin API) is the socket's, never a client-supplied header.
    protocol = head_timeout_protocol(settings.proxy.header_timeout, send_buffer_bytes=settings.proxy.send_buffer_bytes)
    return uvicorn.Config(app, host=settings.proxy.host, port=settings.proxy.port, log_level="warning",
                          access_log=False, loop="uvloop", http=protocol,
                          lifespan="on", proxy_headers=False, server_header=False, date_header=False)


def _abandoned_on_purpose(record: logging.LogRecord) -> bool:
    """The front drops an SSE stream whose client stopped reading by returning without finishing the
    response (ASGI has no other way to close a connection); it logs that itself, so uvicorn's line goes."""
    return record.getMessage() != "ASGI callable returned without completing response."
