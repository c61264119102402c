import dagster as dg

asx_load_job = dg.define_asset_job(
    "asx_load",
    selection=dg.AssetSelection.groups("asx"),
    description="Load ASX trading dates (a partition or a range) from the landing folder into Iceberg",
)
