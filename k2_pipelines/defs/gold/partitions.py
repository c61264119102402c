from datetime import timedelta

import dagster as dg

from k2_pipelines.defs.asx.partitions import asx_trading_days

# bars are cut by UTC day. Sydney is ahead of UTC: the first trading date's pre-open and first hour fall in the UTC day
# before it, so the UTC days start one earlier. end_offset=1: today's bars, while the day's trades arrive.
utc_days = dg.DailyPartitionsDefinition(
    start_date=(asx_trading_days.start - timedelta(days=1)).strftime("%Y-%m-%d"), timezone="UTC", end_offset=1
)
