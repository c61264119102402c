"""OHLCV bars from trades: the one definition of a bar, for bars computed at query time (api.ohlcv) and for the gold
tables (lib/gold/ohlcv.py).

DuckDB computes the bars: it reads the Arrow trades without a copy, aggregates in parallel, and keeps decimals
exact (sums of decimal(18,8) are decimal(38,8); price * quantity is decimal(38,16), summed as decimal(38,16): up to
1e22 of notional per bar, and an overflow is an error, never a silently rounded number). arg_min/arg_max give open
and close by event time in one pass, without sorting. pyarrow's hash aggregates have no ordered first/last, and
polars' decimals are still unstable.
"""

# open and close by event time, ties broken by the trade id (compared as strings); the notional summed exactly in
# decimal (price widened first: DuckDB keeps decimal(18,8) * decimal(18,8) at 18 digits), then vwap as a double.
# time_bucket cuts in UTC: the engine's time zone.
_BARS_SQL = """
SELECT exchange, symbol, time_bucket($width, timestamp) AS bar_start,
       arg_min(price, (timestamp, trade_id)) AS open, max(price) AS high, min(price) AS low,
       arg_max(price, (timestamp, trade_id)) AS close, sum(quantity) AS volume,
       sum(price::DECIMAL(38, 8) * quantity) / sum(quantity) AS vwap, count(*) AS trade_count,
       min(timestamp) AS first_trade_at, max(timestamp) AS last_trade_at
FROM {source}
WHERE {where}
GROUP BY exchange, symbol, bar_start
ORDER BY bar_start, symbol, exchange"""


def bars_sql(where: str = "true", from_origin: bool = False) -> str:
    """The bars of the trades in `{source}` matching `where`, `$width` wide (an interval), in order of bar start.
    `{source}` and `$width` are the engine's (see engine.py); `where` is fixed SQL with parameters. From origin: bars
    start at `$origin` (a local midnight, say), not at multiples of the width since 2000-01-03 UTC."""
    bucket = "time_bucket($width, timestamp, $origin)" if from_origin else "time_bucket($width, timestamp)"
    return _BARS_SQL.replace("{where}", where).replace("time_bucket($width, timestamp)", bucket)
