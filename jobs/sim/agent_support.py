"""The ``support`` world: a shop's customers, orders, shipments and knowledge base, and support agents.

Entities: 800 customers (``cus_<hex>``, Zipf popularity s = 1.1), 1-6 orders each (``ord_<n>``, one
shipment each, ``shp_<n>``), 200 knowledge-base articles (``KB-<n>``) and 60 KB queries (Zipf s = 1.0).
A customer changes (a new order) at 1/3 h × rank^-0.5, an order (its status) at 1/1 h, a shipment (a
tracking event) at 1/10 min; writes change what they touch; articles never change.

Tools (read-only: the first seven): ``search_customers(query)`` → up to 3 customers;
``get_customer(customer_id)``; ``list_orders(customer_id, status)``; ``get_order(order_id)``;
``get_shipment(shipment_id)``; ``search_kb(query)`` and ``get_article(article_id)`` → plain text;
writes ``refund_order(order_id, reason)``, ``send_message(customer_id, template)``,
``create_ticket(customer_id, subject)``, ``update_address(customer_id, address)``.

The agent (weights of its next action; rank weights pick among result items):

* first call: search_customers .55 (the customer's name, Zipf), get_customer .25 (an id the user
  pastes), search_kb .20;
* after search_customers: get_customer(items[r], r ~ .75/.15/.10) .82, a new search .08, end .10;
* after get_customer(C): list_orders(C, "any" .8 / "open" .2) .45, get_order(recent_orders[r],
  r ~ .7/.3) .20, search_kb .08, send_message .05, create_ticket .05, update_address .02, end .15;
* after list_orders: get_order(orders[r], r ~ .55/.25/.12/.08) .65, list_orders(C, the other
  status) .05, get_customer(C) again .05, search_kb .07, end .18;
* after get_order(O): get_shipment(its shipment) .45, refund_order .08, the next order of the list
  .12, send_message .06, search_kb .07, get_customer(its customer) .05, end .17;
* after get_shipment: poll it again .12, send_message .15, the next order .12, create_ticket .05,
  search_kb .08, end .48;
* after search_kb: get_article(the r-th id in the text, r ~ .6/.25/.15) .72, a new search .10, end .18;
* after get_article: a related article (r ~ .7/.3) .20, send_message .20, list_orders(C) .15,
  search_kb .10, end .35 (the customer actions only once a customer is known);
* after a write: get_order(O) .25, get_customer(C) .20, list_orders(C) .10, end .45.
"""

from __future__ import annotations

import random
from typing import Any

from only1mcp.jobs.sim.agents import Step, Versions, World, ranked
from only1mcp.jobs.sim.workload import Zipf

__all__ = ["SupportWorld"]

