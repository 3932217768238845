"""The disk spool: where request events wait while the broker is away.

Layout of ``directory``: append-only segment files ``<seq>.seg`` holding one JSON event per
line, read in ``seq`` order, plus a ``cursor`` file (how many lines of the head segment are
already delivered) and a ``lock`` file (one process per spool). A segment rotates once it
reaches ``segment_bytes``, and whenever the reader catches up with it, so the reader only
ever reads closed, immutable segments. A segment is deleted once all its lines are acknowledged.

Durability follows ``fsync``: ``"always"`` fsyncs after every append (while the broker is
away that is one fsync per emitted event, on the caller's thread: the price of losing
nothing on a power cut), ``"batch"`` when the owner calls :meth:`Spool.sync` (the Kafka sink
does once per batch it moves and each time its delivery task looks at the spool, about
every linger interval), and ``"never"`` leaves it to the OS (data still reaches the file
on sync, rotation and close). Whatever is left on disk when the process stops is replayed,
in order, by the next one that opens the directory.

Past ``max_bytes`` on disk new lines are dropped, counted, and logged once per interval.
Not thread safe: use it from one thread (the proxy's event loop).

Reading survives damage (a torn last line after a crash, flipped bytes, garbage appended, a
bad cursor): with a ``check`` (the Kafka sink's: :func:`request_event_line`, the line decodes
as a :class:`~only1mcp.events.RequestEvent`) each line is checked when its segment is loaded;
a line that fails is
skipped, counted (``corrupt``) and logged with the reason; the intact lines before and after
it are read in order.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from only1mcp.events import EventDecodeError, RequestEvent

__all__ = ["Spool", "SpoolError", "FSYNC_POLICIES"]

FSYNC_POLICIES = ("always", "batch", "never")
_SUFFIX = ".seg"
_FIRST_SEQ = 10**12  # room below it for segments put in front (prepend)

log = logging.getLogger("only1mcp.events.spool")


class SpoolError(RuntimeError):
    """The spool directory cannot be used (not writable, or another process holds it)."""


def request_event_line(line: bytes) -> Any:
    """The default line check: the line is one request event (raises EventDecodeError if not)."""
    return RequestEvent.fields_from_json(line)


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, fsync: str = "batch",
                 segment_bytes: int = 4 * 1024 * 1024, log_interval_s: float = 10.0,
                 check: Callable[[bytes], Any] | None = None) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.log_interval_s = log_interval_s
        self.check = check
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.directory / "lock", "a+b")  # noqa: SIM115 - held for the spool's life
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: {exc}") from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolError(f"spool directory {self.directory} is in use by another process") from None
        # counters
        self.appended = 0  # lines written (spooled)
        self.acked = 0  # lines acknowledged (replayed)
        self.dropped = 0  # lines refused: budget exhausted
        self.syncs = 0  # fsync calls
        self.corrupt = 0  # lines skipped on reading: torn, damaged, not an event
        self._last_corrupt_log = float("-inf")
        self._last_drop_log = float("-inf")
        self._drops_since_log = 0
        # state
        self._closed: list[int] = []  # sequence numbers of closed segments, oldest first
        self._sizes: dict[int, int] = {}  # seq -> bytes on disk (or written so far, for the active one)
        self._lines: dict[int, int] = {}  # seq -> lines
        self._active: IO[bytes] | None = None
        self._active_seq: int | None = None
        self._dirty = False  # written since the last sync
        self._head: list[bytes] | None = None  # lines of the head segment, once read
        self._head_pos = 0  # lines of the head already acknowledged
        self._total_bytes = 0
        self._total_lines = 0
        self._scan()

    # -- opening -----------------------------------------------------------------------------

    def _set(self, seq: int, size: int, lines: int) -> None:
        self._total_bytes += size - self._sizes.get(seq, 0)
        self._total_lines += lines - self._lines.get(seq, 0)
        self._sizes[seq], self._lines[seq] = size, lines

    def _forget(self, seq: int) -> None:
        self._total_bytes -= self._sizes.pop(seq)
        self._total_lines -= self._lines.pop(seq)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{_SUFFIX}"

    def _scan(self) -> None:
        for stale in self.directory.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            data = path.read_bytes()
            lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
            if not lines:
                path.unlink(missing_ok=True)
                continue
            self._closed.append(seq)
            self._set(seq, len(data), lines)
        self._closed.sort()
        cursor = self.directory / "cursor"
        if self._closed and cursor.exists():
            try:
                seq_text, pos_text = cursor.read_text().split()
                if int(seq_text) == self._closed[0]:  # a damaged cursor cannot point before the start
                    self._head_pos = max(0, min(int(pos_text), self._lines[self._closed[0]]))
            except (OSError, ValueError):
                pass
        if self._closed:
            log.info("event spool %s: %d events left from a previous run, to replay first",
                     self.directory, self.pending)

    # -- state -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Lines written and not yet acknowledged."""
        return self._total_lines - self._head_pos

    @property
    def bytes(self) -> int:
        """Bytes on disk (including acknowledged lines of the head segment, until it is deleted)."""
        return self._total_bytes

    def segments(self) -> list[Path]:
        seqs = list(self._closed) + ([self._active_seq] if self._active_seq is not None else [])
        return [self._path(seq) for seq in seqs]

    def __len__(self) -> int:
        return self.pending

    # -- writing -----------------------------------------------------------------------------

    def _admit(self, size: int) -> bool:
        if self.bytes + size <= self.max_bytes:
            return True
        self.dropped += 1
        self._drops_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= self.log_interval_s:
            log.warning("event spool %s is full (%d of %d bytes): dropped %d events (%d in all)",
                        self.directory, self.bytes, self.max_bytes, self._drops_since_log, self.dropped)
            self._last_drop_log = now
            self._drops_since_log = 0
        return False

    def append(self, lines: Iterable[bytes]) -> int:
        """Write lines (JSON documents without newline) at the end; return how many were kept."""
        kept = 0
        for line in lines:
            record = line + b"\n"
            if not self._admit(len(record)):
                continue
            if self._active is None:
                self._open_active()
            assert self._active is not None and self._active_seq is not None
            self._active.write(record)
            self._sizes[self._active_seq] += len(record)
            self._lines[self._active_seq] += 1
            self._total_bytes += len(record)
            self._total_lines += 1
            self._dirty = True
            kept += 1
            if self._sizes[self._active_seq] >= self.segment_bytes:
                self._rotate()
        self.appended += kept
        if kept and self.fsync == "always":
            self._sync()
        return kept

    def prepend(self, lines: list[bytes]) -> int:
        """Put lines in front of everything spooled (they are older: a failed batch, the memory
        queue at shutdown). Return how many were kept."""
        kept_lines = [line for line in lines if self._admit(len(line) + 1)]
        if not kept_lines:
            return 0
        if self._head is None and self._head_pos:
            self._load_head()  # a cursor from a previous run (the head may turn out to be all damaged)
        if self._head is not None:
            # The head is being read: fold the lines and the head's rest into one new head.
            seq = self._closed[0]
            body = kept_lines + self._head[self._head_pos:]
            self._write_closed(seq, body)
            self._head, self._head_pos = body, 0
            self._write_cursor()
        else:
            first = [*self._closed, *([self._active_seq] if self._active_seq is not None else [])]
            seq = (min(first) if first else _FIRST_SEQ) - 1
            self._write_closed(seq, kept_lines)
            self._closed.insert(0, seq)
        self.appended += len(kept_lines)
        return len(kept_lines)

    def _write_closed(self, seq: int, lines: list[bytes]) -> None:
        data = b"".join(line + b"\n" for line in lines)
        tmp = self.directory / f"{seq:020d}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
            if self.fsync != "never":
                out.flush()
                os.fsync(out.fileno())
                self.syncs += 1
        os.replace(tmp, self._path(seq))
        self._set(seq, len(data), len(lines))

    def _open_active(self) -> None:
        seqs = [*self._closed]
        seq = max(seqs) + 1 if seqs else _FIRST_SEQ
        self._active = open(self._path(seq), "ab")  # noqa: SIM115 - closed on rotation
        self._active_seq = seq
        self._set(seq, 0, 0)

    def _rotate(self) -> None:
        """Close the active segment (after a sync per policy); the next append opens a new one."""
        if self._active is None or self._active_seq is None:
            return
        self._sync()
        self._active.close()
        seq, self._active, self._active_seq = self._active_seq, None, None
        if self._lines[seq]:
            self._closed.append(seq)
        else:
            self._path(seq).unlink(missing_ok=True)
            self._forget(seq)

    def _sync(self) -> None:
        if self._active is None or not self._dirty:
            return
        self._active.flush()
        if self.fsync != "never":
            os.fsync(self._active.fileno())
            self.syncs += 1
        self._dirty = False

    def sync(self) -> None:
        """Write buffered lines to the file, and fsync them unless the policy is "never"."""
        self._sync()

    # -- reading -----------------------------------------------------------------------------

    def _load_head(self) -> None:
        while self._head is None:
            if not self._closed:
                self._rotate()  # catch up with the writer: the active segment becomes readable
            if not self._closed:
                return
            seq = self._closed[0]
            try:
                data = self._path(seq).read_bytes()
            except OSError as exc:  # removed or unreadable behind our back: skip it, counted
                self._report(f"segment {self._path(seq).name} unreadable ({exc.strerror})", self._lines[seq])
                data = b""
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            if self.check is not None:
                lines = self._intact(seq, lines)
            self._head = lines
            self._set(seq, self._sizes[seq], len(lines))
            self._head_pos = min(self._head_pos, len(lines))
            if self._head_pos >= len(lines):  # nothing (left) to read in it: on to the next segment
                self._drop_head()

    def _intact(self, seq: int, lines: list[bytes]) -> list[bytes]:
        """The lines that pass ``check``; the others are counted and reported, never returned."""
        good: list[bytes] = []
        for number, line in enumerate(lines, 1):
            try:
                self.check(line)  # type: ignore[misc]
            except (EventDecodeError, ValueError, TypeError) as exc:
                self._report(f"segment {self._path(seq).name} line {number}: {exc}", 1)
                continue
            good.append(line)
        return good

    def _report(self, reason: str, lines: int) -> None:
        self.corrupt += lines
        now = time.monotonic()
        if now - self._last_corrupt_log >= self.log_interval_s:
            self._last_corrupt_log = now
            log.warning("event spool %s: skipped a damaged record (%s); %d skipped in all",
                        self.directory, reason, self.corrupt)

    def _drop_head(self) -> None:
        seq = self._closed.pop(0)
        self._path(seq).unlink(missing_ok=True)
        self._forget(seq)
        self._head, self._head_pos = None, 0
        (self.directory / "cursor").unlink(missing_ok=True)

    def read(self, n: int) -> list[bytes]:
        """Up to ``n`` lines from the front, oldest first, without removing them (see :meth:`ack`)."""
        self._load_head()
        if self._head is None:
            return []
        return self._head[self._head_pos:self._head_pos + n]

    def ack(self, n: int) -> None:
        """The first ``n`` lines that :meth:`read` returned are delivered: forget them."""
        if n <= 0 or self._head is None:
            return
        n = min(n, len(self._head) - self._head_pos)
        self._head_pos += n
        self.acked += n
        if self._head_pos >= len(self._head):
            self._drop_head()
        else:
            self._write_cursor()

    def _write_cursor(self) -> None:
        if not self._closed:
            return
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{self._closed[0]} {self._head_pos}\n")
        os.replace(tmp, self.directory / "cursor")

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush (and fsync unless "never") the active segment and release the directory."""
        if self._active is not None:
            self._rotate()
        if not self._lock.closed:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()

    def counters(self) -> dict[str, int]:
        return {"spooled": self.appended, "replayed": self.acked, "dropped": self.dropped, "corrupt": self.corrupt,
                "spool_depth": self.pending, "spool_bytes": self.bytes, "spool_segments": len(self.segments())}
