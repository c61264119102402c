"""`k2 metrics serve`: the table-level metrics (Iceberg, Kafka lag) and the upkeep textfiles for Prometheus."""

import argparse
import threading

from k2_pipelines.settings import bootstrap_servers


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    actions = commands.add_parser("metrics", help="Prometheus metrics").add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="table metrics from Iceberg, consumer lag from Kafka, and the upkeep "
                                             "textfiles, computed on each scrape")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 for a Prometheus in another container")
    serve.add_argument("--port", type=int, default=9465)
    serve.add_argument("--trades-topic", help="the topic drained into market_data.trades (lag)")
    serve.add_argument("--quotes-topic", help="the topic drained into market_data.quotes (lag)")
    serve.set_defaults(run=metrics_serve)


def metrics_serve(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.binance.producer import Topics
    from k2_pipelines.lib.drain.drain import quotes_target, trades_target
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.metrics import metrics_dir, serve_metrics
    from k2_pipelines.lib.metrics.tables import TablesCollector

    trades_topic, quotes_topic = args.trades_topic or Topics.trades, args.quotes_topic or Topics.quotes
    collector = TablesCollector(load_k2_catalog, bootstrap_servers(),
                                [trades_target(trades_topic), quotes_target(quotes_topic)])
    serve_metrics(args.port, collector, addr=args.host)
    print(f"metrics of K2's tables, {trades_topic} and {quotes_topic} lag, and {metrics_dir()}/*.prom at "
          f"http://{args.host}:{args.port}/metrics", flush=True)
    try:
        threading.Event().wait()  # the server's thread serves until the process is stopped
    except KeyboardInterrupt:
        pass
    finally:
        collector.close()
    return 0
