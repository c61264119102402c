"""The Dagster UI driven in headless Chromium against a real webserver and daemon: what an operator sees and does."""

import csv
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from k2_pipelines_tests.ui_helpers import Screenshots, chromium_page, dagster_dev

K2_ASSETS = ["asx_trades", "asx_quotes", "asx_reference_data", "binance_trades", "binance_quotes"]
PARTITION = "2014-03-10"  # the first trading date of the `landing` drop
RUN_DEADLINE_MS = 240_000  # a run on a loaded two-core machine starts three Python processes


@pytest.fixture
def dagster_url(k2_home, landing):
    with dagster_dev(k2_home) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def artifacts(tmp_path) -> Path:
    return Path(os.environ["K2_TEST_ARTIFACTS"]) / "ui_chromium" if "K2_TEST_ARTIFACTS" in os.environ \
        else tmp_path / "artifacts"


@pytest.mark.timeout(400)
def test_the_ui_shows_the_assets_and_materializes_a_partition(dagster_url, landing, artifacts):
    with open(landing / "company_info.csv", newline="") as info:
        companies = len(list(csv.DictReader(info)))

    with chromium_page(dagster_url) as page, Screenshots(page, artifacts, "ui_chromium") as shots:
        # 1. the global lineage, every group expanded, shows the K2 assets
        page.set_viewport_size({"width": 1600, "height": 1600})  # tall enough for both groups, expanded
        page.goto("/asset-groups")
        expect(page.get_by_text("Global asset lineage", exact=True)).to_be_visible()
        graph_settings = page.get_by_role("button", name="settings", exact=True)  # the graph's own menu
        graph_settings.click()
        page.get_by_role("menuitem", name="Expand all groups").click()
        graph_settings.click()  # closes the menu again
        expect(page.get_by_role("menuitem", name="Collapse all groups")).to_be_hidden()
        for asset in K2_ASSETS:
            expect(page.get_by_text(asset, exact=True)).to_be_visible()
        shots.take("asset-lineage")
        page.set_viewport_size({"width": 1600, "height": 1000})

        # ... and an asset's Checks tab lists its checks
        page.goto("/assets/asx_trades")
        page.get_by_role("tab", name="Checks").click()
        for check in ("unique_ids", "reconciliation"):
            expect(page.get_by_text(check, exact=True).first).to_be_visible()
        shots.take("asx-trades-checks")

        # 2. Materialize one partition from the asset page
        page.goto("/assets/asx_reference_data")
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize asx_reference_data")
        dialog.get_by_role("button", name="Show all partitions").click()  # 2014 is older than the default 90 days
        partitions = dialog.get_by_placeholder("ex: ")
        partitions.fill(PARTITION)
        partitions.press("Enter")
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        shots.take("materialize-dialog")
        dialog.get_by_role("button", name="Launch 1 run").click()

        launched = page.get_by_text(re.compile(r"^Launched run \w+$"))
        run_id = launched.inner_text().removeprefix("Launched run ")
        page.get_by_role("link", name="View", exact=True).click()
        expect(page).to_have_url(re.compile(f"/runs/{run_id}"))
        expect(page.get_by_text(f"partition: {PARTITION}", exact=True)).to_be_visible()
        # the run page follows the run live: wait for how it ended (the landing sensor loads the drop meanwhile)
        ended = page.get_by_text(re.compile("^(Success|Failure|Canceled)$")).first
        ended.wait_for(timeout=RUN_DEADLINE_MS)
        shots.take("run-ended")
        assert ended.inner_text() == "Success"

        # 3. the asset page shows what the latest load reported (the company count, whichever run loaded last)
        page.goto("/assets/asx_reference_data")
        rows_written = page.get_by_role("row").filter(has=page.get_by_text("rows_written", exact=True))
        expect(rows_written.get_by_role("cell").last).to_have_text(str(companies))
        expect(page.get_by_role("row").filter(has=page.get_by_text("table", exact=True))).to_contain_text(
            "market_data.reference_data")
        rows_written.scroll_into_view_if_needed()
        shots.take("asx-reference-data-metadata")
