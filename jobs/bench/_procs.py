"""Benchmark subprocesses: free ports, readiness waits and a teardown that always runs.

A ``ProcessGroup`` is a context manager; every process started through it is
stopped when the block exits, whether it ends normally, by an exception or by
Ctrl-C. Each child gets its own session (so a terminal Ctrl-C reaches only the
benchmark, which then stops them in order) and, on Linux, dies with the
benchmark even if the benchmark itself is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = ["StartError", "Managed", "ProcessGroup", "free_port", "free_ports", "run_interruptibly", "rss_kib",
           "peak_rss_kib", "open_fds", "fd_kinds"]

# Runs before the real command: asks the kernel to SIGTERM the child when its parent
# dies (PR_SET_PDEATHSIG, kept across exec), then execs the command. Done in a tiny
# launcher rather than a preexec_fn because preexec_fn is unsafe once threads exist.
_LAUNCHER = (
    "import ctypes,os,sys\n"
    "parent=int(sys.argv[1])\n"
    "try: ctypes.CDLL(None).prctl(1,15)\n"
    "except Exception: pass\n"
    "os.getppid()==parent or sys.exit(1)\n"
    "os.execv(sys.argv[2],sys.argv[2:])\n"
)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_handed_out: set[int] = set()  # ports this process has given to a child already
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
T = TypeVar("T")


class StartError(RuntimeError):
    """A process did not become ready; the message says why, ``log_tail`` shows its last output."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago and not handed out before by this process."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago (the children bind them soon after).

    The kernel may hand a just-closed port out again before the child that was told
    to use it has bound it, so ports already handed out by this process are skipped.
    """
    ports: list[int] = []
    for _ in range(count + 100):
        if len(ports) == count:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            ports.append(port)
    if len(ports) < count:
        raise OSError(f"could not find {count} unused ports")
    return ports


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_kib(pid: int) -> int:
    """Resident memory of a process now, in KiB (Linux)."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The highest resident memory of a process so far, in KiB (Linux)."""
    return _status_kib(pid, "VmHWM")


