import dagster as dg

from k2_pipelines.lib.asx.layouts import TIMEZONE
from k2_pipelines.settings import settings

# partition keys are ASX trading dates (exchange-local days); end_offset=1: today's drop can load after the close
asx_trading_days = dg.DailyPartitionsDefinition(
    start_date=settings().asx_first_day, timezone=TIMEZONE, end_offset=1
)
