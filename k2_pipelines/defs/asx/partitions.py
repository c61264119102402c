import os

import dagster as dg

from k2_pipelines.lib.asx.layouts import TIMEZONE

# partition keys are ASX trading dates (exchange-local days)
asx_trading_days = dg.DailyPartitionsDefinition(
    start_date=os.environ.get("K2_ASX_FIRST_DAY", "2014-01-01"), timezone=TIMEZONE
)
