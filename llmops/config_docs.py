"""The settings reference, generated from the settings model so docs never drift from code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmops.config import Settings

__all__ = ["render_reference"]


def _rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{dotted}."))
            continue
        env = "LLMOPS_" + "__".join(part.upper() for part in dotted.split("."))
        default = field.get_default(call_default_factory=True, validated_data={})
        rows.append((dotted, env, "unset" if default is None else str(default), field.description or ""))
    return rows


def render_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `llmops/config.py` (`llmops config docs`); a test keeps this file in step.",
        (
            "Precedence: command-line flags > environment variables > TOML file (`--config` or `LLMOPS_CONFIG`) "
            "> defaults."
        ),
        "In TOML, a dotted key `kafka.bootstrap` is `bootstrap` under `[kafka]`. Unknown keys are errors.",
        "",
        "| key | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{key}` | `{env}` | `{default}` | {text} |" for key, env, default, text in _rows(Settings)]
    return "\n".join(lines) + "\n"
