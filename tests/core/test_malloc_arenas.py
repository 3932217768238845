"""limit_malloc_arenas: the worker's cap on glibc malloc arenas ([worker] malloc_arenas), in a real process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from only1mcp.commands._common import limit_malloc_arenas
from only1mcp.errors import ConfigError
from only1mcp.settings import parse_settings

# Six threads that each allocate from malloc (100 kB blocks: below glibc's mmap threshold), then glibc's own
# per-arena report on stderr ("Arena N:" per arena).
_PROGRAM = textwrap.dedent("""
    import ctypes, sys, threading
    from only1mcp.commands._common import limit_malloc_arenas
    cap = int(sys.argv[1])
    if cap:
        assert limit_malloc_arenas(cap)
    def work():
        keep = [bytearray(100_000) for _ in range(50)]
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctypes.CDLL("libc.so.6").malloc_stats()
""")


def _arenas(cap: int) -> int:
    done = subprocess.run([sys.executable, "-c", _PROGRAM, str(cap)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


def test_the_cap_holds_where_threads_would_take_more_arenas() -> None:
    uncapped = _arenas(0)
    assert uncapped > 1, "glibc gave the threads one arena without a cap: this test shows nothing here"
    assert _arenas(1) == 1
    assert _arenas(2) == 2


def test_zero_means_glibc_default_and_the_setting_is_checked() -> None:
    assert limit_malloc_arenas(0) is False  # nothing set
    assert parse_settings({}, "t", {}).worker.malloc_arenas == 2
    assert parse_settings({"worker": {"malloc_arenas": 0}}, "t", {}).worker.malloc_arenas == 0
    with pytest.raises(ConfigError, match=r"worker\.malloc_arenas"):
        parse_settings({"worker": {"malloc_arenas": -1}}, "f.toml", {})
