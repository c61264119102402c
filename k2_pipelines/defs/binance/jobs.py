import dagster as dg

DRAIN_TAG = "k2/drain"  # dagster.yaml limits runs to one per value: drains of one table never overlap

drain_jobs = {
    table: dg.define_asset_job(
        f"drain_binance_{table}",
        selection=dg.AssetSelection.assets(f"binance_{table}"),
        tags={DRAIN_TAG: table},
        executor_def=dg.in_process_executor,  # the drain and its checks in the run's process: no step processes to start
        description=f"Drain one micro-batch of Binance {table} from Kafka into Iceberg",
    )
    for table in ("trades", "quotes")
}
