import uuid

import pyarrow as pa

from k2_pipelines.lib.asx.fixed_width import parse_dates, parse_times
from k2_pipelines.lib.utils.uuids import random_uuids


def test_dates_are_strict_calendar_dates():
    valid, days = parse_dates(pa.array(["03/10/2014", "02/29/2016", "02/29/2014", "3/10/2014", "13/01/2014", "", "x"]))
    assert valid.tolist() == [True, True, False, False, False, False, False]
    assert days[:2].tolist() == [16139, 16860]


def test_times_need_three_decimals_and_real_clock_values():
    valid, micros = parse_times(
        pa.array(["07:57:14.754", "23:59:59.999", "24:00:00.000", "7:57:14.754", "07:57:14", "07:5a:14.754"])
    )
    assert valid.tolist() == [True, True, False, False, False, False]
    assert micros[:2].tolist() == [28_634_754_000, 86_399_999_000]


def test_uuids_are_distinct_version_4():
    values = random_uuids(10_000).to_pylist()
    assert len(set(values)) == len(values)
    assert all(uuid.UUID(v).version == 4 and str(uuid.UUID(v)) == v for v in values[:100])
