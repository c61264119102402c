import os

import dagster as dg

from k2_pipelines.lib.asx.layouts import TIMEZONE

# partition keys are ASX trading dates (exchange-local days); end_offset=1: today's drop can load after the close
asx_trading_days = dg.DailyPartitionsDefinition(
    start_date=os.environ.get("K2_ASX_FIRST_DAY", "2014-01-01"), timezone=TIMEZONE, end_offset=1
)
