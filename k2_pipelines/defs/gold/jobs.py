import dagster as dg

from k2_pipelines.defs.gold.partitions import utc_days

build_ohlcv = dg.define_asset_job(
    "build_ohlcv",
    selection=dg.AssetSelection.groups("gold"),
    partitions_def=utc_days,
    description="Rebuild the OHLCV bars (1m, 1h, 1d) of a UTC day or a range of days from market_data.trades",
)
