"""The merged catalog: every server's tools, prompts and resource templates under one namespace.

Names are exposed as ``<namespace>__<name>`` (or as the upstream gives them when
the namespace is ""). Order is deterministic: servers in configuration order, each
server's items in its own order. A name that two servers would both expose is a
conflict: the first server keeps it, the later one's item is exposed under
``<server>__<name>``, and the conflict is reported, never silently dropped. Names
longer than the configured maximum are shortened deterministically with a hash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from only1mcp.proxy.param_headers import annotations

__all__ = ["Catalog", "Entry", "KINDS", "expose_name", "template_regex"]

log = logging.getLogger("only1mcp.catalog")

KINDS = ("tools", "prompts", "resourceTemplates")
SEPARATOR = "__"


@dataclass(frozen=True, slots=True)
class Entry:
    exposed: str
    server: str
    upstream_name: str
    read_only: bool = False  # the tool's readOnlyHint: safe to cache and to repeat
    idempotent: bool = False  # idempotentHint: safe to repeat, not to cache


_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def expose_name(namespace: str, name: str, max_length: int) -> str:
    # MCP names are [A-Za-z0-9_.-]; an upstream that breaks the rule is mended, not passed on.
    exposed = _INVALID_CHARS.sub("_", f"{namespace}{SEPARATOR}{name}" if namespace else name)
    if len(exposed) <= max_length:
        return exposed
    digest = hashlib.sha256(exposed.encode()).hexdigest()[:8]
    return f"{exposed[: max_length - 9]}_{digest}"


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template (simple and reserved forms) produces."""
    parts = re.split(r"(\{[^}]*\})", template)
    pattern = "".join(
        (".+" if part.startswith("{+") or part.startswith("{/") else "[^/]+") if part.startswith("{")
        else re.escape(part) for part in parts
    )
    return re.compile(f"^{pattern}$")


@dataclass
class Catalog:
    servers: Sequence[tuple[str, str]]  # (name, namespace) in configuration order
    max_name_length: int = 64
    raw: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    index: dict[str, dict[str, Entry]] = field(default_factory=lambda: {"tools": {}, "prompts": {}})
    templates: list[tuple[re.Pattern[str], str, str]] = field(default_factory=list)  # (regex, uri template, server)
    conflicts: list[str] = field(default_factory=list)
    version: int = 0
    # Exposed tool name → its x-mcp-header annotations (valid ones only), to check 2026-07-28 Mcp-Param headers.
    param_headers: dict[str, Any] = field(default_factory=dict)

    def update(self, server: str, kind: str, items: list[dict[str, Any]]) -> bool:
        """Replace one server's list of one kind; return whether the exposed list changed."""
        per_server = self.raw.setdefault(server, {})
        if per_server.get(kind) == items:
            return False
        per_server[kind] = items
        before = self.lists[kind]
        self._rebuild(kind)
        return self.lists[kind] != before

    def forget(self, server: str) -> list[str]:
        """Drop a removed server; return the kinds whose exposed list changed."""
        kinds = list(self.raw.pop(server, {}))
        for kind in kinds:
            self._rebuild(kind)
        return kinds

    def reconfigure(self, servers: Sequence[tuple[str, str]]) -> list[str]:
        """New server order or namespaces (a reload); return the kinds whose exposed list changed."""
        self.servers = list(servers)
        names = {name for name, _ in servers}
        for gone in [name for name in self.raw if name not in names]:
            del self.raw[gone]
        changed = []
        for kind in KINDS:
            before = self.lists[kind]
            self._rebuild(kind)
            if self.lists[kind] != before:
                changed.append(kind)
        return changed

    def lookup(self, kind: str, exposed: str) -> Entry | None:
        return self.index[kind].get(exposed)

    def server_for_uri(self, uri: str) -> str | None:
        for regex, _template, server in self.templates:
            if regex.match(uri):
                return server
        return None

    def _rebuild(self, kind: str) -> None:
        self.version += 1
        if kind == "resourceTemplates":
            self._rebuild_templates()
            return
        exposed_list: list[dict[str, Any]] = []
        index: dict[str, Entry] = {}
        params: dict[str, Any] = {}
        conflicts = [c for c in self.conflicts if not c.startswith(f"{kind}:")]
        for server, namespace in self.servers:
            for item in self.raw.get(server, {}).get(kind, []):
                name = item.get("name")
                if not isinstance(name, str) or not name:
                    log.warning("server %s listed a %s without a name; skipped", server, kind[:-1])
                    continue
                exposed = expose_name(namespace, name, self.max_name_length)
                if exposed in index:
                    first = index[exposed].server
                    renamed = expose_name(server, name, self.max_name_length)
                    suffix = 2
                    while renamed in index:
                        renamed = expose_name(server, f"{name}_{suffix}", self.max_name_length)
                        suffix += 1
                    message = (f"{kind}: {exposed!r} of server {server!r} collides with server {first!r}; "
                               f"exposed as {renamed!r}")
                    conflicts.append(message)
                    log.warning("name conflict: %s", message)
                    exposed = renamed
                hints = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
                index[exposed] = Entry(exposed, server, name, hints.get("readOnlyHint") is True,
                                       hints.get("idempotentHint") is True)
                if kind == "tools" and "x-mcp-header" in str(item.get("inputSchema")):  # walked only if it may say
                    params[exposed] = annotations(item["inputSchema"])[0]
                exposed_list.append(item if exposed == name else {**item, "name": exposed})
        self.lists[kind], self.index[kind], self.conflicts = exposed_list, index, conflicts
        if kind == "tools":
            self.param_headers = {name: found for name, found in params.items() if found}

    def _rebuild_templates(self) -> None:
        merged: list[dict[str, Any]] = []
        matchers: list[tuple[re.Pattern[str], str, str]] = []
        for server, _namespace in self.servers:
            for item in self.raw.get(server, {}).get("resourceTemplates", []):
                template = item.get("uriTemplate")
                if isinstance(template, str):
                    merged.append(item)
                    matchers.append((template_regex(template), template, server))
        self.lists["resourceTemplates"], self.templates = merged, matchers
