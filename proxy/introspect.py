"""What the admin API shows: upstreams with health and breaker state, cache statistics,
routing decisions by JSON-RPC id, explanations by request id, operator overrides, the
running configuration; and reload on demand."""

from __future__ import annotations

import asyncio
from typing import Any

from only1mcp.proxy.calls import thawed
from only1mcp.proxy.redact import redact_url, redacted_settings

__all__ = ["AdminViews"]


def _target(replica: Any) -> str:
    """What an upstream replica is, without a password or query its URL may carry."""
    return redact_url(replica.url) if replica.url else replica.label


class AdminViews:
    """Mixed into the Gateway, which provides pools, calls, catalog, settings and watcher."""

    pools: dict[str, Any]
    calls: Any
    catalog: Any
    settings: Any
    watcher: Any
    overrides: dict[str, dict[str, Any]]
    subscriber: Any
    remediations: Any

    def admin_upstreams(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        servers = {}
        for name, pool in self.pools.items():
            health = pool.health.snapshot(now)
            remediation = pool.remediation
            if remediation is not None:
                remediation.expire(now)  # a lapsed hold shows as ended even when no call came since
            replicas = []
            for replica in pool.replicas:
                replicas.append({
                    "id": replica.id, "target": _target(replica.settings), "state": replica.state,
                    "error": replica.last_error, "restarts": replica.restarts,
                    "protocol": (replica.session.init_result.get("protocolVersion") if replica.session else None),
                    "stats": replica.stats.snapshot(now),
                    "health": health.get("replicas", {}).get(replica.id, health.get(replica.id)),
                    "remediation": remediation.replica_view(replica.id, replica.inflight) if remediation else None,
                })
            servers[name] = {"namespace": pool.settings.namespace, "policy": pool.policy.name,
                             "retry_budget": {"retries": pool.budget.retries, "refused": pool.budget.refused},
                             "panic": health.get("panic"), "replicas": replicas,
                             "learned": self._learned_view(pool, now), "overrides": self._override_rows(name),
                             "auto_remediation": remediation.auto if remediation is not None else None}
        subscriber = getattr(self, "subscriber", None)
        return {"servers": servers, "conflicts": list(self.catalog.conflicts),
                "decisions": subscriber.status() if subscriber is not None else None}

    @staticmethod
    def _learned_view(pool: Any, now: float) -> dict[str, Any] | None:
        """The learned table (or the weighted policy's weights) in force, with their freshness."""
        policy = getattr(pool.policy, "inner", pool.policy)
        if policy.name == "learned":
            return policy.snapshot(now)  # type: ignore[no-any-return]
        if policy.name == "weighted":
            snap = policy.snapshot()
            if snap.get("valid_until") is not None:
                snap["valid_for_s"] = round(snap["valid_until"] - now, 3)
            return snap  # type: ignore[no-any-return]
        return None

    # -- explanations ------------------------------------------------------------------
    def admin_explain(self, request_id: str) -> dict[str, Any] | None:
        """How the call with this request id (the ``Only1MCP-Request-Id`` header, the event's
        ``event_id``) was routed: the candidates with their weights, probabilities and predicted
        latency, the choice, the model or the fallback and why, overrides, each attempt."""
        found = self.calls.explanations.get(request_id)
        if found is None:
            return None
        server, tool, method, policy, stored, cache_hit = found
        attempts = thawed(stored)
        first = attempts[0] if attempts else {}
        detail = first.get("detail") or {}
        inflight = first.get("inflight") or {}
        candidates = detail.get("candidates") or [
            {"replica": rid, "weight": None, "probability": None, "predicted_ms": None, "inflight": inflight.get(rid)}
            for rid in first.get("candidates", [])]
        return {"request_id": request_id, "server": server, "tool": tool, "method": method,
                "policy": first.get("policy", policy), "candidates": candidates, "chosen": first.get("replica"),
                "scope": detail.get("scope"), "model_version": detail.get("model_version"),
                "source": detail.get("source"), "fallback_reason": detail.get("fallback_reason"),
                "overrides": detail.get("overrides"), "remediation": detail.get("remediation"),
                "attempts": [{"replica": a["replica"], "policy": a["policy"], "reason": a["reason"],
                              "inflight": (a.get("inflight") or {}).get(a["replica"])} for a in attempts],
                "cache_hit": cache_hit}

    # -- overrides ---------------------------------------------------------------------
    def _override_rows(self, server: str) -> list[dict[str, Any]]:
        pool = self.pools.get(server)
        if pool is None:
            return []
        runtime = self.overrides.get(server, {})
        rows = []
        for tool, override in sorted(pool.file_overrides.items()):
            rows.append({"server": server, "tool": tool, "pin": list(override.pin), "ban": list(override.ban),
                         "origin": "config", "active": tool not in runtime})
        for tool, override in sorted(runtime.items()):
            rows.append({"server": server, "tool": tool, "pin": list(override.pin), "ban": list(override.ban),
                         "origin": "runtime", "active": True})
        return rows

    def admin_overrides(self) -> dict[str, Any]:
        """Every pin and ban in force or configured: the file's, and the runtime ones that beat them."""
        return {"overrides": [row for name in self.pools for row in self._override_rows(name)]}

    def admin_set_override(self, body: Any) -> dict[str, Any]:
        """``{"server": S, "tool": T, "pin": [replica id…], "ban": [replica id…]}``; ``tool`` is the
        exposed or the upstream name. Both lists empty clears the runtime override (the file's, if
        any, applies again). Raises ValueError (answered 400) for anything unknown."""
        from only1mcp.proxy.pool import Override

        if not isinstance(body, dict):
            raise ValueError('expected {"server": …, "tool": …, "pin": [replica id…], "ban": [replica id…]}')
        unknown_keys = set(body) - {"server", "tool", "pin", "ban"}
        if unknown_keys:
            raise ValueError(f"unknown keys {', '.join(sorted(unknown_keys))}; expected server, tool, pin, ban")
        server, tool = body.get("server"), body.get("tool")
        if not isinstance(server, str) or server not in self.pools:
            raise ValueError(f"unknown server {server!r} (known: {', '.join(self.pools) or 'none'})")
        if not isinstance(tool, str) or not tool:
            raise ValueError("tool must be the tool's exposed or upstream name")
        pool = self.pools[server]
        entry = self.catalog.lookup("tools", tool)
        if entry is not None and entry.server == server:
            upstream = entry.upstream_name
        elif any(e.server == server and e.upstream_name == tool for e in self.catalog.index["tools"].values()):
            upstream = tool
        else:
            raise ValueError(f"unknown tool {tool!r} of server {server!r}")
        known = [r.id for r in pool.replicas]
        lists = {}
        for key in ("pin", "ban"):
            value = body.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of replica ids")
            strangers = [v for v in value if v not in known]
            if strangers:
                raise ValueError(f"unknown replica ids {', '.join(strangers)} in {key} "
                                 f"(replicas of {server}: {', '.join(known)})")
            lists[key] = tuple(dict.fromkeys(value))
        runtime = self.overrides.setdefault(server, {})
        pool.runtime_overrides = runtime
        if lists["pin"] or lists["ban"]:
            runtime[upstream] = Override(lists["pin"], lists["ban"], "runtime")
            cleared = False
        else:
            cleared = runtime.pop(upstream, None) is not None
        return {"server": server, "tool": upstream, "pin": list(lists["pin"]), "ban": list(lists["ban"]),
                "cleared": cleared, "overrides": self._override_rows(server)}

    # -- remediation (proxy/remediation.py) --------------------------------------------------
    def admin_remediation(self) -> dict[str, Any]:
        """Per server: auto on or off (and whether an operator set it), the holds in force, the newest
        alerts; the counts by outcome; the webhooks' state."""
        return self.remediations.view()  # type: ignore[no-any-return]

    def admin_set_remediation(self, body: Any) -> dict[str, Any]:
        """``{"server": S, "auto": false}`` switches auto-remediation of S off (lifting its holds) until
        switched on again; no restart. Raises ValueError (answered 400) for anything else."""
        return self.remediations.set_auto(body)  # type: ignore[no-any-return]

    def admin_cache(self) -> dict[str, Any]:
        cache = self.calls.cache
        if cache is None:
            return {"enabled": False}
        settings = self.settings.cache
        # The learned TTLs of tools whose entries have expired at least once; any other cached tool
        # uses its configured cache_ttl (or default_ttl), as /admin/config shows.
        adaptive = {"enabled": settings.adaptive_ttl, "min_ttl": settings.min_ttl, "max_ttl": settings.max_ttl,
                    "ttls": self.calls.adaptive.snapshot()}
        return {"enabled": True, "policy": settings.policy, "max_bytes": settings.max_bytes, **cache.stats(),
                "adaptive_ttl": adaptive}

    def admin_decision(self, request_id: str) -> dict[str, Any] | None:
        calls = self.calls.decisions.get(request_id)
        if not calls:
            return None
        return {"request_id": request_id, "calls": [{"tool": tool, "server": server, "method": method,
                                                     "attempts": thawed(attempts)}
                                                    for tool, server, method, attempts in calls]}

    def admin_config(self) -> dict[str, Any]:
        return redacted_settings(self.settings)

    def admin_set_weights(self, server: str, body: Any) -> dict[str, Any]:
        """Weights for a server whose policy is ``weighted``: ``{"weights": {replica id: w},
        "valid_until": unix seconds, "model_version": "…"}`` (the learning loop's hook)."""
        import time

        pool = self.pools.get(server)
        if pool is None:
            raise KeyError(f"no server {server!r}")
        policy = getattr(pool.policy, "inner", pool.policy)  # under a Sticky wrapper
        if not hasattr(policy, "set_weights"):
            raise ValueError(f"server {server!r} routes with {pool.policy.name}, not weighted")
        if not isinstance(body, dict) or not isinstance(body.get("weights"), dict):
            raise ValueError("expected {\"weights\": {replica id: weight}, \"valid_until\": …, \"model_version\": …}")
        valid_until = float(body.get("valid_until", time.time() + 60))
        loop_now = asyncio.get_running_loop().time()
        policy.set_weights({str(k): float(v) for k, v in body["weights"].items()},
                           loop_now + (valid_until - time.time()), str(body.get("model_version", "")))
        return {"server": server, "accepted": sorted(body["weights"]), "valid_for_s": round(valid_until - time.time(), 3)}

    async def reload(self) -> dict[str, Any]:
        if self.watcher is None:
            return {"error": "this proxy was not started from a configuration file"}
        return await self.watcher.reload("admin request")
