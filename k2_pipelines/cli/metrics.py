"""`k2 metrics serve`: the table-level metrics (Iceberg, Kafka lag) and the upkeep textfiles for Prometheus."""

import threading

from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.drain.drain import quotes_target, trades_target
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.metrics import metrics_dir, serve_metrics
from k2_pipelines.lib.metrics.tables import TablesCollector
from k2_pipelines.settings import bootstrap_servers


def serve(host: str, port: int, trades_topic: str | None, quotes_topic: str | None) -> int:
    trades_topic, quotes_topic = trades_topic or Topics.trades, quotes_topic or Topics.quotes
    collector = TablesCollector(load_k2_catalog, bootstrap_servers(),
                                [trades_target(trades_topic), quotes_target(quotes_topic)])
    serve_metrics(port, collector, addr=host)
    print(f"metrics of K2's tables, {trades_topic} and {quotes_topic} lag, and {metrics_dir()}/*.prom at "
          f"http://{host}:{port}/metrics", flush=True)
    try:
        threading.Event().wait()  # the server's thread serves until the process is stopped
    except KeyboardInterrupt:
        pass
    finally:
        collector.close()
    return 0

