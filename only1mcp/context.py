"""Settings of tools/list context optimisation: ``[context]`` of the one configuration file.

An opted-in client's ``tools/list`` holds the tools it most likely needs (ranked from its own
``tools/call`` history at this proxy) plus a search meta-tool that finds and enables the rest
(``proxy/context.py``). Off by default: a client that is not opted in sees the whole catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from only1mcp.traffic import _positive, check

__all__ = ["ContextSettings", "MAX_SEARCH_LIMIT", "CAPABILITY"]

MAX_SEARCH_LIMIT = 50  # results one search may ask for: each carries a whole input schema
# A client opts itself in with capabilities.experimental[CAPABILITY] = {} in initialize
# ({"enabled": false} opts a configured client out); experimental is MCP's place for such keys.
CAPABILITY = "only1mcp/context"
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # MCP's rule for tool names


def _tool_name(value: Any) -> str | None:
    return None if _TOOL_NAME.match(value) else "expected 1-128 characters of A-Z a-z 0-9 _ . -"


def _search_limit(value: Any) -> str | None:
    return None if 1 <= value <= MAX_SEARCH_LIMIT else f"must be between 1 and {MAX_SEARCH_LIMIT}"


@dataclass(frozen=True)
class ContextSettings:
    enabled: bool = False  # off: every client sees the whole catalog, no history is kept
    # Client identities opted in (as the proxy names them: "token:" + 12 hex digits of the token's
    # SHA-256, else the peer address); "*" = every client. A client may also opt in itself (CAPABILITY).
    clients: tuple[str, ...] = ()
    max_tools: int = check(_positive, 15)  # ranked tools in an opted-in session's list (besides its own)
    search_tool: str = field(default="only1mcp_search_tools", metadata={"check": _tool_name})
    search_limit: int = check(_search_limit, 5)  # results of a search that names no limit
    half_life: float = check(_positive, 86_400.0)  # seconds for a past call to count half as much
    max_clients: int = check(_positive, 10_000)  # client histories kept; the least recently active go first
    max_tools_per_client: int = check(_positive, 256)  # tools remembered per client; the lowest score goes
