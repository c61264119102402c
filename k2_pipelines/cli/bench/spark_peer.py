"""The peer `k2 bench drain --peer spark` measures K2's drain against: Spark Structured Streaming (local[N]) draining a
trades topic into an Iceberg table of K2's trades schema, as a Spark user would write it. It runs as a process of its
own (`python -m k2_pipelines.cli.bench.spark_peer`), so that its time counts from process start as K2's does, and
prints what it did as JSON: messages written, and the CPU seconds of its JVM and of its Python."""

import argparse
import json
import os
import resource
import sys
from pathlib import Path

from k2_pipelines.lib.avro.iceberg import load_avro
from k2_pipelines.lib.iceberg.catalog import CATALOG_NAME, embedded_catalog_properties, load_catalog_at
from k2_pipelines.lib.iceberg.tables import TRADES, ensure_table
from k2_pipelines.lib.spark.session import spark_session


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a running process, from /proc (the JVM is pyspark's child, never waited for)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain_with_spark(bootstrap: str, topic: str, root: Path, cores: int) -> dict[str, float]:
    from pyspark.sql.avro.functions import from_avro
    from pyspark.sql.functions import col, expr

    catalog = load_catalog_at(root)
    columns = [field.name for field in ensure_table(catalog, TRADES).schema().fields]
    with spark_session(embedded_catalog_properties(root), f"local[{cores}]",
                       {"spark.driver.memory": "2g"}) as session:
        messages = (session.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
                    .option("subscribe", topic).option("startingOffsets", "earliest").load())
        # the Confluent framing: a magic byte and a 4-byte schema id before the Avro body
        body = expr("substring(value, 6, length(value) - 5)")
        trades = messages.select(from_avro(body, json.dumps(load_avro(TRADES.avro_schema))).alias("trade"))
        query = (trades.select(*(col(f"trade.{name}") for name in columns)).writeStream.format("iceberg")
                 .outputMode("append").trigger(availableNow=True)
                 .option("checkpointLocation", str(root / "spark-checkpoint"))
                 # from_avro's columns are all nullable; the writer still refuses a null in a required column
                 .option("check-nullability", "false").toTable(f"{CATALOG_NAME}.{TRADES.identifier}"))
        query.awaitTermination()
        written = session.sql(f"SELECT count(*) FROM {TRADES.identifier}").collect()[0][0]
        jvm = session.sparkContext._jvm
        assert jvm is not None
        jvm_cpu = _cpu_seconds(jvm.java.lang.ProcessHandle.current().pid())
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"messages": written, "jvm_cpu_seconds": jvm_cpu, "python_cpu_seconds": own.ru_utime + own.ru_stime}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark_peer")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--root", type=Path, required=True, help="the peer's own embedded catalog")
    parser.add_argument("--cores", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(drain_with_spark(args.bootstrap, args.topic, args.root, args.cores)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
