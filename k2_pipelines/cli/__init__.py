"""The `k2` command line: one module per command group, each registering its own subcommands. A group imports what
its commands need (Dagster, PyIceberg, ...) when they run, so that `k2 --help` and `k2 kafka status` start at once."""

import argparse
import sys

from k2_pipelines.cli import (
    api,
    asx,
    bench,
    demo,
    dev,
    dq,
    drain,
    gold,
    incidents,
    kafka,
    metrics,
    quarantine,
    query,
    replay,
    sample,
    spark,
    stream,
    tables,
    upkeep,
)
from k2_pipelines.dev.broker import BrokerError
from k2_pipelines.lib.spark.jars import SparkUnavailable
from k2_pipelines.lib.utils.maven import MavenError

GROUPS = (kafka, sample, stream, replay, drain, tables, asx, gold, metrics, dq, upkeep, quarantine, incidents, demo,
          query, api, dev, spark, bench)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="k2", description="K2 market-data lakehouse pipelines")
    commands = root.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (BrokerError, MavenError, SparkUnavailable) as error:
        print(f"k2: {error}", file=sys.stderr)
        return 2
