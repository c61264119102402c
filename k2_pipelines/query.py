"""K2's query API: `from k2_pipelines.query import trades, ohlcv, ...` (see k2_pipelines.lib.query.api)."""

from k2_pipelines.lib.query.api import (
    day_summary,
    gold_ohlcv,
    ohlcv,
    quotes,
    result_snapshot,
    snapshots,
    symbols,
    table_stats,
    trades,
)
from k2_pipelines.lib.query.fresh import Freshness, TailUnavailable, TailWarning, result_freshness
from k2_pipelines.lib.query.taq import trades_with_quotes
from k2_pipelines.lib.query.validate import NotFound, QueryError, QueryTimeout

__all__ = ["Freshness", "NotFound", "QueryError", "QueryTimeout", "TailUnavailable", "TailWarning", "day_summary",
           "gold_ohlcv", "ohlcv", "quotes", "result_freshness", "result_snapshot", "snapshots", "symbols",
           "table_stats", "trades", "trades_with_quotes"]
