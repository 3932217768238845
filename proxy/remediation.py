"""Remediation decisions from the learning loop (``mcp.remediation``), applied to routing.

Per server, which replicas are held out and until when: ``eject`` (no new calls) and ``drain``
(no new calls; those in flight finish, their count is shown) hold until ``valid_until`` (the worker
re-publishes while its anomaly stays open); ``restore`` ends a hold at once; ``alert`` only records.

Held replicas leave routing through the door outlier ejection uses: ``ServerHealth.candidates``
skips the ids in its ``held_out`` frozenset (swapped whole on each change), so every policy, sticky,
weighted and learned included, sees them gone without knowing remediation exists. Expiry costs the
call path one clock comparison against the earliest deadline.

Refused (``rejected_limit``): a hold that would take out more than ``max_out_share`` of the server's
replicas, counting those already out for health (down, failing checks, breaker open, ejected), or the
last routable one. With ``auto`` off (the file, or ``POST /admin/remediation``) nothing changes in
routing: each decision is kept as an alert (``alert_only``). A new eject within ``min_out_s`` of the
replica's return is honoured (the worker has its own hysteresis) but counted as a flap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from only1mcp.events import Remediation
from only1mcp.proxy.redact import redact_url
from only1mcp.proxy.webhook import Webhook

__all__ = ["Hold", "Remediations", "ServerRemediation", "OUTCOMES", "HOLDING"]

log = logging.getLogger("only1mcp.remediation")

HOLDING = ("eject", "drain")
OUTCOMES = ("applied", "alert_only", "rejected_unknown", "rejected_stale", "rejected_limit", "expired", "lifted")


@dataclass(slots=True)
class Hold:
    """One replica held out of routing, by which decision, since (unix) and until (pool clock)."""

    action: str
    severity: str
    confidence: float
    anomaly_id: str
    reason: str
    decision_id: str
    model_version: str
    since: float  # unix seconds
    until: float  # the pool's clock (loop.time())
    until_unix: float

    def row(self, inflight: int) -> dict[str, Any]:
        out = asdict(self)
        del out["until"]
        out["until"] = out.pop("until_unix")
        out["inflight"] = inflight
        return out


class ServerRemediation:
    """The holds of one server's replicas; attached to its pool (and its ``ServerHealth``)."""

    def __init__(self, book: Remediations, pool: Any) -> None:
        self.book, self.pool, self.server = book, pool, pool.name
        self.settings = pool.settings.remediation
        share = self.settings.max_out_share
        self.max_out_share = share if share is not None else pool.settings.outlier.max_ejected_share
        self.holds: dict[str, Hold] = {}
        self.alerts: dict[str, dict[str, Any]] = {}  # the newest alert (or alert-only decision) per replica
        self.returned_at: dict[str, float] = {}  # pool clock: when a hold last ended, for flap counting
        pool.health.on_held_expiry = self.expire

    @property
    def auto(self) -> bool:
        return self.book.switches.get(self.server, self.settings.auto)

    # -- applying ------------------------------------------------------------------------------
    def apply(self, rec: Remediation, now: float, now_unix: float) -> tuple[str, str, bool]:
        """(outcome, why, changed): ``changed`` is False for a refresh of a hold already in force."""
        rid, action = rec.replica, rec.action
        if action == "alert" or not self.auto:
            previous = self.alerts.get(rid)
            outcome = "applied" if action == "alert" else "alert_only"
            self.alerts[rid] = {"action": action, "outcome": outcome, "severity": rec.severity,
                                "confidence": rec.confidence, "anomaly_id": rec.anomaly_id, "reason": rec.reason,
                                "decision_id": rec.decision_id, "at": rec.ts}
            changed = previous is None or (previous["action"], previous["anomaly_id"]) != (action, rec.anomaly_id)
            return outcome, "", changed
        if action == "restore":
            hold = self.holds.pop(rid, None)
            if hold is None:
                return "applied", "", False  # nothing held: the worker's restore is idempotent
            self.returned_at[rid] = now
            self._publish()
            return "applied", "", True
        hold = self.holds.get(rid)
        until = now + (rec.valid_until - now_unix)  # onto the pool's clock
        if hold is None:
            refusal = self._refusal(rid, action, now)
            if refusal:
                return "rejected_limit", refusal, False
            returned = self.returned_at.get(rid)
            if returned is not None and now - returned < self.settings.min_out_s:
                self.book.flaps[self.server] = self.book.flaps.get(self.server, 0) + 1
            since, changed = now_unix, True
        else:
            since = hold.since
            changed = (hold.action, hold.anomaly_id) != (action, rec.anomaly_id)
        self.holds[rid] = Hold(action, rec.severity, rec.confidence, rec.anomaly_id, rec.reason, rec.decision_id,
                               rec.model_version, since, until, rec.valid_until)
        self._publish()
        return "applied", "", changed

    def _refusal(self, rid: str, action: str, now: float) -> str:
        """Why holding ``rid`` out now is refused, or ""."""
        pool = self.pool
        out = {r.id: ("down" if not r.ready else self.holds[r.id].action if r.id in self.holds else "unhealthy")
               for r in pool.replicas
               if not r.ready or r.id in self.holds or not pool.health.replica(r.id).routable(now)}
        total = len(pool.replicas)
        cap = math.floor(self.max_out_share * total + 1e-9)  # floor, as the outlier detector's cap
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(out.items())) or "none"
        if len(out | {rid: action}) > cap:
            return (f"{action} of {rid} refused: it would take {len(out | {rid: action})} of {total} replicas of "
                    f"{self.server} out, max_out_share {self.max_out_share:g} allows {cap} (out now: {listed})")
        if all(r.id == rid or r.id in out for r in pool.replicas):
            return f"{action} of {rid} refused: it would leave {self.server} no routable replica (out now: {listed})"
        return ""

    def expire(self, now: float) -> None:
        """Holds past their ``valid_until`` end (called from ``ServerHealth.candidates`` and the views)."""
        gone = [rid for rid, hold in self.holds.items() if now >= hold.until]
        for rid in gone:
            hold = self.holds.pop(rid)
            self.returned_at[rid] = now
            self.book.count(self.server, hold.action, "expired")
            log.info("remediation: %s of %s lapsed at valid_until (anomaly %s); %s routable again", hold.action,
                     rid, hold.anomaly_id or "-", rid)
        self._publish()

    def lift_all(self, why: str) -> int:
        """End every hold at once (auto switched off); returns how many."""
        now = asyncio.get_running_loop().time()
        for rid, hold in self.holds.items():
            self.returned_at[rid] = now
            self.book.count(self.server, hold.action, "lifted")
            log.info("remediation: %s of %s lifted: %s", hold.action, rid, why)
        lifted = len(self.holds)
        self.holds.clear()
        self._publish()
        return lifted

    def _publish(self) -> None:
        # One swap of each: the call path reads them without locks or copies.
        health = self.pool.health
        health.held_out = frozenset(self.holds)
        health.held_until = min((h.until for h in self.holds.values()), default=math.inf)

    # -- what the call path, the admin API and /metrics show ----------------------------------------
    def note(self, skipped: list[str]) -> tuple[str, dict[str, Any]]:
        """The explanation's words for replicas a call skipped because of remediation."""
        parts = [f"{rid} ({h.action}, anomaly {h.anomaly_id or '-'}, {h.severity})"
                 for rid in skipped if (h := self.holds.get(rid)) is not None]
        text = f"remediation: skipped {', '.join(parts)}"
        return text, {"skipped": skipped, "effect": text}

    def replica_view(self, rid: str, inflight: int) -> dict[str, Any] | None:
        hold = self.holds.get(rid)
        return hold.row(inflight) if hold is not None else None

    def view(self, now: float) -> dict[str, Any]:
        self.expire(now)
        inflight = {r.id: r.inflight for r in self.pool.replicas}
        return {"auto": self.auto, "auto_origin": "runtime" if self.server in self.book.switches else "config",
                "max_out_share": self.max_out_share, "min_out_s": self.settings.min_out_s,
                "webhook": redact_url(self.settings.webhook, keep_path=False) or None, "flaps": self.book.flaps.get(self.server, 0),
                "held": {rid: h.row(inflight.get(rid, 0)) for rid, h in self.holds.items()},
                "alerts": dict(self.alerts)}


