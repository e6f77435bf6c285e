"""One typed settings model for every command, composed of the components' own config models.

Each component owns its section: collector/config.py (`receiver`, `kafka`),
processors/config.py (`processor`), processors/drift/config.py (`drift`), processors/agents/config.py (`agents`),
sinks/clickhouse/config.py (`clickhouse`); the SQL endpoint's (`sql`) is here.

Precedence: command-line flags > LLMOPS_* environment variables > TOML file
(`--config`, or LLMOPS_CONFIG) > defaults. Nested keys use `__` in the
environment (LLMOPS_KAFKA__BOOTSTRAP) and tables in TOML ([kafka] bootstrap).
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from collector.config import KafkaSettings, ReceiverSettings
from processors.agents.config import AgentSettings
from processors.config import ProcessorSettings
from processors.core.config import ConfigSection
from processors.drift.config import DriftSettings
from sinks.clickhouse.config import ClickHouseSettings

__all__ = ["SqlEndpointSettings", "Settings", "load_settings"]


class SqlEndpointSettings(ConfigSection):
    port: int = Field(
        8123, ge=0, le=65535, description="Read-only ClickHouse-HTTP endpoint over the embedded store (0 = free port)."
    )
    enabled: bool = Field(True, description="Serve the endpoint from the worker when the store is embedded chDB.")
    max_execution_time_s: float = Field(
        30.0, gt=0, description="Per-query time limit; the engine stops a query at it (TIMEOUT_EXCEEDED)."
    )
    max_result_rows: int = Field(
        1_000_000, ge=1, description="Per-query result row limit; a bigger result is an error, not a truncation."
    )
    max_result_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Per-query result size limit in bytes (uncompressed blocks), an error past it.",
    )
    max_memory_usage: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Per-query memory limit in bytes, formatted output included (MEMORY_LIMIT_EXCEEDED past it).",
    )
    max_concurrent_queries: int = Field(2, ge=1, description="Queries run in parallel (one chDB handle each).")
    max_queued_queries: int = Field(
        8, ge=0, description="Queries that may wait for a free slot; more are refused at once with 503."
    )
    queue_timeout_s: float = Field(5.0, gt=0, description="How long a query waits for a free slot before a 503.")
    user: str = Field(
        "default",
        description="User name clients send when `password` is set (basic auth, X-ClickHouse-User or `user`).",
    )
    password: SecretStr | None = Field(
        None,
        description="Unset: no credentials asked. Set: every query needs `user` and this password (401 otherwise).",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain): serve the endpoint over HTTPS. Needs `tls_key_file`."
    )
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
    agents: AgentSettings = Field(default_factory=AgentSettings)
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
        settings_cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}}
        )
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
