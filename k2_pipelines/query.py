"""K2's query API: `from k2_pipelines.query import trades, ohlcv, ...` (see k2_pipelines.lib.query.api)."""

from k2_pipelines.lib.query.api import gold_ohlcv, ohlcv, quotes, snapshots, symbols, table_stats, trades
from k2_pipelines.lib.query.validate import QueryError

__all__ = ["QueryError", "gold_ohlcv", "ohlcv", "quotes", "snapshots", "symbols", "table_stats", "trades"]
