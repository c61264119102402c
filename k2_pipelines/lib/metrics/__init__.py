"""K2's Prometheus metrics: the catalogue of every metric (catalogue.py) and the places that emit them: the stream
service (stream.py), `k2 metrics serve` (tables.py), upkeep textfiles (upkeep.py), Pushgateway pushes (push.py)."""

from k2_pipelines.lib.metrics.exposition import serve_metrics
from k2_pipelines.lib.metrics.stream import StreamCollector
from k2_pipelines.lib.metrics.upkeep import metrics_dir, write_upkeep_metrics

__all__ = ["StreamCollector", "metrics_dir", "serve_metrics", "write_upkeep_metrics"]
