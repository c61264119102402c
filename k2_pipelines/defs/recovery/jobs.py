import dagster as dg

# cases 1 and 2: once Kafka, the catalog or the warehouse is back, one drain of each table (with its checks)
catch_up_after_outage = dg.define_asset_job(
    "catch_up_after_outage",
    selection=dg.AssetSelection.assets("binance_trades", "binance_quotes"),
    executor_def=dg.in_process_executor,
    tags={"dagster/priority": "10"},  # ahead of the routine drains in the run queue: it ends an incident
    description="Runbook: drain what piled up in Kafka while a dependency was down (launched by the health sensors; "
                "the incident is closed when it succeeds)",
)
