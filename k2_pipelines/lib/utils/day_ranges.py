"""Days grouped into runs of consecutive days: one Dagster run per run of partitions, and how a message shows them."""

from collections.abc import Iterable
from datetime import date, timedelta


def consecutive_day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """(first, last) of each run of consecutive days, in order."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and day - ranges[-1][1] == timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges
