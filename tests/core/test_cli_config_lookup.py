"""How the operator commands find their configuration (only1mcp/commands/_config.py) and what they
say of a missing or empty store (only1mcp/commands/_store.py), as a new user meets them: in the
folder where ``only1mcp up`` ran, without ``--config``. The folder is written by up's own code
(``Up.publish_config``), nothing started."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from only1mcp.cli import build_parser, main
from only1mcp.commands.up import Up
from only1mcp.events import RequestEvent
from only1mcp.feature_store.offline.parquet import write_requests
from only1mcp.jobs.bench._procs import free_port

T0 = 1_772_445_570.0  # 2026-03-02 09:59:30 UTC
FROM_UP = "config .only1mcp/run/only1mcp.toml (from the last `only1mcp up` in this folder)"


def events(n: int, replica: str = "r1") -> list[dict]:
    return [dataclasses.asdict(RequestEvent(event_id=f"{replica}-{i}", ts=T0 + i, latency_ms=float(i + 1),
                                            method="tools/call", status="ok", replica=replica, tool="t"))
            for i in range(n)]


def run_up_config(*argv: str, bootstrap: str = "127.0.0.1:9") -> Path:
    """What ``only1mcp up ARGV`` leaves in the current folder before it starts a child: its
    configuration and the record of it. Returns the configuration's path."""
    args = build_parser().parse_args(["up", *argv])
    args.environ = {}
    up = Up(args, {})
    up.run_dir.mkdir(parents=True, exist_ok=True)
    plan = up.plan()
    up.bootstrap, up.redis_url = bootstrap, "redis://127.0.0.1:1/0"
    up.publish_config(plan)
    return plan.config_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_features_sql_reads_the_store_of_the_last_up_here(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = run_up_config("--demo")
    assert config == here / ".only1mcp" / "run" / "only1mcp.toml"
    write_requests(here / ".only1mcp" / "data", events(5))  # where the generated configuration puts the store

    code, out, err = cli(capsys, "features", "sql", "SELECT count(*) AS n FROM requests", "--format", "csv")
    assert code == 0
    assert out.split() == ['"n"', "5"]  # stdout is the CSV alone
    assert err == f"only1mcp features sql: using {FROM_UP}, data folder .only1mcp/data\n"

    code, out, err = cli(capsys, "features", "list", "--format", "json")
    assert code == 0 and json.loads(out) and err == f"only1mcp features list: using {FROM_UP}\n"


def test_an_explicit_config_wins_over_the_last_up(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_up_config("--demo")
    write_requests(here / ".only1mcp" / "data", events(5))
    write_requests(here / "other-data", events(2, replica="r2"))
    (here / "other.toml").write_text('[store]\ndata_dir = "other-data"\n')

    code, out, err = cli(capsys, "features", "--config", "other.toml", "sql", "SELECT count(*) FROM requests",
                         "--format", "json")
    assert code == 0 and json.loads(out) == [{"count_star()": 2}]
    assert err == "only1mcp features sql: using config other.toml (--config), data folder other-data\n"

    code, out, err = cli(capsys, "features", "--data-dir", ".only1mcp/data", "sql", "SELECT count(*) FROM requests",
                         "--format", "json")
    assert code == 0 and json.loads(out) == [{"count_star()": 5}]
    assert err == "only1mcp features sql: using data folder .only1mcp/data (--data-dir)\n"


def test_a_config_up_used_as_it_is_is_found_with_its_broker(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``up --config FILE`` (no --demo) writes no configuration of its own; the run folder's
    file of an earlier ``up --demo`` is stale then. .only1mcp/last-up names FILE, and the broker
    up gave its children (FILE need not name it)."""
    run_up_config("--demo")
    write_requests(here / ".only1mcp" / "data", events(5))
    (here / "mine.toml").write_text('[store]\ndata_dir = "my-data"\n')
    write_requests(here / "my-data", events(3))
    port = free_port()  # nothing listens there: tail gives up after its --connect-timeout
    run_up_config("--config", "mine.toml", bootstrap=f"127.0.0.1:{port}")
    record = json.loads((here / ".only1mcp" / "last-up").read_text())
    assert record == {"config": "mine.toml", "KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
    assert (here / ".only1mcp" / ".gitignore").read_text() == "*\n"  # nothing of it to commit

    code, out, err = cli(capsys, "features", "sql", "SELECT count(*) AS n FROM requests", "--format", "csv")
    assert code == 0 and out.split() == ['"n"', "3"]
    assert err == ("only1mcp features sql: using config mine.toml (from the last `only1mcp up` in this folder), "
                   "data folder my-data\n")

    code, out, err = cli(capsys, "anomalies", "tail", "--connect-timeout", "0.3")
    assert code == 1 and out == ""
    assert err.splitlines()[0] == ("only1mcp anomalies tail: using config mine.toml (from the last `only1mcp up` "
                                   f"in this folder), broker 127.0.0.1:{port}, topic mcp.anomalies")
    assert f"Kafka at 127.0.0.1:{port} did not answer" in err


def test_an_empty_or_missing_store_is_said_and_exits_1(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_up_config("--demo")  # up creates the data folder; the worker has written nothing yet
    code, out, err = cli(capsys, "features", "sql", "SELECT count(*) FROM requests")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"only1mcp features sql: using {FROM_UP}, data folder .only1mcp/data",
        "only1mcp features sql: the offline store at .only1mcp/data is empty: no Parquet files yet "
        "(is the worker running?)"]
    assert cli(capsys, "features", "compact")[0] == 1

    code, out, err = cli(capsys, "features", "--data-dir", "nowhere", "sql", "SELECT 1")
    assert code == 1 and out == ""
    assert err.splitlines()[1] == ("only1mcp features sql: no offline store at nowhere: the folder does not exist "
                                   "(nothing written yet; or run this where `only1mcp up` ran, or pass --config)")
    code, out, err = cli(capsys, "train", "latency", "--data-dir", "nowhere")
    assert code == 1 and "only1mcp train latency: no offline store at nowhere" in err


def test_without_any_up_here_the_defaults_are_named(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "features", "sql", "SELECT count(*) FROM requests")
    assert code == 1 and out == ""
    assert err.splitlines()[0] == ("only1mcp features sql: using the built-in defaults (no --config, and no "
                                   "`only1mcp up` has run in this folder), data folder data")
    assert "no offline store at data: the folder does not exist" in err


def test_a_last_up_whose_config_is_gone_falls_back(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "mine.toml").write_text('[store]\ndata_dir = "my-data"\n')
    run_up_config("--config", "mine.toml")
    (here / "mine.toml").unlink()
    err = cli(capsys, "features", "list")[2]
    assert err == ("only1mcp features list: using the built-in defaults (the last `only1mcp up` in this folder "
                   "used mine.toml, which is gone)\n")
    run_up_config("--demo")  # a generated file in the run folder: found again
    (here / ".only1mcp" / "last-up").write_text("not json")
    assert cli(capsys, "features", "list")[2] == f"only1mcp features list: using {FROM_UP}\n"


def test_models_list_names_the_registry_and_says_when_there_is_none(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_up_config("--demo")
    code, out, err = cli(capsys, "models", "list", "--json")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"only1mcp models list: using {FROM_UP}, model registry .only1mcp/data/models",
        "only1mcp models list: no model registry at .only1mcp/data/models: the folder does not exist "
        "(nothing trained yet: `only1mcp train latency` trains a model)"]
    (here / ".only1mcp" / "data" / "models").mkdir()
    code, out, err = cli(capsys, "models", "list")
    assert code == 1 and out == "" and "holds no model yet" in err
