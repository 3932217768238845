"""What ``bench context``'s replayed agent knows and does: the traces' tools on the toolbox servers, the words it
searches with, how payloads are counted in tokens, and the plain MCP client it speaks through.

**Mapping.** The agent traces' 20 tools (``jobs/bench/traces/*.jsonl``) exist under their own names
on the toolbox servers (``jobs/servers/toolbox_catalog.py``), so a trace tool ``get_order`` is the
gateway's ``shop__get_order``: the mapping is by name, and the traces' arguments fit the schemas.

**Queries.** When the tool a trace calls next is not in the session's list, the agent searches
before calling it. It does not know the tool's name; it knows its task. ``TASKS`` holds, per trace
tool, three phrasings of that task as an agent would type them, written once by hand for this
benchmark (before any run; they are not tuned to the scorer, and some share words with other
servers' tools: "ticket" for an issue, "package" for a shipment); ``{name}`` fields are filled
from the call's own arguments (a search term, an id), as an agent's query would carry them. One
is drawn per call with a seeded generator. A second, mechanical query mode (``description_query``)
takes three content words of the tool's own description, leaving out the words of its name: it
is reported beside, for comparison, never judged.

**Tokens.** tiktoken is not installed (and would download its encodings at run time), so tokens
are approximated two ways: ``bytes / 4`` (the usual rule of thumb for English text with OpenAI's
tokenizers) and ``pieces``: one per run of letters, of digits or of punctuation in the JSON, a
count of the word-like units a BPE tokenizer would need at least.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import httpx
import orjson

from only1mcp.jobs.servers.toolbox_catalog import SERVERS
from only1mcp.proxy.toolsearch import words

__all__ = ["Client", "TASKS", "exposed_names", "task_query", "description_query", "approx_tokens", "pieces"]

TASKS: dict[str, tuple[str, ...]] = {
    # devtools
    "search_issues": ("find issues about {query}", "search for bug reports mentioning {query}",
                      "which open problems talk about {query}"),
    "get_issue": ("show the details of issue {issue_id}", "open the bug {issue_id} and read its status",
                  "what is the status and assignee of ticket {issue_id}"),
    "list_comments": ("read the discussion on issue {issue_id}", "what did people reply on {issue_id}",
                      "show the latest comments of the bug"),
    "get_user": ("who is {user_id}", "look up the person {user_id} and their team",
                 "get the profile and email of a user"),
    "search_code": ("find where {query} is implemented in the {repo} code", "grep the {repo} source for {query}",
                    "search the codebase for a symbol"),
    "get_file": ("open the source file {path}", "read the contents of {path} in {repo}", "show me the code in a file"),
    "add_comment": ("post a note on issue {issue_id}", "reply on the bug with an update",
                    "write a comment on {issue_id}"),
    "update_issue": ("mark issue {issue_id} as {status}", "change the state of the bug to {status}",
                     "set the status of a ticket"),
    "assign_issue": ("give issue {issue_id} to {user_id}", "make {user_id} the owner of the bug",
                     "assign the bug to someone"),
    # support
    "get_customer": ("look up customer {customer_id}", "show the account details of a client",
                     "who is customer {customer_id} and what tier are they"),
    "get_order": ("check order {order_id}", "what is in order {order_id} and has it been paid",
                  "show the status of a purchase"),
    "search_customers": ("find the customer named {query}", "look up a client account by name or email",
                         "search for the shopper {query}"),
    "list_orders": ("what has customer {customer_id} bought recently", "show the purchase history of a client",
                    "list the orders of {customer_id}"),
    "search_kb": ("find a help article about {query}", "search the documentation for {query}",
                  "look for an FAQ answer on how to fix it"),
    "get_article": ("read help article {article_id}", "open the knowledge base page {article_id}",
                    "show the full text of the FAQ entry"),
    "get_shipment": ("where is package {shipment_id}", "track the delivery {shipment_id}",
                     "has the parcel been delivered yet"),
    "send_message": ("email the customer about the delay", "notify {customer_id} with a standard template",
                     "send the client an update"),
    "create_ticket": ("open a support case for {customer_id}", "log a new complaint: {subject}",
                      "file a ticket for the customer's problem"),
    "refund_order": ("give the money back for order {order_id}", "refund {order_id} because {reason}",
                     "reimburse the customer for a purchase"),
    "update_address": ("change the delivery address of {customer_id}", "the client moved, update where we ship",
                       "fix the shipping address on file"),
}
_ACCEPT = "application/json, text/event-stream"
_VERSION = "2025-11-25"
_OPT_IN = {"experimental": {"only1mcp/context": {}}}  # the initialize capability that opts a client in
_FIELD = re.compile(r"\{(\w+)\}")
_PIECE = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]+")


def exposed_names() -> dict[str, str]:
    """Trace tool name → the gateway's exposed name (``<server>__<tool>``)."""
    return {tool: f"{server}__{tool}" for server, _what, specs in SERVERS for tool, *_rest in specs}


def task_query(tool: str, args: dict[str, Any], rng: random.Random) -> str:
    """One of the tool's task phrasings, its fields filled from the call's arguments."""
    phrase = rng.choice(TASKS[tool])
    return _FIELD.sub(lambda m: str(args.get(m.group(1), "")), phrase).strip()


def description_query(tool: str, description: str, rng: random.Random, count: int = 3) -> str:
    """``count`` content words of the tool's description that are not words of its name."""
    own = set(words(tool))
    candidates = [w for w in dict.fromkeys(re.findall(r"[A-Za-z]+", description))
                  if words(w) and words(w)[0] not in own]
    return " ".join(rng.sample(candidates, min(count, len(candidates))))


def approx_tokens(payload: bytes) -> int:
    return (len(payload) + 3) // 4


def pieces(payload: bytes) -> int:
    return len(_PIECE.findall(payload.decode()))


class Client:
    """A plain Streamable HTTP MCP client (sessions, JSON answers), one token per call."""

    def __init__(self, url: str) -> None:
        self.url, self.http, self.requests = url, httpx.Client(timeout=30.0), 0
        self._ids = 0

    def post(self, token: str, message: dict[str, Any], sid: str | None = None) -> httpx.Response:
        headers = {"Accept": _ACCEPT, "Authorization": f"Bearer {token}"}
        if sid is not None:
            headers |= {"Mcp-Session-Id": sid, "MCP-Protocol-Version": _VERSION}
        self.requests += 1
        return self.http.post(self.url, content=orjson.dumps(message), headers=headers | {
            "Content-Type": "application/json"})

    def request(self, token: str, sid: str | None, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        response = self.post(token, {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}, sid)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
            replies = [json.loads(d) for d in data if d]
            return next(r for r in reversed(replies) if "result" in r or "error" in r)
        return response.json()

    def open(self, token: str, opt_in: bool) -> str:
        reply = self.post(token, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": _VERSION, "capabilities": _OPT_IN if opt_in else {},
            "clientInfo": {"name": "bench-context", "version": "1"}}})
        sid = reply.headers["mcp-session-id"]
        self.post(token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
        return sid

    def tools(self, token: str, sid: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {}
        while True:
            result = self.request(token, sid, "tools/list", params)["result"]
            found.extend(result["tools"])
            if not result.get("nextCursor"):
                return found
            params = {"cursor": result["nextCursor"]}

    def close(self, token: str, sid: str) -> None:
        self.requests += 1
        self.http.delete(self.url, headers={"Mcp-Session-Id": sid, "Authorization": f"Bearer {token}"})
