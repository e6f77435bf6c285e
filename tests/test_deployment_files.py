"""Structural checks of the production deployment files.

No Docker engine runs here, so docker-compose.yml, collector/otelcol.yaml, the Grafana
provisioning, the Dockerfile and the ClickHouse init script are checked as files:
they parse, every image is pinned, every mounted path exists, and every name that
crosses a file boundary (ports, topics, database, credential variables) agrees with
the other files and with the pipeline's own settings model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
OTELCOL = ROOT / "collector" / "otelcol.yaml"
DATASOURCE = ROOT / "dashboards" / "provisioning" / "datasources" / "clickhouse.yaml"
DASHBOARD_PROVIDER = ROOT / "dashboards" / "provisioning" / "dashboards" / "llmops.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CLICKHOUSE_INIT = ROOT / "deploy" / "clickhouse" / "initdb.d" / "10-llmops-users.sh"

# The pipeline's contract, used when llmops.config cannot be imported.
FALLBACK_DEFAULTS = {
    "topic": "otlp_spans",
    "dead_letter_topic": "otlp_spans_dlq",
    "drift_topic": "llm_drift_signals",
    "agent_topic": "agent_spans",
    "group_id": "llmops-processors",
    "partitions": 4,
    "database": "llmops",
    "grpc_port": 4317,
    "http_port": 4318,
}

EXPECTED_SERVICES = {"kafka", "kafka-init", "otel-collector", "clickhouse", "processors", "grafana", "loadgen"}
# Images built FROM scratch: no shell or HTTP client for a compose health check.
NO_SHELL_SERVICES = {"otel-collector"}

# Allowed keys of each collector component, for otel/opentelemetry-collector-contrib:0.165.1 (the tests in
# test_production_path.py also run the file on a collector built from that release's modules).
# A nested dict lists the allowed keys below that key; None means "any value".
# Sources (upstream repositories, stored copies read with the search tool):
#   otlp receiver   opentelemetry-collector receiver/otlpreceiver/config.md (configgrpc.ServerConfig,
#                   confighttp.ServerConfig)
#   memory_limiter  opentelemetry-collector processor/memorylimiterprocessor/README.md
#   batch           opentelemetry-collector processor/batchprocessor/README.md
#   kafka exporter  opentelemetry-collector-contrib exporter/kafkaexporter/README.md and config.schema.yaml,
#                   pkg/kafka/configkafka/config.go; top-level topic/encoding removed by PR #46917
#   health_check    opentelemetry-collector-contrib extension/healthcheckextension/README.md
_GRPC_SERVER = dict.fromkeys(
    ["endpoint", "transport", "tls", "max_recv_msg_size_mib", "max_concurrent_streams", "read_buffer_size",
     "write_buffer_size", "keepalive", "auth", "include_metadata"]
)  # fmt: skip
_HTTP_SERVER = dict.fromkeys(
    ["endpoint", "tls", "cors", "max_request_body_size", "include_metadata", "auth", "response_headers",
     "compression_algorithms", "read_timeout", "read_header_timeout", "write_timeout", "idle_timeout",
     "traces_url_path", "metrics_url_path", "logs_url_path"]
)  # fmt: skip
_KAFKA_SIGNAL = dict.fromkeys(["topic", "encoding", "topic_from_metadata_key", "message_key_from_metadata_key"])
_KAFKA_EXPORTER: dict[str, Any] = {
    **dict.fromkeys(
        ["brokers", "protocol_version", "resolve_canonical_bootstrap_servers_only", "client_id",
         "conn_idle_timeout", "rack_id", "use_leader_epoch", "auth", "tls", "metadata", "timeout",
         "topic_from_attribute", "include_metadata_keys", "record_headers", "record_partitioner",
         "partition_traces_by_id", "partition_metrics_by_resource_attributes",
         "partition_logs_by_resource_attributes", "partition_logs_by_trace_id", "signal_header"]
    ),
    "logs": _KAFKA_SIGNAL,
    "metrics": _KAFKA_SIGNAL,
    "traces": _KAFKA_SIGNAL,
    "profiles": _KAFKA_SIGNAL,
    "producer": {
        **dict.fromkeys(["max_message_bytes", "max_broker_write_bytes", "required_acks", "compression",
                         "flush_max_messages", "allow_auto_topic_creation", "linger"]),
        "compression_params": {"level": None},
    },
    "retry_on_failure": dict.fromkeys(
        ["enabled", "initial_interval", "randomization_factor", "multiplier", "max_interval", "max_elapsed_time"]
    ),
    "sending_queue": dict.fromkeys(
        ["enabled", "num_consumers", "queue_size", "sizer", "block_on_overflow", "wait_for_result", "storage", "batch"]
    ),
}  # fmt: skip
ALLOWED_COMPONENT_KEYS: dict[str, dict[str, Any]] = {
    "receivers/otlp": {"protocols": {"grpc": _GRPC_SERVER, "http": _HTTP_SERVER}},
    "processors/memory_limiter": dict.fromkeys(
        ["check_interval", "limit_mib", "spike_limit_mib", "limit_percentage", "spike_limit_percentage",
         "min_gc_interval_when_soft_limited", "min_gc_interval_when_hard_limited"]
    ),
    "processors/batch": dict.fromkeys(
        ["timeout", "send_batch_size", "send_batch_max_size", "metadata_keys", "metadata_cardinality_limit"]
    ),
    "exporters/kafka": _KAFKA_EXPORTER,
    "extensions/health_check": dict.fromkeys(["endpoint", "path", "response_body", "tls", "check_collector_pipeline"]),
}  # fmt: skip

_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


# -- helpers -------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?err}, $VAR expansion; `$$` is a literal `$`."""

    def expand(match: re.Match[str]) -> str:
        name = match.group("name") or match.group("bare")
        value = env.get(name)
        op = match.group("op") or ""
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return _interpolate(match.group("arg"), env)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise AssertionError(f"required variable {name} is unset: {match.group('arg')}")
        return value or ""

    return "$".join(_INTERPOLATION.sub(expand, part) for part in text.split("$$"))


