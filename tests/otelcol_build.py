"""Build the OpenTelemetry Collector of collector/otelcol/ (upstream modules, one release) once and cache it.

``python tests/otelcol_build.py`` (what `make otelcol` runs) prints the binary's path; the tests call
``otelcol_binary()``. The cache key is the hash of go.mod, go.sum, main.go and the Go version, so an edit or a
new toolchain builds a new binary. Go's module downloads go to the normal GOMODCACHE, its compile cache to
GOCACHE. The build runs under ``nice``: on two shared cores the first one (kafka exporter and its franz-go
client, the gRPC/HTTP stacks) takes several minutes, later ones are a cache lookup.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.build_cache` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.build_cache import cached_build, inputs_digest

__all__ = ["MODULE_DIR", "OtelcolUnavailable", "otelcol_binary"]

MODULE_DIR = Path(__file__).resolve().parent.parent / "collector" / "otelcol"
BINARY_NAME = "llmops-otelcol"


class OtelcolUnavailable(RuntimeError):
    """No Go toolchain on this machine: the collector cannot be built."""


def otelcol_binary() -> Path:
    go = shutil.which("go")
    if go is None:
        raise OtelcolUnavailable("`go` is not on PATH: install Go 1.26+ to build the OpenTelemetry Collector")
    go_version = subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()
    digest = inputs_digest((MODULE_DIR / name for name in ("go.mod", "go.sum", "main.go")), [go_version])

    def build(out: Path) -> None:
        subprocess.run(
            ["nice", "-n", "10", go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(out / BINARY_NAME), "."],
            cwd=MODULE_DIR,
            check=True,
        )

    return cached_build(f"otelcol-{digest}", build) / BINARY_NAME


if __name__ == "__main__":
    print(otelcol_binary())