_FIRST = ("Ada", "Ben", "Chen", "Dana", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia")
_LAST = ("Ng", "Smith", "Okafor", "Rossi", "Kim", "Silva", "Novak", "Haas", "Diaz", "Berg")
_TOPICS = ("refund", "damaged item", "late delivery", "change address", "cancel order", "warranty", "invoice",
           "exchange size", "missing parcel", "promo code", "account locked", "gift card")
_STATUSES = ("placed", "paid", "packed", "shipped", "delivered")
_READ = frozenset({"search_customers", "get_customer", "list_orders", "get_order", "get_shipment", "search_kb",
                   "get_article"})
_TEMPLATES = ("apology", "shipping_update", "refund_confirmation")


class SupportWorld(World):
    name = "support"
    read_only = _READ
    session_gap_s, think_median_s, think_sigma, clients = 6.0, 7.0, 0.9, 16
    CUSTOMERS, ARTICLES, QUERIES = 800, 200, 60

    def __init__(self, seed: int | str) -> None:
        super().__init__(seed)
        rng = random.Random(f"support:world:{seed}")
        self.customers = [f"cus_{rng.getrandbits(24):06x}" for _ in range(self.CUSTOMERS)]  # popularity order
        self.rank = {c: k + 1 for k, c in enumerate(self.customers)}
        self.names = {c: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for c in self.customers}
        self.by_name: dict[str, list[str]] = {}
        for c in self.customers:
            self.by_name.setdefault(self.names[c], []).append(c)
        self.orders: dict[str, list[str]] = {}
        self.owner: dict[str, str] = {}
        serial = 40000
        for c in self.customers:
            self.orders[c] = []
            for _ in range(rng.randint(1, 6)):
                serial += rng.randint(1, 40)
                self.orders[c].append(f"ord_{serial}")
                self.owner[f"ord_{serial}"] = c
        self.articles = [f"KB-{100 + i}" for i in range(self.ARTICLES)]
        self.queries = [f"{rng.choice(_TOPICS)} {rng.choice(('how to', 'policy', 'steps', 'eu', 'us'))}"
                        for _ in range(self.QUERIES)]
        self.kb_hits = {q: rng.sample(self.articles, 4) for q in self.queries}
        self.customer_zipf, self.query_zipf = Zipf(self.CUSTOMERS, 1.1), Zipf(self.QUERIES, 1.0)
        self.versions = Versions(seed, self._rate)

    def describe(self) -> dict[str, Any]:
        return {"customers": self.CUSTOMERS, "articles": self.ARTICLES, "queries": self.QUERIES,
                "customer_change_rate_per_s": "1/10800 * rank^-0.5", "order_change_rate_per_s": "1/3600",
                "shipment_change_rate_per_s": "1/600", "session_gap_s": self.session_gap_s,
                "think_median_s": self.think_median_s}

    # -- the world ---------------------------------------------------------------------------------
    def _rate(self, entity: str) -> float:
        if entity.startswith("cus_"):
            return self.rank[entity] ** -0.5 / 10800.0
        return {"ord_": 1 / 3600.0, "shp_": 1 / 600.0}.get(entity[:4], 0.0)

    def _customer(self, c: str, t: float) -> dict[str, Any]:
        v = self.versions.version(c, t)
        orders = self._orders_of(c, v)
        return {"customer_id": c, "name": self.names[c], "email": f"{self.names[c].split()[0].lower()}.{c[4:]}@mail.test",
                "tier": ("basic", "plus", "gold")[self.rank[c] % 3], "recent_orders": orders[:3], "open_tickets": v % 3}

    def _orders_of(self, c: str, version: int) -> list[str]:
        extra = [f"ord_{9_000_000 + self.rank[c] * 100 + j}" for j in range(1, version + 1)]  # new orders since
        for o in extra:
            self.owner.setdefault(o, c)
        return list(reversed(self.orders[c] + extra))  # newest first

    def _order(self, o: str, t: float) -> dict[str, Any]:
        v = self.versions.version(o, t)
        rng = random.Random(f"order:{self.seed}:{o}")
        return {"order_id": o, "customer_id": self.owner[o], "status": _STATUSES[min(v + rng.randint(0, 2), 4)],
                "items": [{"sku": f"SKU-{rng.randint(1000, 9999)}", "qty": rng.randint(1, 3)}],
                "total": round(rng.uniform(9, 400), 2), "shipment_id": f"shp_{o[4:]}"}

    def execute(self, tool: str, args: dict[str, Any], t: float) -> Any:
        if tool == "search_customers":
            first = self.by_name.get(args["query"], [])
            others = [c for c in self.customers[:60] if self.names[c].split()[1] == args["query"].split()[-1]]
            items = list(dict.fromkeys(first + others))[:3]
            return {"items": [{"customer_id": c, "name": self.names[c]} for c in items]}
        if tool == "get_customer":
            return self._customer(args["customer_id"], t)
        if tool == "list_orders":
            c = args["customer_id"]
            orders = [self._order(o, t) for o in self._orders_of(c, self.versions.version(c, t))]
            if args.get("status") == "open":
                orders = [o for o in orders if o["status"] != "delivered"]
            return {"customer_id": c, "orders": [{k: o[k] for k in ("order_id", "status", "total")} for o in orders[:8]]}
        if tool == "get_order":
            return self._order(args["order_id"], t)
        if tool == "get_shipment":
            s, v = args["shipment_id"], self.versions.version(args["shipment_id"], t)
            events = [f"scan {j} at hub {random.Random(f'hub:{self.seed}:{s}:{j}').randrange(40)}" for j in range(v + 1)]
            return {"shipment_id": s, "carrier": "acme", "events": events[-5:], "delivered": v >= 6}
        if tool == "search_kb":
            lines = [f"{i + 1}. {a} {self.queries[hash_of(a) % len(self.queries)]}" for i, a in
                     enumerate(self.kb_hits[args["query"]])]
            return f"Found {len(lines)} articles for '{args['query']}':\n" + "\n".join(lines)
        if tool == "get_article":
            rng = random.Random(f"kb:{self.seed}:{args['article_id']}")
            related = rng.sample(self.articles, 2)
            return (f"{args['article_id']}: {rng.choice(_TOPICS)}\nSteps: check the order, then reply.\n"
                    f"Related: {related[0]}, {related[1]}")
        if tool in ("refund_order",):
            self.versions.bump(args["order_id"], t)
            self.versions.bump(self.owner[args["order_id"]], t)
            return {"ok": True, "order_id": args["order_id"]}
        if tool in ("send_message", "create_ticket", "update_address"):
            self.versions.bump(args["customer_id"], t)
            return {"ok": True, "customer_id": args["customer_id"]}
        raise ValueError(f"support: unknown tool {tool!r}")

    # -- the agent ---------------------------------------------------------------------------------
    def _kb(self, weight: float, rng: random.Random) -> list[Step]:
        return [Step("search_kb", {"query": self.queries[self.query_zipf.sample(rng) - 1]}, {"query": "fresh"}, weight)]

    def _customer_actions(self, c: str | None, rng: random.Random, message: float, ticket: float = 0.0,
                          orders: float = 0.0) -> list[Step]:
        if not c:
            return []
        out = [Step("send_message", {"customer_id": c, "template": rng.choice(_TEMPLATES)},
                    {"customer_id": "earlier_arg", "template": "constant"}, message)]
        if ticket:
            out.append(Step("create_ticket", {"customer_id": c, "subject": f"case {rng.randrange(10**6)}"},
                            {"customer_id": "earlier_arg", "subject": "fresh"}, ticket))
        if orders:
            out.append(Step("list_orders", {"customer_id": c, "status": "any"},
                            {"customer_id": "earlier_arg", "status": "constant"}, orders))
        return out

    def _next_order(self, state: dict[str, Any], weight: float) -> list[Step]:
        left = [o for o in state.get("orders", []) if o not in state.get("opened", ())]
        return [Step("get_order", {"order_id": left[0]}, {"order_id": "result"}, weight)] if left else []

    def steps(self, state: dict[str, Any], rng: random.Random) -> list[Step]:
        last, data, c = state.get("last"), state.get("data"), state.get("customer")
        if last is None:
            target = self.customers[self.customer_zipf.sample(rng) - 1]
            return [Step("search_customers", {"query": self.names[target]}, {"query": "fresh"}, 0.55),
                    Step("get_customer", {"customer_id": target}, {"customer_id": "fresh"}, 0.25), *self._kb(0.20, rng)]
        if last == "search_customers":
            other = self.names[self.customers[self.customer_zipf.sample(rng) - 1]]
            out = [Step("get_customer", {"customer_id": i["customer_id"]}, {"customer_id": "result"}, 0.82 * w)
                   for i, w in ranked(data["items"], (0.75, 0.15, 0.10))]
            return [*out, Step("search_customers", {"query": other}, {"query": "fresh"}, 0.08), Step(None, weight=0.10)]
        if last == "get_customer":
            cid = data["customer_id"]
            out = [Step("list_orders", {"customer_id": cid, "status": s}, {"customer_id": "earlier_arg", "status": "constant"},
                        0.45 * w) for s, w in (("any", 0.8), ("open", 0.2))]
            out += [Step("get_order", {"order_id": o}, {"order_id": "result"}, 0.20 * w)
                    for o, w in ranked(data["recent_orders"], (0.7, 0.3))]
            out += [*self._kb(0.08, rng), *self._customer_actions(cid, rng, 0.05, 0.05),
                    Step("update_address", {"customer_id": cid, "address": f"{rng.randrange(1, 999)} Main St"},
                         {"customer_id": "earlier_arg", "address": "fresh"}, 0.02)]
            return [*out, Step(None, weight=0.15)]
        if last == "list_orders":
            cid, status = data["customer_id"], state["status"]
            out = [Step("get_order", {"order_id": o["order_id"]}, {"order_id": "result"}, 0.65 * w)
                   for o, w in ranked(data["orders"], (0.55, 0.25, 0.12, 0.08))]
            out += [Step("list_orders", {"customer_id": cid, "status": "open" if status == "any" else "any"},
                         {"customer_id": "earlier_arg", "status": "constant"}, 0.05),
                    Step("get_customer", {"customer_id": cid}, {"customer_id": "earlier_arg"}, 0.05), *self._kb(0.07, rng)]
            return [*out, Step(None, weight=0.18)]
        if last == "get_order":
            o = data["order_id"]
            out = [Step("get_shipment", {"shipment_id": data["shipment_id"]}, {"shipment_id": "result"}, 0.45),
                   Step("refund_order", {"order_id": o, "reason": rng.choice(("damaged", "late", "not_received"))},
                        {"order_id": "earlier_arg", "reason": "constant"}, 0.08),
                   *self._next_order(state, 0.12), *self._customer_actions(c, rng, 0.06), *self._kb(0.07, rng),
                   Step("get_customer", {"customer_id": data["customer_id"]}, {"customer_id": "result"}, 0.05)]
            return [*out, Step(None, weight=0.17)]
        if last == "get_shipment":
            out = [Step("get_shipment", {"shipment_id": data["shipment_id"]}, {"shipment_id": "earlier_arg"}, 0.12),
                   *self._customer_actions(c, rng, 0.15, 0.05), *self._next_order(state, 0.12), *self._kb(0.08, rng)]
            return [*out, Step(None, weight=0.48)]
        if last == "search_kb":
            ids = [w for w in data.split() if w.startswith("KB-")]
            out = [Step("get_article", {"article_id": a}, {"article_id": "result"}, 0.72 * w)
                   for a, w in ranked(ids, (0.6, 0.25, 0.15))]
            return [*out, *self._kb(0.10, rng), Step(None, weight=0.18)]
        if last == "get_article":
            related = [w.rstrip(",") for w in data.splitlines()[-1].split()[1:]]
            out = [Step("get_article", {"article_id": a}, {"article_id": "result"}, 0.20 * w)
                   for a, w in ranked(related, (0.7, 0.3))]
            out += [*self._customer_actions(c, rng, 0.20, orders=0.15), *self._kb(0.10, rng)]
            return [*out, Step(None, weight=0.35)]
        # after a write
        out = [Step("get_order", {"order_id": state["order"]}, {"order_id": "earlier_arg"}, 0.25)] if state.get("order") else []
        if c:
            out += [Step("get_customer", {"customer_id": c}, {"customer_id": "earlier_arg"}, 0.20),
                    Step("list_orders", {"customer_id": c, "status": "any"}, {"customer_id": "earlier_arg", "status": "constant"},
                         0.10)]
        return [*out, Step(None, weight=0.45)]

    def remember(self, state: dict[str, Any], step: Step, data: Any) -> None:
        state["last"], state["data"] = step.tool, data
        tool = step.tool
        if tool == "get_customer":
            state["customer"] = data["customer_id"]
        elif tool == "list_orders":
            state["customer"], state["status"] = data["customer_id"], step.args["status"]
            state["orders"], state["opened"] = [o["order_id"] for o in data["orders"]], []
        elif tool == "get_order":
            state["order"], state["customer"] = data["order_id"], data["customer_id"]
            state.setdefault("opened", []).append(data["order_id"])


def hash_of(text: str) -> int:
    """A stable small hash (Python's ``hash`` of a str changes per process)."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(text))