def _referenced_variables(text: str) -> set[str]:
    stripped = text.replace("$$", "")
    return {m.group("name") or m.group("bare") for m in _INTERPOLATION.finditer(stripped)}


def _unknown_keys(config: Any, allowed: Mapping[str, Any] | None, prefix: str = "") -> list[str]:
    """Dotted paths in `config` that the allowed-keys table does not list."""
    if allowed is None or not isinstance(config, Mapping):
        return []
    unknown: list[str] = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key not in allowed:
            unknown.append(path)
        else:
            unknown.extend(_unknown_keys(value, allowed[key], path + "."))
    return unknown


def _port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _container_ports(service: Mapping[str, Any], env: Mapping[str, str]) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        ports.add(int(_interpolate(str(entry), env).rsplit(":", 1)[1].split("/")[0]))
    return ports


def _bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for volume in service.get("volumes", []):
        if isinstance(volume, Mapping):
            if volume.get("type") == "bind":
                yield str(volume["source"]), str(volume["target"])
            continue
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            yield source, target


def _env_reference(value: Any) -> str:
    match = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", str(value))
    assert match, f"{value!r} is not a plain ${{VAR}} reference"
    return match.group(1) or match.group(2)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return _env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


_COLLECTOR_ENV = re.compile(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")


@pytest.fixture(scope="module")
def otelcol() -> dict[str, Any]:
    """The collector config as the container reads it without overrides: ${env:NAME:-default} is its default,
    except KAFKA_BROKERS, which stays a reference (compose sets it; the wiring test checks that)."""

    def default(match: re.Match[str]) -> str:
        return match.group(0) if "KAFKA_BROKERS" in match.group(0) else match.group(1)

    return yaml.safe_load(_COLLECTOR_ENV.sub(default, OTELCOL.read_text(encoding="utf-8")))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LLMOPS_* variables from the calling shell leak into Settings()."""
    for key in list(os.environ):
        if key.startswith(("LLMOPS_", "_LLMOPS_")):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture
def defaults(clean_env: pytest.MonkeyPatch) -> dict[str, Any]:
    try:
        from llmops.config import Settings
    except ImportError:
        return dict(FALLBACK_DEFAULTS)
    settings = Settings()
    return {
        "topic": settings.kafka.topic,
        "dead_letter_topic": settings.kafka.dead_letter_topic,
        "drift_topic": settings.kafka.drift_topic,
        "agent_topic": settings.kafka.agent_topic,
        "group_id": settings.kafka.group_id,
        "partitions": settings.kafka.partitions,
        "database": settings.clickhouse.database,
        "grpc_port": settings.receiver.grpc_port,
        "http_port": settings.receiver.http_port,
    }


# -- docker-compose.yml --------------------------------------------------------------


def test_compose_declares_the_stack(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES
    assert services["loadgen"]["profiles"] == ["demo"]


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        _repository, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.fullmatch(r"\d+(\.\d+)+", tag), f"{name}: tag {tag!r} is not a release"
        if "build" in service:
            assert tag == version, f"{name}: locally built image should carry the package version {version}"
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_bind_mounted_paths_exist(services: dict[str, Any]) -> None:
    mounted = set()
    for name, service in services.items():
        for source, _target in _bind_mounts(service):
            assert not source.startswith(("/", "~")), f"{name}: {source} is outside the repository"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            mounted.add(source)
    assert mounted == {
        "./collector/otelcol.yaml",
        "./deploy/clickhouse/initdb.d",
        "./dashboards/provisioning",
        "./dashboards/json",
    }


def test_health_checks_and_start_order(services: dict[str, Any]) -> None:
    one_shot = {name for name, s in services.items() if s.get("restart") == "no" and "profiles" not in s}
    assert one_shot == {"kafka-init"}
    for name, service in services.items():
        if name in one_shot or name in NO_SHELL_SERVICES or "profiles" in service:
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, Mapping), f"{name}: depends_on must name a condition for each dependency"
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if dependency in one_shot:
                expected = "service_completed_successfully"
            elif dependency in NO_SHELL_SERVICES:
                expected = "service_started"
            else:
                expected = "service_healthy"
            assert spec["condition"] == expected, f"{name} -> {dependency}: {spec['condition']} != {expected}"
    for name in ("otel-collector", "processors"):
        assert services[name]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["processors"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


def test_processors_scale_out(services: dict[str, Any]) -> None:
    processors = services["processors"]
    assert "container_name" not in processors and "ports" not in processors
    assert processors["command"] == ["worker"]
    assert all("container_name" not in service for service in services.values())


def test_compose_variables_are_defined_in_env_example(compose_text: str, example_env: dict[str, str]) -> None:
    used = _referenced_variables(compose_text)
    assert used, "no variables found"
    assert used <= set(example_env), f"missing from .env.example: {sorted(used - set(example_env))}"
    assert set(example_env) <= used, f"unused in docker-compose.yml: {sorted(set(example_env) - used)}"
    # Escaped `$$VAR` is expanded inside the container, not by compose.
    assert "HOSTNAME" not in used and "HOSTNAME" in compose_text


def test_no_secret_is_committed(services: dict[str, Any], example_env: dict[str, str]) -> None:
    secrets = [key for key in example_env if "PASSWORD" in key]
    assert len(secrets) == 4
    for key in secrets:
        assert example_env[key].startswith("change-me"), f".env.example {key} must be a placeholder"
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name}.{key} must come from .env"
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_names_agree_across_files(
    services: dict[str, Any], otelcol: dict[str, Any], example_env: dict[str, str], defaults: dict[str, Any]
) -> None:
    kafka_env = {k: _interpolate(str(v), example_env) for k, v in services["kafka"]["environment"].items()}
    internal = dict(item.split("://") for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))["INTERNAL"]
    init_env = {k: _interpolate(str(v), {}) for k, v in services["kafka-init"]["environment"].items()}
    worker_env = {k: _interpolate(str(v), example_env) for k, v in services["processors"]["environment"].items()}
    collector_env = services["otel-collector"]["environment"]
    exporter = otelcol["exporters"]["kafka"]

    # Kafka address: one internal listener for the collector, the init job and the workers.
    assert init_env["BOOTSTRAP"] == worker_env["LLMOPS_KAFKA__BOOTSTRAP"] == collector_env["KAFKA_BROKERS"] == internal
    assert _interpolate(exporter["brokers"].replace("${env:", "${"), {}) == internal
    # Topics, encoding, partitions and consumer group.
    assert init_env["SPANS_TOPIC"] == exporter["traces"]["topic"] == defaults["topic"]
    assert init_env["DLQ_TOPIC"] == defaults["dead_letter_topic"]
    assert init_env["DRIFT_TOPIC"] == defaults["drift_topic"]
    assert init_env["AGENT_TOPIC"] == defaults["agent_topic"]
    assert exporter["traces"]["encoding"] == "otlp_proto"
    assert int(init_env["PARTITIONS"]) == int(example_env["LLMOPS_KAFKA__PARTITIONS"]) == defaults["partitions"]
    assert worker_env.get("LLMOPS_KAFKA__GROUP_ID", defaults["group_id"]) == defaults["group_id"]
    # Message size: the collector's producer limit fits the broker's and the topics' limit.
    broker_limit = int(kafka_env["KAFKA_MESSAGE_MAX_BYTES"])
    assert int(init_env["MAX_MESSAGE_BYTES"]) == broker_limit
    assert exporter["producer"]["max_message_bytes"] <= broker_limit
    # Database: created by the image, written by the workers, read by Grafana.
    database = defaults["database"]
    assert services["clickhouse"]["environment"]["CLICKHOUSE_DB"] == database
    assert services["clickhouse"]["environment"]["LLMOPS_CLICKHOUSE_DATABASE"] == database
    assert worker_env["LLMOPS_CLICKHOUSE__DATABASE"] == database
    assert services["grafana"]["environment"]["CLICKHOUSE_DATABASE"] == database
    dsn = re.fullmatch(r"http://([^:@]+):([^@]+)@([^:/]+):(\d+)", worker_env["LLMOPS_CLICKHOUSE__DSN"])
    assert dsn, worker_env["LLMOPS_CLICKHOUSE__DSN"]
    assert dsn.group(1, 2) == (example_env["CLICKHOUSE_PIPELINE_USER"], example_env["CLICKHOUSE_PIPELINE_PASSWORD"])
    assert (dsn.group(3), int(dsn.group(4))) == ("clickhouse", 8123)
    # OTLP ports: receiver endpoints, published ports and the built-in receiver's defaults.
    protocols = otelcol["receivers"]["otlp"]["protocols"]
    assert _port_of(protocols["grpc"]["endpoint"]) == defaults["grpc_port"]
    assert _port_of(protocols["http"]["endpoint"]) == defaults["http_port"]
    assert {defaults["grpc_port"], defaults["http_port"]} <= _container_ports(services["otel-collector"], example_env)
    assert services["loadgen"]["command"][services["loadgen"]["command"].index("--endpoint") + 1] == (
        f"http://otel-collector:{defaults['http_port']}"
    )


def test_worker_environment_is_valid_settings(
    services: dict[str, Any], example_env: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    try:
        from llmops.config import Settings
    except ImportError:
        pytest.fail("llmops.config must be importable to check the worker environment")
    for key, value in services["processors"]["environment"].items():
        clean_env.setenv(key, _interpolate(str(value), example_env))
    settings = Settings()  # unknown nested keys (LLMOPS_KAFKA__TYPO) raise here
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.clickhouse.dsn and settings.clickhouse.dsn.startswith("http://")
    assert not settings.embedded_store
    assert settings.kafka.kind == "kafka"
    assert settings.kafka.consumer_heartbeat_interval_s < settings.kafka.consumer_session_timeout_s
    assert settings.log_level == example_env["LLMOPS_LOG_LEVEL"]


# -- collector/otelcol.yaml ------------------------------------------------------------


def test_key_checker_catches_typos_and_removed_keys() -> None:
    kafka = ALLOWED_COMPONENT_KEYS["exporters/kafka"]
    assert _unknown_keys({"traces": {"topik": "otlp_spans"}}, kafka) == ["traces.topik"]
    # Top-level topic/encoding were removed from the kafka exporter before the pinned version.
    assert _unknown_keys({"topic": "otlp_spans", "encoding": "otlp_proto"}, kafka) == ["topic", "encoding"]
    assert _unknown_keys({"producer": {"compression_params": {"level": 1, "speed": 2}}}, kafka) == [
        "producer.compression_params.speed"
    ]


def test_collector_components_use_documented_keys(otelcol: dict[str, Any]) -> None:
    declared = {
        f"{kind}/{name}": config
        for kind in ("receivers", "processors", "exporters", "extensions")
        for name, config in (otelcol.get(kind) or {}).items()
    }
    assert set(declared) == set(ALLOWED_COMPONENT_KEYS)
    for component, config in declared.items():
        assert _unknown_keys(config or {}, ALLOWED_COMPONENT_KEYS[component]) == [], component
    assert set(otelcol) == {"extensions", "receivers", "processors", "exporters", "service"}
    assert set(otelcol["service"]) <= {"extensions", "pipelines", "telemetry"}


def test_collector_pipeline_wiring(otelcol: dict[str, Any], services: dict[str, Any]) -> None:
    service = otelcol["service"]
    assert service["extensions"] == ["health_check"]
    assert service["pipelines"] == {
        "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["kafka"]}
    }
    for protocol in ("grpc", "http"):
        assert otelcol["receivers"]["otlp"]["protocols"][protocol]["endpoint"].startswith("0.0.0.0:")
    # The compose service mounts this very file where its command points.
    collector = services["otel-collector"]
    config_path = next(arg.split("=", 1)[1] for arg in collector["command"] if arg.startswith("--config="))
    assert ("./collector/otelcol.yaml", config_path) in set(_bind_mounts(collector))
    assert "KAFKA_BROKERS" in otelcol["exporters"]["kafka"]["brokers"]


def test_collector_request_limits_match_builtin_receiver(
    otelcol: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    try:
        from llmops.config import Settings
    except ImportError:
        pytest.fail("llmops.config must be importable")
    limit = Settings().receiver.max_request_bytes
    protocols = otelcol["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["max_request_body_size"] == limit
    assert protocols["grpc"]["max_recv_msg_size_mib"] * 1024 * 1024 == limit


# -- Grafana provisioning --------------------------------------------------------------


def test_datasource_provisioning(
    services: dict[str, Any], example_env: dict[str, str], defaults: dict[str, Any]
) -> None:
    document = _load_yaml(DATASOURCE)
    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    assert source["uid"] == "llmops-clickhouse"
    assert source["type"] == "grafana-clickhouse-datasource"
    json_data = source["jsonData"]
    assert "database" not in json_data
    grafana_env = {k: _interpolate(str(v), example_env) for k, v in services["grafana"]["environment"].items()}
    resolved = {}
    for key in ("host", "port", "protocol", "username", "defaultDatabase"):
        variable = _env_reference(json_data[key])
        assert variable in grafana_env, f"jsonData.{key} uses {variable}, not set for the grafana service"
        resolved[key] = grafana_env[variable]
    password_variable = _env_reference(source["secureJsonData"]["password"])
    assert grafana_env[password_variable] == example_env["CLICKHOUSE_GRAFANA_PASSWORD"]
    assert resolved["username"] == example_env["CLICKHOUSE_GRAFANA_USER"]
    assert resolved["defaultDatabase"] == defaults["database"]
    assert resolved["host"] == "clickhouse"
    assert {"native": 9000, "http": 8123}[resolved["protocol"]] == int(resolved["port"])
    plugin = grafana_env["GF_PLUGINS_PREINSTALL_SYNC"]
    assert re.fullmatch(r"grafana-clickhouse-datasource@\d+\.\d+\.\d+", plugin), plugin


def test_dashboard_provider_points_at_mounted_json(services: dict[str, Any]) -> None:
    document = _load_yaml(DASHBOARD_PROVIDER)
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    mounts = dict(_bind_mounts(services["grafana"]))
    assert mounts["./dashboards/json"] == provider["options"]["path"]
    assert mounts["./dashboards/provisioning"] == "/etc/grafana/provisioning"
    assert (ROOT / "dashboards" / "json").is_dir()


# -- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_installs_the_package_as_non_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base) for base in bases), bases
    runs = " ".join(re.findall(r"^RUN\s+(.*(?:\\\n.*)*)", text, flags=re.MULTILINE))
    assert re.search(r"pip install -c requirements\.lock \.(\s|$)", runs), "package not installed from pyproject"
    assert "pip install -e" not in runs
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert re.search(r'^ENTRYPOINT \["llmops"\]', text, flags=re.MULTILINE)
    ignored = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    assert {".git", ".venv", ".env"} <= ignored
    needed = {
        "pyproject.toml",
        "requirements.lock",
        "README.md",
        "llmops",
        "collector",
        "processors",
        "sinks",
        "schemas",
    }
    assert not needed & ignored


# -- ClickHouse users ------------------------------------------------------------------


def _run_init_script(tmp_path: Path, **users: str) -> subprocess.CompletedProcess[str]:
    """Run the init script with a stand-in `clickhouse` that records the SQL it is given."""
    fake = tmp_path / "bin" / "clickhouse"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\necho "$@" > "$CAPTURE.args"\ncat > "$CAPTURE"\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "CAPTURE": str(tmp_path / "statements.sql"),
        "CLICKHOUSE_USER": "admin",
        "CLICKHOUSE_PASSWORD": "admin-pw",
        "LLMOPS_CLICKHOUSE_DATABASE": "llmops",
        **users,
    }
    return subprocess.run(["bash", str(CLICKHOUSE_INIT)], env=env, capture_output=True, text=True, timeout=30)


def test_clickhouse_init_script_creates_both_users(tmp_path: Path, example_env: dict[str, str]) -> None:
    users = {
        key: example_env[key] for key in example_env if key.startswith(("CLICKHOUSE_PIPELINE", "CLICKHOUSE_GRAFANA"))
    }
    users["CLICKHOUSE_PIPELINE_PASSWORD"] = "it's-a\\test"  # quoting must survive quotes and backslashes
    result = _run_init_script(tmp_path, **users)
    assert result.returncode == 0, result.stderr
    sql = (tmp_path / "statements.sql").read_text(encoding="utf-8")
    statements = [" ".join(s.split()) for s in sql.split(";") if s.strip()]
    writer, reader = users["CLICKHOUSE_PIPELINE_USER"], users["CLICKHOUSE_GRAFANA_USER"]
    grants = {
        s.rsplit(" TO ", 1)[1]: s
        for s in statements
        if s.startswith("GRANT ") and "CREATE DATABASE" not in s and "FUNCTION" not in s
    }
    assert (
        f"GRANT CREATE FUNCTION ON *.* TO {users['CLICKHOUSE_PIPELINE_USER']}" in statements
    )  # the migrations' SQL functions
    assert "INSERT" in grants[writer] and "CREATE TABLE" in grants[writer] and " ON llmops.* " in grants[writer]
    assert "INSERT" not in grants[reader] and grants[reader].startswith("GRANT SELECT")
    assert any(
        s.startswith(f"CREATE USER IF NOT EXISTS {reader} ") and "llmops_grafana_readonly" in s for s in statements
    )
    assert any("readonly = 1" in s and "max_execution_time = 60 CHANGEABLE_IN_READONLY" in s for s in statements)
    assert "BY 'it\\'s-a\\\\test'" in sql
    assert "--user admin --password admin-pw" in (tmp_path / "statements.sql.args").read_text(encoding="utf-8")

    # ClickHouse's own parser (chDB, the same engine version family as the pinned server)
    # accepts every statement; run in a child process so no chDB state is shared.
    check = textwrap.dedent(
        """
        import sys, chdb
        for statement in sys.stdin.read().split("\\x00"):
            chdb.query("EXPLAIN AST " + statement, "CSV")
        """
    )
    parsed = subprocess.run(
        [sys.executable, "-c", check], input="\x00".join(statements), capture_output=True, text=True, timeout=60
    )
    assert parsed.returncode == 0, parsed.stderr[-2000:]


def test_clickhouse_init_script_rejects_unsafe_names(tmp_path: Path) -> None:
    result = _run_init_script(
        tmp_path,
        CLICKHOUSE_PIPELINE_USER="llmops; DROP DATABASE llmops",
        CLICKHOUSE_PIPELINE_PASSWORD="x",
        CLICKHOUSE_GRAFANA_USER="grafana",
        CLICKHOUSE_GRAFANA_PASSWORD="y",
    )
    assert result.returncode != 0
    assert "not a plain identifier" in result.stderr
    assert not (tmp_path / "statements.sql").exists()
