"""Jars fetched with Maven from a pom of K2's: the Kafka broker's, and what Spark needs to work on K2's tables."""

import shutil
import subprocess
from pathlib import Path


class MavenError(RuntimeError):
    """Maven is missing or could not fetch the jars, with its output."""


def copy_dependencies(pom: Path, into: Path, what: str) -> None:
    """The pom's runtime dependencies (transitive ones too) copied into `into`."""
    if not shutil.which("mvn"):
        raise MavenError(f"Maven (mvn) is needed once to fetch {what} (apt-get install maven)")
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={into}",
         "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise MavenError(f"fetching {what} with Maven failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
