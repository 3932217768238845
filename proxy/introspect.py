"""What the admin API shows: upstreams with health and breaker state, cache statistics,
routing decisions by request id, the running configuration; and reload on demand."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

__all__ = ["AdminViews"]


class AdminViews:
    """Mixed into the Gateway, which provides pools, calls, catalog, settings and watcher."""

    pools: dict[str, Any]
    calls: Any
    catalog: Any
    settings: Any
    watcher: Any

    def admin_upstreams(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        servers = {}
        for name, pool in self.pools.items():
            health = pool.health.snapshot(now)
            replicas = []
            for replica in pool.replicas:
                replicas.append({
                    "id": replica.id, "target": replica.settings.label, "state": replica.state,
                    "error": replica.last_error, "restarts": replica.restarts,
                    "protocol": (replica.session.init_result.get("protocolVersion") if replica.session else None),
                    "stats": replica.stats.snapshot(now),
                    "health": health.get("replicas", {}).get(replica.id, health.get(replica.id)),
                })
            servers[name] = {"namespace": pool.settings.namespace, "policy": pool.policy.name,
                             "retry_budget": {"retries": pool.budget.retries, "refused": pool.budget.refused},
                             "panic": health.get("panic"), "replicas": replicas}
        return {"servers": servers, "conflicts": list(self.catalog.conflicts)}

    def admin_cache(self) -> dict[str, Any]:
        cache = self.calls.cache
        if cache is None:
            return {"enabled": False}
        return {"enabled": True, "policy": self.settings.cache.policy, "max_bytes": self.settings.cache.max_bytes,
                **cache.stats()}

    def admin_decision(self, request_id: str) -> dict[str, Any] | None:
        calls = self.calls.decisions.get(request_id)
        return {"request_id": request_id, "calls": calls} if calls else None

    def admin_config(self) -> dict[str, Any]:
        config = dataclasses.asdict(self.settings)
        config["auth"] = {"tokens": f"{len(self.settings.auth.tokens)} configured",
                          "admin_token": "set" if self.settings.auth.admin_token else "not set"}
        return config

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
