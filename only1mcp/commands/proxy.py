"""``only1mcp proxy``: serve the MCP endpoint over Streamable HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override [proxy] listen")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from only1mcp.commands._common import load_or_exit, setup_logging
    from only1mcp.proxy.app import build_app
    from only1mcp.proxy.auth import exposure_refusal
    from only1mcp.proxy.limits import head_timeout_protocol

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
    logging.getLogger("only1mcp").info("serving MCP at http://%s/mcp", settings.proxy.listen)
    # uvicorn's own limits stay as they are: timeout_keep_alive (5 s) closes idle keep-alive connections;
    # the proxy adds what uvicorn lacks (header_timeout here, body_timeout, stream limits, session and
    # inflight caps in the app). header_timeout is read at start-up only.
    config = uvicorn.Config(app, host=settings.proxy.host, port=settings.proxy.port, log_level="warning",
                            access_log=False, loop="uvloop", http=head_timeout_protocol(settings.proxy.header_timeout),
                            lifespan="on",
                            proxy_headers=False, server_header=False, date_header=False)
    logging.getLogger("uvicorn.error").addFilter(_abandoned_on_purpose)
    uvicorn.Server(config).run()
    return 0


def _abandoned_on_purpose(record: logging.LogRecord) -> bool:
    """The front drops an SSE stream whose client stopped reading by returning without finishing the
    response (ASGI has no other way to close a connection); it logs that itself, so uvicorn's line goes."""
    return record.getMessage() != "ASGI callable returned without completing response."
