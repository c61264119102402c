"""`k2 sample asx|binance`: deterministic sample data, an ASX landing drop or a recorded Binance session."""

import argparse
from datetime import date
from pathlib import Path

from k2_pipelines.lib.asx.sample import DEFAULT_START, DEFAULT_SYMBOLS, generate


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    kinds = commands.add_parser("sample", help="generate sample data").add_subparsers(dest="kind", required=True)
    asx = kinds.add_parser("asx", help="an ASX landing drop (company_info.csv, trades/, quotes/)")
    asx.add_argument("--out", required=True)
    asx.add_argument("--days", type=int, default=5, help="trading days (weekdays)")
    asx.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS))
    asx.add_argument("--trades", type=int, default=200_000, help="about this many trades in all")
    asx.add_argument("--quotes-per-trade", type=float, default=2.0)
    asx.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help="first trading day (YYYY-MM-DD)")
    asx.add_argument("--seed", type=int, default=42)
    asx.add_argument("--bad-rows", type=int, default=0, help="replace this many trade lines by bad ones (to see "
                                                             "rejects)")
    asx.set_defaults(run=sample_asx)

    binance = kinds.add_parser("binance", help="a recorded Binance session (JSON lines), optionally with faults")
    binance.add_argument("--out", required=True)
    binance.add_argument("--symbols", default="BTCUSDT,ETHUSDT,BNBUSDT")
    binance.add_argument("--frames", type=int, default=100_000)
    binance.add_argument("--faults", default="", help="comma-separated: gaps,duplicates,out_of_order,malformed,resets")
    binance.add_argument("--seed", type=int, default=42)
    binance.set_defaults(run=sample_binance)


def sample_asx(args: argparse.Namespace) -> int:
    counts = generate(Path(args.out), args.symbols.split(","), args.days, args.trades, args.quotes_per_trade, args.seed,
                      args.start, args.bad_rows)
    print(f"wrote {counts['trades']:,} trades and {counts['quotes']:,} quotes for {counts['symbols']} symbols over "
          f"{counts['days']} trading days to {args.out}")
    return 0


def sample_binance(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.binance.sample import generate_session

    faults = set(filter(None, args.faults.split(",")))
    counts = generate_session(Path(args.out), args.symbols.split(","), args.frames, args.seed, faults)
    faults_seen = ", ".join(f"{k}={counts[k]}" for k in ("gaps", "duplicates", "out_of_order", "malformed", "resets"))
    print(f"wrote {counts['frames']:,} frames ({counts['trades']:,} trades, {counts['quotes']:,} quotes) to "
          f"{args.out}; faults: {faults_seen}")
    return 0
