"""Every command of the one CLI answers --help, and a bare `only1mcp` lists them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from only1mcp.cli import COMMANDS

COMMAND_LINES = [[name] for name in COMMANDS] + [["bench", "proxy"]]


def only1mcp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "only1mcp.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("words", COMMAND_LINES, ids=" ".join)
def test_every_command_has_help(words: list[str]) -> None:
    result = only1mcp(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: only1mcp " + " ".join(words))


def test_bare_command_lists_every_subcommand() -> None:
    result = only1mcp()
    assert result.returncode == 2
    for name in COMMANDS:
        assert name in result.stdout


def test_proxy_refuses_a_bad_config_with_the_key_and_reason(tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "bad.toml"
    config.write_text('[proxy]\nlisten = "127.0.0.1:8080"\nlisen = "typo"\n')
    result = only1mcp("proxy", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: proxy.lisen: unknown key" in result.stderr
