"""`llmops drift pin`: freeze a drift key's current reference, for a key that exists, within a bounded time.

The key must have a closed drift window in the store (`llm_drift`): that is
what the drift stage pins, so pinning anything else would be a silent no-op.
A key that does not exist is refused with the nearest existing keys. The pin
goes to the running stack's broker (from the data dir's stack file) unless
--kafka says otherwise, and an unreachable broker fails in seconds, not never.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from llmops.config import Settings
from llmops.errors import UsageError, UserError
from llmops.stack_state import running_stack
from llmops.store import close_reader, open_reader

__all__ = ["drift_pin", "DELIVERY_TIMEOUT_S"]

DELIVERY_TIMEOUT_S = 4.0
_KEYS_SQL = (
    "SELECT DISTINCT service, model, prompt_name, prompt_version FROM llm_drift "
    "ORDER BY service, model, prompt_name, prompt_version"
)


def _render(key: tuple[str, ...]) -> str:
    return "/".join(key)


def existing_keys(settings: Settings) -> list[tuple[str, str, str, str]]:
    reader = open_reader(settings)
    try:
        return [tuple(row) for row in reader.query(_KEYS_SQL).result_rows]
    finally:
        close_reader(reader)


def drift_pin(
    settings: Settings, overrides: dict[str, Any], service: str, model: str, prompt_name: str, prompt_version: str
) -> str:
    key = (service, model, prompt_name, prompt_version)
    keys = existing_keys(settings)
    if key not in keys:
        if not keys:
            raise UserError(
                f"no drift key has a closed window in {settings.data_dir} yet: "
                "keys appear when their first drift window closes"
            )
        nearest = difflib.get_close_matches(_render(key), [_render(k) for k in keys], n=3, cutoff=0.0)
        raise UserError(
            f"no drift key {_render(key)} (service/model/prompt name/prompt version); nearest: {', '.join(nearest)}"
        )
    stack = running_stack(settings.data_dir)
    bootstrap = settings.kafka.bootstrap or (stack.kafka if stack is not None else None)
    if not bootstrap:
        raise UsageError(f"no `llmops up` runs on data dir {settings.data_dir}: start it, or pass --kafka HOST:PORT")
    topic = (
        stack.drift_topic if stack is not None and "kafka.drift_topic" not in overrides else settings.kafka.drift_topic
    )
    _send(bootstrap, topic, key, settings.log_level == "DEBUG")
    return f"pinned the current reference of {_render(key)}"


def _send(bootstrap: str, topic: str, key: tuple[str, str, str, str], debug: bool) -> None:
    from confluent_kafka import KafkaException, Producer

    from processors.core.drift.wire import pin_payload

    quiet = logging.getLogger("llmops.drift_pin.kafka")  # librdkafka's connection retries are not the user's news
    quiet.setLevel(logging.DEBUG if debug else logging.CRITICAL)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
            "socket.connection.setup.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
        },
        logger=quiet,
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    try:
        producer.produce(topic, key=key[0].encode(), value=pin_payload(*key), on_delivery=delivered)
    except KafkaException as exc:
        raise UserError(f"Kafka at {bootstrap} refused the pin: {exc}") from exc
    remaining = producer.flush(DELIVERY_TIMEOUT_S + 1)
    if remaining or failures:
        reason = failures[0] if failures else "no answer"
        raise UserError(
            f"Kafka at {bootstrap} did not acknowledge the pin within {DELIVERY_TIMEOUT_S:.0f} s ({reason}): "
            "is the broker running? check --kafka"
        )
