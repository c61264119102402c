import json

import dagster as dg
from confluent_kafka import KafkaException

from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint


def lag(stored: dict[int, int], marks: dict[int, tuple[int, int]]) -> int:
    return sum(max(high - stored.get(partition, low), 0) for partition, (low, high) in marks.items())


@dg.sensor(
    jobs=list(drain_jobs.values()),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a drain of a table whenever its topic has messages beyond the offsets stored in Iceberg; "
                "the run key is those offsets, so one range is never launched twice",
)
def binance_lag_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource,
                       binance_kafka: BinanceKafkaResource) -> dg.SensorResult | dg.SkipReason:
    catalog = iceberg.catalog()
    requests, notes = [], []
    for table, job in drain_jobs.items():
        target = binance_kafka.target(table)
        reader = binance_kafka.reader(target)
        try:
            marks = reader.watermarks()
        except KafkaException as error:
            notes.append(f"cannot read the offsets of {target.topic}: {error}")
            continue
        finally:
            reader.close()
        stored = stored_checkpoint(catalog.load_table(target.table.identifier), target.topic).offsets
        behind = lag(stored, marks)
        notes.append(f"{target.topic}: lag {behind}")
        if behind:
            requests.append(dg.RunRequest(run_key=f"{table}:{json.dumps(stored, sort_keys=True)}", job_name=job.name))
    return dg.SensorResult(run_requests=requests) if requests else dg.SkipReason("; ".join(notes))
