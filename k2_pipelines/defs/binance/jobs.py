import dagster as dg

from k2_pipelines.defs.tags import DRAIN_TAG

drain_jobs = {
    table: dg.define_asset_job(
        f"drain_binance_{table}",
        selection=dg.AssetSelection.assets(f"binance_{table}"),
        tags={DRAIN_TAG: table},
        # the drain and its checks in the run's process: no step processes to start
        executor_def=dg.in_process_executor,
        description=f"Drain one micro-batch of Binance {table} from Kafka into Iceberg",
    )
    for table in ("trades", "quotes")
}
