"""Hot reload: apply a new configuration to a running gateway without dropping calls in flight.

Servers that are new or changed get fresh pools, started and given time to connect
before they replace anything, so a changed server has no gap. Pools that are
removed or replaced leave the routing tables at once but are closed only after
their calls in flight have finished (or the call timeout has passed).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from only1mcp.proxy.auth import exposure_refusal
from only1mcp.settings import Settings

if TYPE_CHECKING:
    from only1mcp.proxy.gateway import Gateway
    from only1mcp.proxy.pool import ServerPool

__all__ = ["apply"]

log = logging.getLogger("only1mcp.reload")

_NOTIFY = {"tools": "notifications/tools/list_changed", "prompts": "notifications/prompts/list_changed",
           "resourceTemplates": "notifications/resources/list_changed"}
_LISTED_KINDS = ["tools", "prompts", "resourceTemplates", "resources"]


async def apply(gateway: Gateway, new: Settings) -> dict[str, Any]:
    old = gateway.settings
    before = {s.name: s for s in old.servers}
    after = {s.name: s for s in new.servers}
    added = [name for name in after if name not in before]
    removed = [name for name in before if name not in after]
    changed = [name for name in after if name in before and before[name] != after[name]]
    if old.proxy.listen != new.proxy.listen:
        log.warning("reload: proxy.listen changed to %s; it takes effect only at restart", new.proxy.listen)
    if old.decisions != new.decisions:
        log.warning("reload: [decisions] changed; the subscription changes only at restart")
    if old.prefetch.enabled != new.prefetch.enabled:
        log.warning("reload: [prefetch] enabled changed; it takes effect only at restart")

    fresh = {name: gateway.make_pool(after[name]) for name in added + changed}
    for pool in fresh.values():
        pool.start()
    replicas = [r for pool in fresh.values() for r in pool.replicas]
    if replicas:
        await asyncio.gather(*(r.wait_ready(new.proxy.connect_timeout) for r in replicas))

    retired = [gateway.pools[name] for name in removed + changed]
    gateway.settings = new
    gateway.sessions.configure(new.proxy.session_idle_timeout, new.proxy.max_sessions, new.proxy.max_sessions_per_client)
    if gateway.prefetch is not None:  # its budget and memory bounds follow the file
        gateway.prefetch.configure()
    gateway.pools = {s.name: fresh.get(s.name) or gateway.pools[s.name] for s in new.servers}
    for name in removed:
        gateway.forget_server(name)
        gateway.overrides.pop(name, None)  # its runtime overrides go with it
        gateway.remediations.switches.pop(name, None)  # and its runtime auto-remediation switch
    for name in removed + changed:
        gateway.calls.invalidate(name)
    kinds = gateway.catalog.reconfigure([(s.name, s.namespace) for s in new.servers])
    for name in fresh:
        replica = gateway.pools[name].any_ready()
        if replica is not None:
            gateway.ready(replica)  # capabilities, then the catalog refresh, as on a first connect
    await gateway.settle()
    for kind in kinds:
        gateway.broadcast({"jsonrpc": "2.0", "method": _NOTIFY[kind]})
    for pool in retired:
        gateway.spawn(_drain(pool, new.proxy.call_timeout))
    summary = {"added": added, "removed": removed, "changed": changed}
    log.info("reload applied: %s", summary)
    return summary


async def _drain(pool: ServerPool, timeout: float) -> None:
    """Close a retired pool once its calls in flight are done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(r.inflight for r in pool.replicas) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await pool.close()


class Watcher:
    """Reloads when the configuration file changes or the process gets SIGHUP.

    ``load`` comes from the CLI (only it reads files and the environment) and returns new
    Settings or raises; a bad file is logged and the running configuration kept.
    """

    def __init__(self, gateway: Gateway, path: str, load: Any, interval: float = 1.0) -> None:
        self.gateway, self.path, self.load, self.interval = gateway, path, load, interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.reloads = 0
        self.last_error = ""

    def start(self) -> None:
        import signal

        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._poll())
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: self.gateway.spawn(self.reload("SIGHUP")))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _mtime(self) -> float:
        import os

        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return 0.0

    async def _poll(self) -> None:
        seen = self._mtime()
        while True:
            await asyncio.sleep(self.interval)
            current = self._mtime()
            if current != seen:
                seen = current
                await self.reload("file changed")

    async def reload(self, why: str) -> dict[str, Any]:
        async with self._lock:
            try:
                settings = self.load()
                refusal = exposure_refusal(settings)
                if refusal:  # same rule as at start-up: no open proxy on a public address
                    raise ValueError(refusal)
            except Exception as exc:  # a ConfigError names file, key and reason
                self.last_error = str(exc)
                log.error("reload (%s) refused, keeping the running configuration: %s", why, exc)
                return {"error": self.last_error}
            summary = await apply(self.gateway, settings)
            self.reloads += 1
            self.last_error = ""
            return summary
