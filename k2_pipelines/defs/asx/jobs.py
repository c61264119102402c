import dagster as dg

from k2_pipelines.defs.asx.partitions import asx_trading_days

asx_load_job = dg.define_asset_job(
    "asx_load",
    selection=dg.AssetSelection.groups("asx"),
    partitions_def=asx_trading_days,
    description="Load ASX trading dates (a partition or a range) from the landing folder into Iceberg",
)
