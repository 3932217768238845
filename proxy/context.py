"""tools/list context optimisation: an opted-in client sees the tools it is likely to use, and a
search meta-tool that finds and enables the rest.

Every tool list a client is sent ends up in its model's context, and a gateway in front of
many servers lists hundreds of tools. With ``[context] enabled``, a session of an opted-in
client (``[context] clients``, or the client's own ``experimental["only1mcp/context"]``
capability) lists:

- the ``max_tools`` tools its client called most at this proxy, counts decaying with a
  ``half_life`` (a client with too short a history is topped up with the tools called most by
  every client; with no history anywhere the session gets the whole catalog),
- the tools this session called or found by search, and
- the search meta-tool (``search_tool``): a free-text query scored by BM25 over every tool's
  name and description (``proxy/toolsearch.py``); what it finds is returned with its input
  schema and added to the session's list, and the session is sent
  ``notifications/tools/list_changed``.

The ranked part is fixed when the session first needs it, so a session's list only grows: a
client (and a model's prompt cache) sees the same list until the session itself changes it.
Any catalog tool can still be called by name, listed or not. Per call the proxy does a few dict
operations; ranking happens once per session, searching only when asked. Memory is bounded:
``max_clients`` histories of at most ``max_tools_per_client`` tools, ``_OVERALL_MAX`` tools in
the all-client counts, and a session's additions are catalog tools only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import orjson

from only1mcp.context import CAPABILITY, MAX_SEARCH_LIMIT, ContextSettings
from only1mcp.errors import INVALID_PARAMS, RPCError
from only1mcp.proxy.toolsearch import ToolIndex

if TYPE_CHECKING:
    from only1mcp.proxy.catalog import Catalog, Entry
    from only1mcp.proxy.sessions import ClientSession

__all__ = ["Context", "History", "View", "MAX_QUERY_CHARS"]

MAX_QUERY_CHARS = 1000  # a query is a few words; a longer one is a mistake or an attack on the scorer
_OVERALL_MAX = 4096  # tools in the all-client counts (more than any catalog the proxy has served)
_LIST_CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
_ARGUMENTS = frozenset({"query", "limit"})


class History:
    """Decayed ``tools/call`` counts per client and over all clients, bounded in memory.

    A count is stored as ``[score, at]`` and read as ``score · 2^(-(now - at) / half_life)``, so a
    call costs one exponential, and nothing is ever swept.
    """

    def __init__(self) -> None:
        self.clients: OrderedDict[str, dict[str, list[float]]] = OrderedDict()  # least recently active first
        self.overall: dict[str, list[float]] = {}

    def record(self, client: str | None, tool: str, now: float, settings: ContextSettings) -> None:
        rate = math.log(2) / settings.half_life
        _bump(self.overall, tool, now, rate, _OVERALL_MAX)
        if client is None:
            return
        counts = self.clients.get(client)
        if counts is None:
            counts = self.clients[client] = {}
            while len(self.clients) > settings.max_clients:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(client)
        _bump(counts, tool, now, rate, settings.max_tools_per_client)

    def ranked(self, client: str | None, now: float, half_life: float) -> list[str]:
        """The client's tools, most called (decayed) first; ties by name."""
        return _ranked(self.clients.get(client, {}) if client is not None else {}, now, math.log(2) / half_life)

    def popular(self, now: float, half_life: float) -> list[str]:
        """Every client's tools, most called (decayed) first; ties by name."""
        return _ranked(self.overall, now, math.log(2) / half_life)


def _bump(counts: dict[str, list[float]], tool: str, now: float, rate: float, cap: int) -> None:
    entry = counts.get(tool)
    if entry is not None:
        entry[0] = entry[0] * math.exp(-rate * (now - entry[1])) + 1.0
        entry[1] = now
        return
    if len(counts) >= cap:  # the weakest gives way to the newcomer (a scan, only when full and new)
        del counts[min(counts, key=lambda name: counts[name][0] * math.exp(-rate * (now - counts[name][1])))]
    counts[tool] = [1.0, now]


def _ranked(counts: dict[str, list[float]], now: float, rate: float) -> list[str]:
    scored = [(-entry[0] * math.exp(-rate * (now - entry[1])), name) for name, entry in counts.items()]
    return [name for _score, name in sorted(scored)]


class View:
    """What one session lists: the ranked tools fixed at its start (None: all) and its own additions."""

    __slots__ = ("base", "extra")

    def __init__(self, base: frozenset[str] | None) -> None:
        self.base = base
        self.extra: dict[str, None] = {}  # tools called or found in this session, in order

    def shows(self, name: str) -> bool:
        return self.base is None or name in self.base or name in self.extra


