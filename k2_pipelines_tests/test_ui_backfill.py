"""A backfill launched the way the Dagster UI launches it, against a real webserver and daemon."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.compute as pc
import pytest

from k2_pipelines.lib.asx.sample import generate
from k2_pipelines.lib.catalog import load_k2_catalog
from k2_pipelines.lib.paths import CHECKOUT
from k2_pipelines.lib.tables import TRADES
from k2_pipelines_tests.conftest import free_port
from k2_pipelines_tests.helpers import lines_by_date

LAUNCH_BACKFILL = """mutation($names: [String!]) { launchPartitionBackfill(backfillParams: {partitionNames: $names,
  assetSelection: [{path: ["asx_trades"]}, {path: ["asx_quotes"]}, {path: ["asx_reference_data"]}], fromFailure: false})
  { __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
RUNS = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


@pytest.fixture
def dagster_dev(k2_home):
    home = k2_home / "dagster"
    home.mkdir()
    shutil.copyfile(CHECKOUT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = os.environ | {"DAGSTER_HOME": str(home)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=CHECKOUT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if "repositoriesOrError" in _graphql(port, "{ repositoriesOrError { __typename } }"):
                    break
            except OSError:
                time.sleep(1)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


@pytest.mark.timeout(400)
def test_backfill_from_the_ui_runs_once_over_the_range(k2_home, dagster_dev):
    landing = k2_home / "landing"
    generate(landing, ["BHP", "RIO"], 3, 3_000, 1.0, seed=5)
    launched = _graphql(dagster_dev, LAUNCH_BACKFILL, {"names": ["2014-03-10", "2014-03-11", "2014-03-12"]})
    assert launched["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["launchPartitionBackfill"]["backfillId"]

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = _graphql(dagster_dev, RUNS)["runsOrError"]["results"]
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
