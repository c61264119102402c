import os

import dagster as dg

from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.defs.asx.sensors import RANGE_END_TAG, RANGE_START_TAG, asx_landing_sensor
from k2_pipelines.lib.asx.sample import DEFAULT_START, generate, trading_days


def _tick(landing, cursor=None):
    context = dg.build_sensor_context(cursor=cursor, resources={"asx_landing": AsxLandingResource(path=str(landing))})
    return asx_landing_sensor(context)


def test_new_drop_requests_one_run_for_its_date_range_then_nothing(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, ["BHP", "RIO"], 3, 2_000, 1.0, seed=3)
    days = [d.isoformat() for d in trading_days(DEFAULT_START, 3)]
    first = _tick(landing)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags[RANGE_START_TAG] == days[0]
    assert first.run_requests[0].tags[RANGE_END_TAG] == days[-1]
    assert _tick(landing, first.cursor).run_requests == []


def test_changed_file_requests_only_its_dates_with_a_new_run_key(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, ["BHP"], 5, 2_000, 1.0, seed=3)
    days = trading_days(DEFAULT_START, 5)
    first = _tick(landing)
    # a corrected file holding only the third day
    path = landing / "trades" / "7078.csv"
    third = days[2].strftime("%m/%d/%Y").encode()
    path.write_bytes(
        b"".join(line + b"\r\n" for line in path.read_bytes().split(b"\r\n")[:-1] if line.startswith(third))
    )
    os.utime(path, ns=(1, 1))  # a new fingerprint even within the same clock tick
    second = _tick(landing, first.cursor)
    # the file used to hold all five days: all of them must be reloaded (rows disappeared from four)
    keys = {(r.tags.get(RANGE_START_TAG), r.tags.get(RANGE_END_TAG), r.partition_key) for r in second.run_requests}
    assert keys == {(days[0].isoformat(), days[4].isoformat(), None)}
    assert {r.run_key for r in second.run_requests}.isdisjoint({r.run_key for r in first.run_requests})
    assert _tick(landing, second.cursor).run_requests == []


def test_weekend_splits_runs_and_dates_outside_the_partitions_are_skipped(tmp_path):
    from k2_pipelines.defs.asx.sensors import plan_runs

    state = {"a.csv": {"fp": "1", "dates": ["2013-12-31", "2014-03-13", "2014-03-14", "2014-03-17", "2099-01-01"]}}
    requests, skipped = plan_runs(state, {}, "2014-01-01", "2026-11-22")
    assert skipped == ["2013-12-31", "2099-01-01"]
    assert [(r.tags.get(RANGE_START_TAG), r.partition_key) for r in requests] == [
        ("2014-03-13", None),
        (None, "2014-03-17"),
    ]


def test_a_broken_file_still_gets_its_dates_loaded(tmp_path):
    """The run, not the sensor, reports what is wrong with a file: the sensor only needs its dates."""
    landing = tmp_path / "landing"
    generate(landing, ["BHP"], 2, 1_000, 1.0, seed=3)
    first = _tick(landing)
    (landing / "trades" / "9999.csv").write_bytes(b"03/12/2014,\xff\xfe,,\r\n03/12/2014,1\r\n")
    second = _tick(landing, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["2014-03-12"]
    assert _tick(landing, second.cursor).run_requests == []


def test_todays_trading_date_is_a_partition():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from k2_pipelines.defs.asx.partitions import asx_trading_days

    today = datetime.now(ZoneInfo("Australia/Sydney")).date().isoformat()
    assert asx_trading_days.get_last_partition_key() == today