class Context:
    def __init__(self, catalog: Catalog, settings: Any) -> None:
        """``settings`` returns the ContextSettings in force (they follow reloads)."""
        self.catalog, self.settings = catalog, settings
        self.history = History()
        self._clients: tuple[ContextSettings | None, frozenset[str]] = (None, frozenset())
        self._index: tuple[int, ToolIndex | None] = (-1, None)

    # -- who is opted in -------------------------------------------------------------
    def active(self, session: ClientSession) -> bool:
        """Whether ``session`` gets pruned lists and the search tool (sessionless requests never do)."""
        settings = self.settings()
        if not settings.enabled or session.id is None:
            return False
        experimental = session.capabilities.get("experimental")
        asked = experimental.get(CAPABILITY) if isinstance(experimental, dict) else None
        if isinstance(asked, dict):
            return asked.get("enabled", True) is not False
        configured, clients = self._clients
        if configured is not settings:
            self._clients = (settings, frozenset(settings.clients))
            clients = self._clients[1]
        return "*" in clients or session.client in clients

    # -- per call --------------------------------------------------------------------
    def on_call(self, name: str, entry: Entry | None, arguments: Any, session: ClientSession) -> dict[str, Any] | None:
        """A ``tools/call``: the search tool's answer, or None after counting a catalog tool's call."""
        settings = self.settings()
        active = self.active(session)
        if active and name == settings.search_tool:
            return self.search(arguments, session, settings)
        if entry is None:
            return None
        self.history.record(session.client if session.id is not None else None, entry.exposed, time.monotonic(),
                            settings)
        if active:
            view = self._view(session, settings)
            if not view.shows(entry.exposed):
                view.extra[entry.exposed] = None  # listed from now on; the client knows it already
        return None

    # -- tools/list ------------------------------------------------------------------
    def tools(self, session: ClientSession) -> list[dict[str, Any]]:
        """The session's list: the search tool, then its tools in catalog order (a catalog tool named like
        the search tool is hidden from opted-in sessions: one name, one tool)."""
        settings = self.settings()
        view, name = self._view(session, settings), settings.search_tool
        shown = [tool for tool in self.catalog.lists["tools"] if tool["name"] != name and view.shows(tool["name"])]
        return [self.search_tool(settings), *shown]

    def _view(self, session: ClientSession, settings: ContextSettings) -> View:
        view = getattr(session, "context", None)
        if view is None:
            view = session.context = View(self._ranked(session, settings))
        return view

    def _ranked(self, session: ClientSession, settings: ContextSettings) -> frozenset[str] | None:
        index, now = self.catalog.index["tools"], time.monotonic()
        chosen = [name for name in self.history.ranked(session.client, now, settings.half_life) if name in index]
        chosen = chosen[:settings.max_tools]
        if len(chosen) < settings.max_tools:  # a short history is topped up with what every client uses
            for name in self.history.popular(now, settings.half_life):
                if len(chosen) >= settings.max_tools:
                    break
                if name in index and name not in chosen:
                    chosen.append(name)
        return frozenset(chosen) if chosen else None  # no history anywhere: the whole catalog

    def search_tool(self, settings: ContextSettings) -> dict[str, Any]:
        return {
            "name": settings.search_tool,
            "title": "Search tools",
            "description": (
                f"Find tools by what they do, among all {len(self.catalog.lists['tools'])} tools of this gateway. "
                "The tool list shows the tools you are likely to need; when none fits, search here in a few words "
                "(e.g. 'refund an order'). Found tools come back with their input schemas, are added to your tool "
                "list (notifications/tools/list_changed follows) and can be called at once."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS,
                              "description": "what the tool should do, in a few words"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_LIMIT,
                              "description": f"most tools to return (default {settings.search_limit})"},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            "annotations": {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False},
        }

    # -- the search tool -------------------------------------------------------------
    def search(self, arguments: Any, session: ClientSession, settings: ContextSettings) -> dict[str, Any]:
        name = settings.search_tool
        if arguments is None:
            arguments = {}
        unknown = sorted(str(key) for key in arguments if key not in _ARGUMENTS)
        if unknown:
            raise RPCError(INVALID_PARAMS, f"{name}: unknown argument(s) {', '.join(unknown)[:200]}; "
                                           "expected query and optionally limit")
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise RPCError(INVALID_PARAMS, f"{name}: 'query' must be a non-empty string (what the tool should do)")
        if len(query) > MAX_QUERY_CHARS:
            raise RPCError(INVALID_PARAMS, f"{name}: 'query' is {len(query)} characters long; at most "
                                           f"{MAX_QUERY_CHARS} are allowed")
        limit = arguments.get("limit", settings.search_limit)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise RPCError(INVALID_PARAMS, f"{name}: 'limit' must be an integer from 1 to {MAX_SEARCH_LIMIT}")
        found = [tool for tool, _score in self._tool_index().search(query, limit)]
        view = self._view(session, settings)
        enabled = [tool["name"] for tool in found if not view.shows(tool["name"])]
        for tool_name in enabled:
            view.extra[tool_name] = None
        if enabled:
            session.push(_LIST_CHANGED)
        listed = [{key: tool[key] for key in ("name", "title", "description", "inputSchema") if key in tool}
                  for tool in found]
        text = orjson.dumps(listed).decode() if listed else f"no tool matches {query.strip()[:100]!r}"
        return {"content": [{"type": "text", "text": text}]}

    def _tool_index(self) -> ToolIndex:
        version, index = self._index
        if index is None or version != self.catalog.version:  # built again only after the catalog changed
            index = ToolIndex(self.catalog.lists["tools"])
            self._index = (self.catalog.version, index)
        return index
