"""Settings: precedence, validation, and the generated reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.cli import build_parser, main
from llmops.config import Settings, load_settings
from llmops.config_docs import render_reference
from llmops.stack import child_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LLMOPS_"):
            monkeypatch.delenv(name)


def test_empty_config_equals_the_defaults() -> None:
    assert load_settings() == Settings()


def test_flags_beat_env_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "llmops.toml"
    toml.write_text('log_level = "info"\n[kafka]\npartitions = 7\ntopic = "from-file"\ngroup_id = "file-group"\n')
    monkeypatch.setenv("LLMOPS_KAFKA__TOPIC", "from-env")
    monkeypatch.setenv("LLMOPS_KAFKA__GROUP_ID", "env-group")
    settings = load_settings({"kafka.group_id": "flag-group"}, toml)
    assert (settings.kafka.partitions, settings.kafka.topic, settings.kafka.group_id) == (7, "from-env", "flag-group")
    assert settings.log_level == "INFO"


def test_unknown_keys_and_bad_values_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "typo.toml"
    toml.write_text("[kafka]\npartitons = 3\n")
    with pytest.raises(ValidationError, match="partitons"):
        load_settings({}, toml)
    with pytest.raises(ValidationError, match="heartbeat"):
        load_settings({"kafka.session_timeout_s": 2.0, "kafka.heartbeat_interval_s": 3.0})
    monkeypatch.setenv("LLMOPS_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError):
        load_settings()
    assert main(["config", "show"]) == 2  # the CLI says what is wrong and exits 2


def test_consumer_timeouts_follow_the_broker_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LLMOPS_"):
            monkeypatch.delenv(key)
    embedded = load_settings().kafka  # no bootstrap: `llmops up` starts Tansu
    assert (embedded.kind, embedded.consumer_session_timeout_s, embedded.consumer_heartbeat_interval_s) == (
        "tansu",
        6.0,
        1.0,
    )
    # A flag merged over file and env (load_settings) still decides the kind.
    external = load_settings({"kafka.bootstrap": "kafka:9092"}).kafka
    assert (external.kind, external.consumer_session_timeout_s, external.consumer_heartbeat_interval_s) == (
        "kafka",
        30.0,
        3.0,
    )
    tests_tansu = load_settings({"kafka.bootstrap": "127.0.0.1:9", "kafka.broker_kind": "tansu"}).kafka
    assert tests_tansu.consumer_session_timeout_s == 6.0
    chosen = load_settings({"kafka.bootstrap": "kafka:9092", "kafka.session_timeout_s": 10.0}).kafka
    assert (chosen.consumer_session_timeout_s, chosen.consumer_heartbeat_interval_s) == (10.0, 3.0)
    assert load_settings({"kafka.session_timeout_s": 2.4}).kafka.consumer_heartbeat_interval_s == pytest.approx(
        0.8
    )  # kept below
    # `llmops up` hands its children the address of the Tansu it started, and the kind with it.
    monkeypatch.setattr(os, "environ", child_env({}, "127.0.0.1:9", embedded.kind))
    assert load_settings().kafka.consumer_session_timeout_s == 6.0


def test_embedded_dsn_lives_under_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path})
    assert settings.embedded_store and settings.clickhouse_dsn == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert not load_settings({"clickhouse.dsn": "http://u:p@ch:8123"}).embedded_store


def test_every_flag_has_help_naming_its_env_variable() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(subparsers, dict), subparsers
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest.startswith("set:"):
                assert "LLMOPS_" in (action.help or ""), (name, action.dest)


def test_generated_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == render_reference(), (
        "run: llmops config docs > docs/configuration.md"
    )
