"""Fetch Apache Kafka's broker jars from Maven Central once (deploy/kafka/pom.xml) and cache the classpath.

``python tests/kafka_jars.py`` (what `make kafka-jars` runs) prints the classpath directory; the tests call
``kafka_classpath()``. Maven keeps its downloads in ~/.m2 as usual; ``mvn dependency:copy-dependencies`` then
copies the runtime jars to ``~/.cache/llmops/kafka-<version>-<hash of the pom>/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.build_cache` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.build_cache import cached_build, inputs_digest

__all__ = ["KafkaUnavailable", "POM", "kafka_classpath", "kafka_version"]

POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


class KafkaUnavailable(RuntimeError):
    """No JDK or no Maven on this machine: Apache Kafka cannot be run."""


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert match, f"{POM} has no <kafka.version>"
    return match.group(1)


def kafka_classpath() -> str:
    """``dir/*``: the java -cp argument holding every jar the broker needs."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise KafkaUnavailable(f"`{tool}` is not on PATH: install OpenJDK 17+ and Maven to run Apache Kafka")

    def fetch(out: Path) -> None:
        subprocess.run(
            [
                "mvn",
                "--batch-mode",
                "--quiet",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out}",
            ],
            check=True,
        )

    jars = cached_build(f"kafka-{kafka_version()}-{inputs_digest([POM])}", fetch)
    return f"{jars}/*"


if __name__ == "__main__":
    print(kafka_classpath())
