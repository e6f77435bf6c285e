"""A small genai-prices snapshot file (the data.json format `llmops pricing update` reads) for tests.

Hand-written in the upstream format (`prices/data.json`: a list of providers with their models,
match clauses and prices), so a test can tell the file's prices from the packaged ones.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["snapshot_json", "write_snapshot"]


def snapshot_json(prices: dict[tuple[str, str], tuple[str, str]]) -> bytes:
    """One provider entry per provider id, one model per (provider id, model id): (input, output) USD/1M."""
    providers: dict[str, dict] = {}
    for (provider_id, model_id), (inp, out) in prices.items():
        provider = providers.setdefault(
            provider_id,
            {
                "id": provider_id,
                "name": provider_id,
                "api_pattern": f"https://api\\.{provider_id}\\.example",
                "models": [],
            },
        )
        provider["models"].append(
            {"id": model_id, "match": {"equals": model_id}, "prices": {"input_mtok": inp, "output_mtok": out}}
        )
    return json.dumps(list(providers.values())).encode()


def write_snapshot(path: Path, prices: dict[tuple[str, str], tuple[str, str]]) -> None:
    path.write_bytes(snapshot_json(prices))
