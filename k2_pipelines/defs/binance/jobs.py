import dagster as dg

DRAIN_TAG = "k2/drain"  # dagster.yaml limits runs to one per value: drains of one table never overlap

drain_jobs = {
    table: dg.define_asset_job(
        f"drain_binance_{table}",
        selection=dg.AssetSelection.assets(f"binance_{table}"),
        tags={DRAIN_TAG: table},
        description=f"Drain one micro-batch of Binance {table} from Kafka into Iceberg",
    )
    for table in ("trades", "quotes")
}
