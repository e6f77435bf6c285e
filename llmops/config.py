"""One typed settings model for every command.

Precedence: command-line flags > LLMOPS_* environment variables > TOML file
(`--config`, or LLMOPS_CONFIG) > defaults. Nested keys use `__` in the
environment (LLMOPS_KAFKA__BOOTSTRAP) and tables in TOML ([kafka] bootstrap).
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "KafkaSettings",
    "ReceiverSettings",
    "ProcessorSettings",
    "ClickHouseSettings",
    "DriftSettings",
    "SqlEndpointSettings",
    "Settings",
    "load_settings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Consumer (session timeout, heartbeat interval) in seconds per broker kind; see KafkaSettings.broker_kind.
BROKER_KIND_TIMEOUTS: dict[str, tuple[float, float]] = {"tansu": (6.0, 1.0), "kafka": (30.0, 3.0)}


class KafkaSettings(_Section):
    bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers host:port[,host:port]. Unset: `llmops up` starts the embedded Tansu broker.",
    )
    topic: str = Field("otlp_spans", description="Topic holding OTLP trace batches (otlp_proto encoding).")
    dead_letter_topic: str = Field("otlp_spans_dlq", description="Topic receiving records that cannot be decoded or stored.")
    drift_topic: str = Field("llm_drift_signals", description="Keyed topic (by service) carrying drift signals to the drift stage.")
    partitions: int = Field(4, ge=1, description="Partitions for topics the pipeline creates.")
    replication_factor: int = Field(1, ge=1, description="Replication factor for topics the pipeline creates.")
    group_id: str = Field("llmops-processors", description="Consumer group of the processor workers.")
    broker_kind: Literal["tansu", "kafka"] | None = Field(
        None,
        description=(
            "Which broker the bootstrap address reaches; it picks the consumer timeouts below. "
            "Unset: `tansu` when `llmops up` starts the embedded broker (no bootstrap), `kafka` for any other address."
        ),
    )
    session_timeout_s: float | None = Field(
        None,
        ge=1.0,
        description=(
            "Consumer session timeout. Unset: 6 s on Tansu, which holds a group join for about half of it; "
            "30 s on Apache Kafka, room for a worker blocked on a slow ClickHouse insert before a rebalance."
        ),
    )
    heartbeat_interval_s: float | None = Field(
        None, gt=0, description="Consumer heartbeat interval, below the session timeout. Unset: 1 s on Tansu, 3 s on Apache Kafka."
    )
    embedded_max_rss_mib: int = Field(
        2048,
        ge=0,
        description="`llmops up` only: when the embedded broker's memory passes this (MiB), the stack drains it and starts "
        "it afresh, refusing OTLP for those seconds (Tansu's memory storage never frees a record). 0 = never.",
    )

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaSettings:
        if self.consumer_heartbeat_interval_s >= self.consumer_session_timeout_s:
            raise ValueError("heartbeat_interval_s must be below session_timeout_s")
        return self

    # Resolved at use, not stored: a bootstrap set later (a flag merged over the file and env) still decides.
    @property
    def kind(self) -> str:
        """The broker kind in force: broker_kind, else tansu for the embedded broker (no bootstrap), else kafka."""
        return self.broker_kind or ("tansu" if self.bootstrap is None else "kafka")

    @property
    def consumer_session_timeout_s(self) -> float:
        return self.session_timeout_s if self.session_timeout_s is not None else BROKER_KIND_TIMEOUTS[self.kind][0]

    @property
    def consumer_heartbeat_interval_s(self) -> float:
        if self.heartbeat_interval_s is not None:
            return self.heartbeat_interval_s
        return min(BROKER_KIND_TIMEOUTS[self.kind][1], self.consumer_session_timeout_s / 3)


class ReceiverSettings(_Section):
    listen: str = Field("127.0.0.1", description="Address the OTLP receiver and the SQL endpoint bind to.")
    grpc_port: int = Field(4317, ge=0, le=65535, description="OTLP/gRPC port (0 = pick a free port).")
    http_port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP port (0 = pick a free port).")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest accepted request body, after decompression (HTTP 413 above)."
    )
    max_record_bytes: int = Field(
        900_000,
        ge=10_000,
        description="Largest Kafka record written; bigger requests are split by resource/scope/span (Kafka's default message.max.bytes is 1 MB).",
    )
    producer_queue_max_kbytes: int = Field(
        262_144, ge=1024, description="Producer buffer; when full the receiver answers 429 / UNAVAILABLE."
    )
    producer_linger_ms: float = Field(5.0, ge=0, description="How long the producer waits to fill a batch.")
    delivery_timeout_s: float = Field(30.0, gt=0, description="Time limit for Kafka to acknowledge a request's records.")
    max_consumer_lag_records: int = Field(
        500,
        ge=0,
        description="Refuse new spans (429 + Retry-After / UNAVAILABLE) while the worker group is more than this many"
        " Kafka records behind on the spans topic; 0 = off. A record is at most max_record_bytes, so this also caps"
        " the backlog's bytes.",
    )
    lag_check_interval_s: float = Field(1.0, gt=0, description="How often the receiver measures the worker group's lag (in the background).")
    lag_check_timeout_s: float = Field(2.0, gt=0, description="Time limit of each broker call of a lag measurement.")
    lag_stale_after_s: float = Field(
        10.0, gt=0, description="A lag measurement older than this is unknown; unknown lag admits requests (the producer queue still bounds them)."
    )
    bearer_tokens: list[SecretStr] = Field(
        [],
        description="When set, every OTLP request needs `Authorization: Bearer <one of these>` (gRPC metadata"
        " `authorization`), else 401 / UNAUTHENTICATED. Env: LLMOPS_RECEIVER__BEARER_TOKENS='[\"t1\",\"t2\"]'.",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain) for OTLP/HTTP and OTLP/gRPC; with tls_key_file turns TLS on.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ReceiverSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both receiver.tls_cert_file and receiver.tls_key_file, or neither")
        if any(not token.get_secret_value() for token in self.bearer_tokens):
            raise ValueError("receiver.bearer_tokens must not contain an empty token")
        return self


class ProcessorSettings(_Section):
    batch_max_records: int = Field(32, ge=1, description="Kafka records per processing batch (one ClickHouse insert per table); bounds the worker's memory.")
    batch_max_wait_s: float = Field(0.5, gt=0, description="Longest a record waits for its batch to fill before the batch is processed as it is.")
    commit_interval_s: float = Field(
        1.0, gt=0, description="How often the worker commits the Kafka offsets of stored records; a worker killed between two commits leaves its next owner that much to read again (skipped by the fences of a shared store)."
    )
    pricing_file: Path | None = Field(None, description="Extra pricing catalog YAML; its entries override the built-in ones.")
    pricing_snapshot_file: Path | None = Field(
        None,
        description="Base price snapshot (genai-prices data JSON) written by `llmops pricing update`. Unset: <data_dir>/pricing-snapshot.json if it exists, else the snapshot the installed genai-prices ships. Never fetched by the worker.",
    )
    pricing_reload_s: float = Field(
        5.0, ge=0, description="How often the worker checks the pricing file and the snapshot for changes (0 = never: restart to reload)."
    )
    budgets_file: Path | None = Field(None, description="Budgets YAML; the worker writes budget_status from it periodically.")
    budget_interval_s: float = Field(60.0, gt=0, description="How often the worker recomputes budget status.")


class DriftSettings(_Section):
    enabled: bool = Field(True, description="Run the drift stage (repartitioned by service through Kafka).")
    window_s: int = Field(900, ge=10, description="Drift window length in event-time seconds.")
    lateness_s: float = Field(60.0, ge=0, description="The watermark trails the newest event time by this much.")
    idle_close_s: float = Field(30.0, gt=0, description="With no events for this long, wall-clock time advances the watermark.")
    reservoir_size: int = Field(1000, ge=50, description="Calls sampled per key and window (uniform bottom-k sample by call hash).")
    max_keys: int = Field(
        128, ge=1, description="Live drift keys kept; least recently used are evicted (counted). Memory: about 8 MiB per key at reservoir_size 1000."
    )
    history_windows: int = Field(96, ge=1, description="Closed windows per key merged into its reference (96 x 15 min = 24 h).")
    key_fields: list[str] = Field(
        ["model", "prompt_name", "prompt_version"],
        description="What splits drift keys besides the service: any of model, prompt_name, prompt_version.",
    )
    change_persist_s: float = Field(
        120.0, gt=0,
        description="A new model, prompt version or embedding model is a change event once it kept change_min_share of its key's calls this long (event time).",
    )
    change_min_share: float = Field(
        0.1, gt=0, le=1,
        description="Share of a key's calls (service and prompt name) that makes a value part of its traffic: new values below it are a mix, not a change.",
    )

    @field_validator("key_fields")
    @classmethod
    def _known_key_fields(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"model", "prompt_name", "prompt_version"}
        if unknown:
            raise ValueError(f"unknown drift key fields {sorted(unknown)}")
        return value


class ClickHouseSettings(_Section):
    dsn: str | None = Field(
        None,
        description="clickhouse-connect DSN, e.g. http://user:pass@host:8123. Unset: embedded chDB under <data_dir>/clickhouse.",
    )
    database: str = Field("llmops", description="Database holding the pipeline's tables.")
    insert_retries: int = Field(8, ge=0, description="Retries of a transient insert failure before the worker stops.")


class SqlEndpointSettings(_Section):
    port: int = Field(8123, ge=0, le=65535, description="Read-only ClickHouse-HTTP endpoint over the embedded store (0 = free port).")
    enabled: bool = Field(True, description="Serve the endpoint from the worker when the store is embedded chDB.")
    max_execution_time_s: float = Field(30.0, gt=0, description="Per-query time limit; the engine stops a query at it (TIMEOUT_EXCEEDED).")
    max_result_rows: int = Field(1_000_000, ge=1, description="Per-query result row limit; a bigger result is an error, not a truncation.")
    max_result_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Per-query result size limit in bytes (uncompressed blocks), an error past it.")
    max_memory_usage: int = Field(
        512 * 1024 * 1024, ge=1, description="Per-query memory limit in bytes, formatted output included (MEMORY_LIMIT_EXCEEDED past it)."
    )
    max_concurrent_queries: int = Field(2, ge=1, description="Queries run in parallel (one chDB handle each).")
    max_queued_queries: int = Field(8, ge=0, description="Queries that may wait for a free slot; more are refused at once with 503.")
    queue_timeout_s: float = Field(5.0, gt=0, description="How long a query waits for a free slot before a 503.")
    user: str = Field("default", description="User name clients send when `password` is set (basic auth, X-ClickHouse-User or `user`).")
    password: SecretStr | None = Field(
        None, description="Unset: no credentials asked. Set: every query needs `user` and this password (401 otherwise)."
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate (chain): serve the endpoint over HTTPS. Needs `tls_key_file`.")
    tls_key_file: Path | None = Field(None, description="PEM private key of `tls_cert_file`.")

    @model_validator(mode="after")
    def _tls_pair(self) -> SqlEndpointSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("sql.tls_cert_file and sql.tls_key_file go together")
        return self


class Settings(BaseSettings):
    """Everything configurable, with the defaults of the embedded stack."""

    model_config = SettingsConfigDict(
        env_prefix="LLMOPS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(Path(".llmops"), description="Where the embedded store (chDB) and run files live.")
    log_level: str = Field("WARNING", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    sql: SqlEndpointSettings = Field(default_factory=SqlEndpointSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN in use: the configured one, or the embedded chDB store under data_dir."""
        if self.clickhouse.dsn:
            return self.clickhouse.dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded_store(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb://")


def load_settings(overrides: dict[str, Any] | None = None, config_file: Path | None = None) -> Settings:
    """Build Settings from flags (`overrides`, dotted keys allowed), env and an optional TOML file."""
    if config_file is None and os.environ.get("LLMOPS_CONFIG"):
        config_file = Path(os.environ["LLMOPS_CONFIG"])
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        settings_cls = type("FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}})
    base = settings_cls()
    if not overrides:
        return base
    data = base.model_dump()
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return Settings.model_validate(data)
