"""What Spark needs beside pyspark's own jars to work on K2's tables, fetched once with Maven (`k2 spark fetch`)."""

import importlib.util
import re
from pathlib import Path

from k2_pipelines.lib.utils.maven import copy_dependencies
from k2_pipelines.settings import settings

POM = Path(__file__).with_name("pom.xml")
_VERSIONED = re.compile(r"-\d[^-]*(-[A-Za-z0-9.]+)?\.jar$")


class SparkUnavailable(RuntimeError):
    """pyspark is not installed (the `spark` extra), or its jars are not fetched."""


def pyspark_jars() -> Path:
    """pyspark's own jars, found without importing it (a K2 command that does not start Spark stays quick)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SparkUnavailable("pyspark is not installed: install K2 with its `spark` extra (uv sync --extra spark)")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def _artifact(jar: Path) -> str:
    return _VERSIONED.sub("", jar.name)


def fetch_jars(into: Path | None = None) -> Path:
    """The pom's jars in `into` (default K2_SPARK_JARS), less those pyspark ships in a version of its own: two
    versions of a class on one classpath fail at random."""
    into = into or settings().spark_jars
    if not any(into.glob("iceberg-spark-runtime-*.jar")):
        copy_dependencies(POM, into, "Spark's Iceberg runtime and JDBC drivers")
        shipped = {_artifact(jar) for jar in pyspark_jars().glob("*.jar")}
        for jar in into.glob("*.jar"):
            if _artifact(jar) in shipped:
                jar.unlink()
    return into


def jar_paths(into: Path | None = None) -> list[Path]:
    into = into or settings().spark_jars
    jars = sorted(into.glob("*.jar"))
    if not any(jar.name.startswith("iceberg-spark-runtime-") for jar in jars):
        raise SparkUnavailable(f"Spark's jars for K2 are not in {into}: run `k2 spark fetch`")
    return jars
