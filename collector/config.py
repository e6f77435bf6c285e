"""The collector's config: the OTLP receiver (`[receiver]`) and the Kafka topics and consumer group (`[kafka]`).

`llmops.config.Settings` composes them with the other components' sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from processors.core.config import ConfigSection

__all__ = ["BROKER_KIND_TIMEOUTS", "KafkaSettings", "ReceiverSettings"]

# Consumer (session timeout, heartbeat interval) in seconds per broker kind; see KafkaSettings.broker_kind.
BROKER_KIND_TIMEOUTS: dict[str, tuple[float, float]] = {"tansu": (6.0, 1.0), "kafka": (30.0, 3.0)}


class KafkaSettings(ConfigSection):
    bootstrap: str | None = Field(
        None,
        description="Kafka bootstrap servers host:port[,host:port]. "
        "Unset: `llmops up` starts the embedded Tansu broker.",
    )
    topic: str = Field("otlp_spans", description="Topic holding OTLP trace batches (otlp_proto encoding).")
    dead_letter_topic: str = Field(
        "otlp_spans_dlq", description="Topic receiving records that cannot be decoded or stored."
    )
    drift_topic: str = Field(
        "llm_drift_signals", description="Keyed topic (by service) carrying drift signals to the drift stage."
    )
    agent_topic: str = Field(
        "agent_spans",
        description="Keyed topic (by trace id) carrying agent, tool and LLM spans to the agent-run stage.",
    )
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
        None,
        gt=0,
        description="Consumer heartbeat interval, below the session timeout. Unset: 1 s on Tansu, 3 s on Apache Kafka.",
    )
    embedded_max_rss_mib: int = Field(
        2048,
        ge=0,
        description="`llmops up` only: when the embedded broker's memory passes this (MiB), the stack drains it "
        "and starts it afresh, refusing OTLP for those seconds (Tansu's memory storage never frees a record). "
        "0 = never.",
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


class ReceiverSettings(ConfigSection):
    listen: str = Field("127.0.0.1", description="Address the OTLP receiver and the SQL endpoint bind to.")
    grpc_port: int = Field(4317, ge=0, le=65535, description="OTLP/gRPC port (0 = pick a free port).")
    http_port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP port (0 = pick a free port).")
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest accepted request body, after decompression (HTTP 413 above)."
    )
    max_record_bytes: int = Field(
        900_000,
        ge=10_000,
        description="Largest Kafka record written; bigger requests are split by resource/scope/span "
        "(Kafka's default message.max.bytes is 1 MB).",
    )
    producer_queue_max_kbytes: int = Field(
        262_144, ge=1024, description="Producer buffer; when full the receiver answers 429 / UNAVAILABLE."
    )
    producer_linger_ms: float = Field(5.0, ge=0, description="How long the producer waits to fill a batch.")
    delivery_timeout_s: float = Field(
        30.0, gt=0, description="Time limit for Kafka to acknowledge a request's records."
    )
    max_consumer_lag_records: int = Field(
        500,
        ge=0,
        description="Refuse new spans (429 + Retry-After / UNAVAILABLE) while the worker group is more than this many"
        " Kafka records behind on the spans topic; 0 = off. A record is at most max_record_bytes, so this also caps"
        " the backlog's bytes.",
    )
    lag_check_interval_s: float = Field(
        1.0, gt=0, description="How often the receiver measures the worker group's lag (in the background)."
    )
    lag_check_timeout_s: float = Field(2.0, gt=0, description="Time limit of each broker call of a lag measurement.")
    lag_stale_after_s: float = Field(
        10.0,
        gt=0,
        description="A lag measurement older than this is unknown; unknown lag admits requests "
        "(the producer queue still bounds them).",
    )
    bearer_tokens: list[SecretStr] = Field(
        [],
        description="When set, every OTLP request needs `Authorization: Bearer <one of these>` (gRPC metadata"
        ' `authorization`), else 401 / UNAUTHENTICATED. Env: LLMOPS_RECEIVER__BEARER_TOKENS=\'["t1","t2"]\'.',
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) for OTLP/HTTP and OTLP/gRPC; with tls_key_file turns TLS on."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ReceiverSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both receiver.tls_cert_file and receiver.tls_key_file, or neither")
        if any(not token.get_secret_value() for token in self.bearer_tokens):
            raise ValueError("receiver.bearer_tokens must not contain an empty token")
        return self