def open_fds(pid: int) -> int:
    """File descriptors a process holds open now (Linux: the entries of /proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int, listen_port: int | None = None) -> dict[str, int]:
    """A process's open file descriptors by kind (Linux): ``tcp`` sockets it connected or accepted,
    of which ``accepted`` on ``listen_port`` (its clients' connections), ``listening`` sockets,
    ``other_sockets`` (unix, udp, …), ``pipes`` and ``files`` (everything else: files, epoll, eventfd)."""
    inodes: list[str] = []
    kinds = {"tcp": 0, "accepted": 0, "listening": 0, "other_sockets": 0, "pipes": 0, "files": 0}
    folder = f"/proc/{pid}/fd"
    for name in os.listdir(folder):
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.append(target[8:-1])
        elif target.startswith("pipe:["):
            kinds["pipes"] += 1
        else:
            kinds["files"] += 1
    tcp: dict[str, tuple[int, str]] = {}  # inode -> (local port, state)
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    tcp[fields[9]] = (int(fields[1].rsplit(":", 1)[1], 16), fields[3])
        except (OSError, StopIteration):
            continue
    for inode in inodes:
        if inode not in tcp:
            kinds["other_sockets"] += 1
        elif tcp[inode][1] == "0A":  # TCP_LISTEN
            kinds["listening"] += 1
        else:
            kinds["tcp"] += 1
            kinds["accepted"] += tcp[inode][0] == listen_port
    return kinds


@dataclass
class Managed:
    """One started process, with its combined stdout/stderr log."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)
    started_at: float = field(default_factory=time.perf_counter)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (Linux /proc; NaN elsewhere or once gone)."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return float("nan")
        # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def log_tail(self, lines: int = 6) -> str:
        """The last few non-empty lines of the process log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


class ProcessGroup:
    """Starts processes, waits for them to be ready, and always stops them."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None, grace_s: float = 5.0) -> None:
        self.log_dir = Path(log_dir)
        self.env = dict(env) if env is not None else None
        self.grace_s = grace_s
        self.procs: list[Managed] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: Sequence[str]) -> Managed:
        """Start ``argv`` with its output going to ``<log_dir>/<name>.log``.

        Call it from a thread that outlives the child (normally the main thread):
        the kernel's parent-death signal fires when the starting thread ends.
        """
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_all
        command = list(argv)
        if sys.platform.startswith("linux") and os.path.isabs(command[0]):
            command = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command]
        try:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        proc = Managed(name=name, argv=list(argv), popen=popen, log_path=log_path, _log=log)
        self.procs.append(proc)
        return proc

    async def wait_ready(
        self, proc: Managed, probe: Callable[[], Awaitable[object]], timeout_s: float
    ) -> float:
        """Call ``probe`` until it succeeds; return seconds since start, or raise StartError."""
        deadline = time.perf_counter() + timeout_s
        last_error = "no attempt"
        while True:
            if not proc.alive():
                tail = proc.log_tail(lines=20)
                last = tail.splitlines()[-1].strip() if tail else "no output"  # usually the exception
                raise StartError(f"{proc.name} exited with code {proc.popen.returncode}: {last}", tail)
            try:
                await probe()
                return time.perf_counter() - proc.started_at
            except Exception as exc:  # not ready yet: refused, 404, wrong answer...
                last_error = f"{type(exc).__name__}: {exc}"
            if time.perf_counter() >= deadline:
                raise StartError(
                    f"{proc.name} not ready after {timeout_s:g}s (last probe: {last_error})", proc.log_tail(lines=20)
                )
            await asyncio.sleep(0.1)

    def stop(self, proc: Managed) -> int | None:
        """Stop one process (SIGTERM to its session, SIGKILL after the grace period) and forget it."""
        if proc in self.procs:
            self.procs.remove(proc)
        self._signal(proc, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.popen.wait(timeout=self.grace_s)
        proc._log.close()
        return proc.popen.returncode

    def stop_all(self) -> None:
        """Stop every process, newest first (proxies before the upstream).

        A Ctrl-C or SIGTERM during this is held back until every process is
        stopped, then raised as KeyboardInterrupt.
        """
        with _deferred_interrupts():
            self._stop_all()

    def _stop_all(self) -> None:
        # Signal all first so their graceful shutdowns overlap, then wait for each.
        for proc in reversed(self.procs):
            self._signal(proc, signal.SIGTERM)
        while self.procs:
            proc = self.procs[-1]
            try:
                self.stop(proc)
            except Exception as exc:  # keep going: the others must still be stopped
                if proc in self.procs:
                    self.procs.remove(proc)
                print(f"warning: could not stop {proc.name} (pid {proc.pid}): {exc}", file=sys.stderr)

    @staticmethod
    def _signal(proc: Managed, sig: signal.Signals) -> None:
        if proc.popen.poll() is not None:
            return
        try:
            # The child leads its own session, so this also reaches anything it spawned.
            os.killpg(proc.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[None]:
    pending: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum)) for sig in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt


def run_interruptibly(
    main: Coroutine[Any, Any, T], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> T:
    """Run ``main`` to completion; Ctrl-C or SIGTERM cancels it and raises KeyboardInterrupt.

    asyncio.Runner already turns Ctrl-C into a cancellation of the main task; SIGTERM
    is handled the same way here, so ``finally`` blocks and context managers inside
    ``main`` run, instead of the signal landing as an exception in an arbitrary task.
    """
    state: dict[str, Any] = {}

    async def wrapper() -> T:
        state["task"] = asyncio.current_task()
        return await main

    def on_sigterm(signum: int, frame: object) -> None:
        task = state.get("task")
        if task is None or task.done():
            raise KeyboardInterrupt
        state["cancelled"] = True
        task.cancel()
        state["loop"].call_soon_threadsafe(lambda: None)  # wake the loop to deliver it

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        state["loop"] = runner.get_loop()
        try:
            previous = signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread
            return runner.run(wrapper())
        try:
            return runner.run(wrapper())
        except asyncio.CancelledError:
            if state.get("cancelled"):
                raise KeyboardInterrupt from None
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
