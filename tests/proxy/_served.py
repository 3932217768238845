"""The proxy app under uvicorn on a thread of the test process, its request events kept in memory: for
tests that need the gateway's objects at hand while real HTTP clients talk to it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn

from only1mcp.commands.proxy import server_config
from only1mcp.proxy.app import build_app
from only1mcp.proxy.events import MemorySink
from only1mcp.proxy.gateway import Gateway
from only1mcp.settings import load_settings


class Served:
    """``with Served(path) as served:`` serves the configuration at ``path``; requests come from the test's
    thread. Subclasses pick the gateway class (``gateway_cls``) and prepare it before the app is built
    (``prepare``)."""

    gateway_cls: type[Gateway] = Gateway

    def __init__(self, path: Path, *, reloadable: bool = False) -> None:
        self.settings = load_settings(path, {})
        self.gateway = self.gateway_cls(self.settings)
        # Events on, into memory: the same RequestEvents a Kafka sink would send.
        self.sink = self.gateway.events = self.gateway.telemetry.sink = MemorySink()
        self.gateway.telemetry.enabled = True
        self.prepare()
        reload_from = (lambda: load_settings(path, {})) if reloadable else None
        self.app = build_app(self.settings, self.gateway, reload_from=reload_from)
        self.server = uvicorn.Server(server_config(self.app, self.settings))
        self.thread = threading.Thread(target=self.server.run, name="proxy", daemon=True)
        self.base = f"http://127.0.0.1:{self.settings.proxy.port}"
        self.url = f"{self.base}/mcp"

    def prepare(self) -> None:
        """Called once the gateway exists, before the app is built."""

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