class Remediations:
    """Gateway-wide: runtime auto switches, counts and webhooks, which outlive a reload of a server."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.switches: dict[str, bool] = {}  # server → auto, set by POST /admin/remediation
        self.counts: dict[tuple[str, str, str], int] = {}  # (server, action, outcome) → records
        self.flaps: dict[str, int] = {}
        self.webhooks: dict[str, Webhook] = {}

    def attach(self, pool: Any) -> ServerRemediation:
        """The remediation state of a new pool; a pool replacing one (a reload) keeps its holds and
        alerts for the replicas it still has, unless auto-remediation is now off."""
        state = ServerRemediation(self, pool)
        old = getattr(self.gateway, "pools", {}).get(pool.name)
        if old is not None and old.remediation is not None and state.auto:
            ids = {r.id for r in pool.replicas}
            state.holds = {rid: h for rid, h in old.remediation.holds.items() if rid in ids}
            state.alerts = {rid: a for rid, a in old.remediation.alerts.items() if rid in ids}
            state.returned_at = dict(old.remediation.returned_at)
            state._publish()
        return state

    def count(self, server: str, action: str, outcome: str) -> None:
        key = (server, action, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def apply(self, rec: Remediation) -> tuple[str, str]:
        """Check and apply one decoded record: (outcome, why it was refused)."""
        pool = self.gateway.pools.get(rec.server)
        if pool is None:
            return "rejected_unknown", f"remediation {rec.action} for unknown server {rec.server!r}"
        known = [r.id for r in pool.replicas]
        if rec.replica not in known:
            self.count(rec.server, rec.action, "rejected_unknown")
            return "rejected_unknown", (f"remediation {rec.action} for {rec.server} names unknown replica "
                                        f"{rec.replica!r} (known: {', '.join(known)})")
        now_unix = time.time()
        if not rec.valid_until > now_unix:
            outcome, why = "rejected_stale", (f"remediation {rec.action} of {rec.replica} stale: valid_until "
                                              f"passed {now_unix - rec.valid_until:.1f}s ago")
            self.count(rec.server, rec.action, outcome)
            return outcome, why
        state: ServerRemediation = pool.remediation
        outcome, why, changed = state.apply(rec, asyncio.get_running_loop().time(), now_unix)
        self.count(rec.server, rec.action, outcome)
        if changed and outcome in ("applied", "alert_only"):
            inflight = next(r.inflight for r in pool.replicas if r.id == rec.replica)
            log.info("remediation: %s %s of %s (%s, severity %s, confidence %.2f, anomaly %s, valid %.1fs, "
                     "%d in flight): %s", outcome, rec.action, rec.replica, rec.server, rec.severity,
                     rec.confidence, rec.anomaly_id or "-", rec.valid_until - now_unix, inflight, rec.reason or "-")
            self._notify(state, rec, outcome)
        return outcome, why

    def _notify(self, state: ServerRemediation, rec: Remediation, outcome: str) -> None:
        url = state.settings.webhook
        if not url:
            return
        hook = self.webhooks.get(url)
        if hook is None:
            hook = self.webhooks[url] = Webhook(url, state.settings.webhook_timeout)
        hook.send({**asdict(rec), "outcome": outcome})

    def webhook_failures(self) -> int:
        return sum(hook.failures for hook in self.webhooks.values())

    def remediated(self) -> dict[tuple[str, str], int]:
        """(server, action) → replicas held out now, for the gauge."""
        try:
            now: float | None = asyncio.get_running_loop().time()
        except RuntimeError:  # scraped off the loop (a test rendering directly): show the state as it is
            now = None
        out = {}
        for name, pool in self.gateway.pools.items():
            state = pool.remediation
            if now is not None:
                state.expire(now)  # a lapsed hold must not linger in the gauge while no call comes
            for action in HOLDING:
                out[(name, action)] = sum(h.action == action for h in state.holds.values())
        return out

    # -- the admin API ----------------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        return {"servers": {name: pool.remediation.view(now) for name, pool in self.gateway.pools.items()},
                "counts": [{"server": s, "action": a, "outcome": o, "count": n}
                           for (s, a, o), n in sorted(self.counts.items())],
                "webhooks": [hook.status() for hook in self.webhooks.values()]}

    def set_auto(self, body: Any) -> dict[str, Any]:
        """``{"server": S, "auto": true|false}``; switching off lifts the holds in force at once."""
        if not isinstance(body, dict) or set(body) != {"server", "auto"}:
            raise ValueError('expected {"server": "<name>", "auto": true|false}')
        server, auto = body["server"], body["auto"]
        pool = self.gateway.pools.get(server) if isinstance(server, str) else None
        if pool is None:
            raise ValueError(f"unknown server {server!r} (known: {', '.join(self.gateway.pools) or 'none'})")
        if not isinstance(auto, bool):
            raise ValueError(f"auto must be true or false, got {auto!r}")
        self.switches[server] = auto
        lifted = 0 if auto else pool.remediation.lift_all("auto-remediation switched off by an operator")
        log.warning("remediation: auto-remediation of %s switched %s by an operator%s", server,
                    "on" if auto else "off", f" ({lifted} holds lifted)" if lifted else "")
        return {"server": server, "auto": auto, "lifted": lifted}

    async def close(self) -> None:
        for hook in self.webhooks.values():
            await hook.close()
