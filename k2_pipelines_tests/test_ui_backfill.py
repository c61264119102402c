"""A backfill launched the way the Dagster UI launches it, against a real webserver and daemon."""

import time

import pyarrow.compute as pc
import pytest

from k2_pipelines.lib.asx.sample import generate
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines_tests.helpers import lines_by_date
from k2_pipelines_tests.ui_helpers import dagster_dev, graphql

LAUNCH_BACKFILL = """mutation($names: [String!]) { launchPartitionBackfill(backfillParams: {partitionNames: $names,
  assetSelection: [{path: ["asx_trades"]}, {path: ["asx_quotes"]}, {path: ["asx_reference_data"]}], fromFailure: false})
  { __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""


@pytest.fixture
def dagster_port(k2_home):
    with dagster_dev(k2_home) as port:
        yield port


@pytest.mark.timeout(400)
def test_backfill_from_the_ui_runs_once_over_the_range(k2_home, dagster_port):
    landing = k2_home / "landing"
    generate(landing, ["BHP", "RIO"], 3, 3_000, 1.0, seed=5)
    launched = graphql(dagster_port, LAUNCH_BACKFILL, {"names": ["2014-03-10", "2014-03-11", "2014-03-12"]})
    assert launched["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["launchPartitionBackfill"]["backfillId"]

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = graphql(dagster_port, RUNS)["runsOrError"]["results"]
        backfill_runs = [r for r in runs if {"key": "dagster/backfill", "value": backfill_id} in r["tags"]]
        # the landing sensor may load the same new files meanwhile: wait for every run to end
        if backfill_runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            break
        time.sleep(2)
    assert [r["status"] for r in backfill_runs] == ["SUCCESS"]  # one run for the whole range
    tags = {t["key"]: t["value"] for t in backfill_runs[0]["tags"]}
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
        "2014-03-10", "2014-03-12")
    assert all(r["status"] == "SUCCESS" for r in runs)

    trades = load_k2_catalog().load_table(TRADES.identifier).scan().to_arrow()
    assert trades.num_rows == sum(lines_by_date(landing / "trades").values())
    assert pc.count_distinct(trades["trade_id"]).as_py() == trades.num_rows
