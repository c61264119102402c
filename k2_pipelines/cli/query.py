"""`k2 query`: trades, quotes, trades against quotes, bars, symbols and snapshots from the command line, as table,
CSV, JSON or Parquet."""

import argparse
import json
import sys
import warnings
from contextlib import nullcontext

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    query = commands.add_parser("query", help="query trades, quotes and bars, now or as of a snapshot")
    kinds = query.add_subparsers(dest="kind", required=True)
    for kind, help_text in (("trades", "trades of symbols over a time range"),
                            ("quotes", "best bid/ask quotes of symbols over a time range"),
                            ("ohlcv", "OHLCV bars computed from the trades (--gold: read from the gold tables)"),
                            ("taq", "trades with the quote prevailing at each, its mid and spread, and the mid after "
                                    "each markout horizon")):
        ranged = kinds.add_parser(kind, help=help_text)
        ranged.add_argument("--symbol", action="append", required=True, help="repeat for several symbols")
        ranged.add_argument("--start", required=True, help="ISO 8601, UTC unless it says otherwise (inclusive)")
        ranged.add_argument("--end", required=True, help="ISO 8601 (exclusive)")
        ranged.add_argument("--limit", type=int, default=1000 if kind != "ohlcv" else 100_000)
        ranged.add_argument("--as-of", help="a snapshot id (see `k2 query snapshots`) or an ISO 8601 time")
        _output(ranged)
    kinds.choices["trades"].add_argument("--newest-first", action="store_true", help="the latest --limit rows")
    kinds.choices["quotes"].add_argument("--newest-first", action="store_true", help="the latest --limit rows")
    kinds.choices["ohlcv"].add_argument("--interval", default="1m", help="1m, 5m, 1h or 1d (gold: 1m, 1h, 1d)")
    kinds.choices["ohlcv"].add_argument("--gold", action="store_true", help="read market_data.ohlcv_<interval>")
    for kind in ("trades", "quotes", "ohlcv"):
        kinds.choices[kind].add_argument(
            "--fresh", nargs="?", const="on", choices=["on", "strict"],
            help="with the messages in Kafka not yet drained (strict: fail if Kafka cannot be read, instead of a "
                 "warning); what the tail held goes to standard error")
    kinds.choices["taq"].add_argument("--tolerance", default="5s",
                                      help="how much older than a trade its quote may be (default 5s; us, ms, s, m, h)")
    kinds.choices["taq"].add_argument("--markout", action="append",
                                      help="a markout horizon such as 500ms or 1m; repeat for several (default 1s, "
                                           "5s and 60s)")
    listed = kinds.add_parser("symbols", help="the symbols a table holds")
    listed.add_argument("--as-of", help="a snapshot id or an ISO 8601 time")
    snapshots = kinds.add_parser("snapshots", help="a table's snapshots (what --as-of can name)")
    for parser in (listed, snapshots):
        parser.add_argument("--table", default="trades", help="trades, quotes, ohlcv_1m, ... (default trades)")
        _output(parser)
    query.set_defaults(run=run_query)


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--out", help="write to this file (needed for parquet) instead of standard output")


def run_query(args: argparse.Namespace) -> int:
    from k2_pipelines.query import QueryError, TailWarning, result_freshness

    try:
        if args.format == "parquet" and not args.out:
            raise QueryError("--format parquet needs --out FILE")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TailWarning)
            result = _result(args)
        _write(result, args.format, args.out)
    except QueryError as error:
        print(f"k2 query: {error}", file=sys.stderr)
        return 2
    for warning in caught:
        if issubclass(warning.category, TailWarning):
            print(f"k2 query: warning: {warning.message}", file=sys.stderr)
        else:  # not K2's: as Python would have shown it
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    held = result_freshness(result)
    if held is not None and held.warning is None:
        spans = ", ".join(f"[{p}] {held.tail_from[p]}..{held.tail_to[p]}" for p in sorted(held.tail_to))
        print(f"k2 query: {held.table_rows:,} rows from snapshot {held.snapshot_id}, {held.tail_rows:,} from "
              f"{held.topic} offsets {spans} ({held.tail_messages:,} messages not yet drained"
              f"{'' if held.complete else ', the tail cut short by its bounds'})", file=sys.stderr)
    return 0


def _result(args: argparse.Namespace) -> pa.Table:
    from k2_pipelines import query
    from k2_pipelines.lib.query.fresh import Fresh

    if args.kind == "symbols":
        return query.symbols(args.table, args.as_of)
    if args.kind == "snapshots":
        return query.snapshots(args.table)
    ranged = (args.symbol, args.start, args.end)
    if args.kind == "taq":
        from k2_pipelines.lib.query.taq import DEFAULT_MARKOUTS

        return query.trades_with_quotes(*ranged, tolerance=args.tolerance, markouts=args.markout or DEFAULT_MARKOUTS,
                                        limit=args.limit, as_of=args.as_of)
    fresh: Fresh = "strict" if args.fresh == "strict" else args.fresh == "on"
    if args.kind == "ohlcv":
        if args.gold:
            if fresh:
                raise query.QueryError("--fresh computes bars with the trades not yet drained: not with --gold")
            return query.gold_ohlcv(*ranged, interval=args.interval, as_of=args.as_of, limit=args.limit)
        return query.ohlcv(*ranged, interval=args.interval, as_of=args.as_of, limit=args.limit, fresh=fresh)
    events = query.trades if args.kind == "trades" else query.quotes
    return events(*ranged, limit=args.limit, as_of=args.as_of, newest_first=args.newest_first, fresh=fresh)


def _write(table: pa.Table, form: str, out: str | None) -> None:
    from k2_pipelines.lib.query.formats import csv_rows, plain_rows

    if form == "parquet":
        pq.write_table(table, out)
        return
    with open(out, "w", newline="") if out else nullcontext(sys.stdout) as handle:
        if form == "json":
            json.dump(plain_rows(table), handle, indent=1)
            handle.write("\n")
        elif form == "csv":
            handle.writelines(chunk.decode() for chunk in csv_rows(table))
        else:
            handle.write(as_text(table) + "\n")


def as_text(table: pa.Table) -> str:
    """The table in aligned columns, as `k2 query` prints it."""
    from k2_pipelines.lib.query.formats import plain_rows

    return _aligned(table.column_names, plain_rows(table))


def _aligned(columns: list[str], rows: list[dict]) -> str:
    cells = [list(columns)] + [["" if r[c] is None else r[c] if isinstance(r[c], str) else json.dumps(r[c])
                                for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, f"({len(rows):,} row{'' if len(rows) == 1 else 's'})"])
