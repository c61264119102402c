"""Generated Binance sessions in the recording format: several symbols, bursts, ids increasing per symbol, and
optional injected faults (gaps, duplicates, out-of-order frames, malformed frames, session resets).

The counts returned say exactly what was injected, so that tests can check what a drain finds: `gap_ids` trade ids
skipped, `out_of_order:<kind>` frames swapped with the previous frame of the same symbol and kind, `duplicates:<kind>`,
`resets` (a symbol's trade ids restart lower after a two-minute silence, below every id it used before: a new
session never reuses an (exchange, symbol, trade id) key, which would be a duplicate)."""

import json
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

START_PRICES = {"BTCUSDT": 91877.12, "ETHUSDT": 3120.55, "BNBUSDT": 612.3, "SOLUSDT": 142.17, "XRPUSDT": 0.5234}
FAULTS = ("gaps", "duplicates", "out_of_order", "malformed", "resets")
FAULT_RATE = 0.005  # of frames, per kind of fault asked for
RESET_SILENCE_MS = 120_000
RESET_DROP = 10_000_000  # a reset restarts this far below the session before (longer than any generated session)
START_MS = 1_763_683_200_000  # 2025-11-21 00:00 UTC

# (expected dead-letter reason, how the frame is broken)
MALFORMED = (
    ("not_json", lambda frame: frame[: len(frame) // 2]),
    ("missing_field",
     lambda frame: frame.replace('"p":', '"price":') if '"p":' in frame else frame.replace('"B":', '"bidQty":')),
    ("unknown_event", lambda frame: json.dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s": "BTCUSDT"}})),
    ("too_many_decimals", lambda frame: _set_price(frame, "1.123456789")),
    ("mistyped_field", lambda frame: frame.replace('"s":"', '"s":1,"x":"', 1)),
)


def _set_price(frame: str, price: str) -> str:
    message = json.loads(frame)
    message["data"]["p" if "p" in message["data"] else "b"] = price
    return json.dumps(message, separators=(",", ":"))


def trade_frame(symbol: str, trade_id: int, price: float, quantity: float, time_ms: int,
                buyer_is_maker: bool) -> dict[str, Any]:
    return {"stream": f"{symbol.lower()}@trade", "data": {
        "e": "trade", "E": time_ms + 1, "s": symbol, "t": trade_id, "p": f"{price:.8f}", "q": f"{quantity:.8f}",
        "T": time_ms, "m": buyer_is_maker, "M": True}}


def _book_ticker(symbol: str, update_id: int, price: float, spread: float, bid_qty: float,
                 ask_qty: float) -> dict[str, Any]:
    return {"stream": f"{symbol.lower()}@bookTicker", "data": {
        "u": update_id, "s": symbol, "b": f"{price - spread:.8f}", "B": f"{bid_qty:.8f}",
        "a": f"{price + spread:.8f}", "A": f"{ask_qty:.8f}"}}


def generate_session(out: Path, symbols: list[str], frames: int, seed: int,
                     faults: Collection[str] = frozenset()) -> Counter[str]:
    """Write `frames` recorded frames to `out`; returns counts of what was written, faults included."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
    rng = np.random.default_rng(seed)
    prices = {s: START_PRICES.get(s, 10 + rng.random() * 100) for s in symbols}
    trade_ids = {s: int(rng.integers(1_000_000_000, 5_000_000_000)) for s in symbols}
    session_starts = dict(trade_ids)
    update_ids = {s: int(rng.integers(10_000_000, 90_000_000_000)) for s in symbols}
    counts: Counter[str] = Counter()
    lines: list[tuple[int, str]] = []
    clock_ms = START_MS
    while len(lines) < frames:
        # bursts: a quiet gap, then a clump of events on one symbol
        clock_ms += int(rng.exponential(40))
        symbol = symbols[int(rng.integers(len(symbols)))]
        if "resets" in faults and rng.random() < FAULT_RATE / 10:  # the exchange restarts this symbol's numbering
            clock_ms += RESET_SILENCE_MS
            trade_ids[symbol] = session_starts[symbol] = (session_starts[symbol] - RESET_DROP
                                                          - int(rng.integers(1, 1000)))
            counts["resets"] += 1
        for _ in range(min(int(rng.geometric(0.3)), frames - len(lines))):
            clock_ms += int(rng.integers(0, 3))
            price = prices[symbol] = max(prices[symbol] * (1 + rng.normal(0, 0.0002)), 0.0001)
            if rng.random() < 0.4:
                skipped = int(rng.integers(1, 6)) if "gaps" in faults and rng.random() < FAULT_RATE else 0
                trade_ids[symbol] += 1 + skipped
                counts["gaps"] += skipped > 0
                counts["gap_ids"] += skipped
                message = trade_frame(symbol, trade_ids[symbol], price, float(rng.lognormal(-3, 1.5)), clock_ms,
                                      bool(rng.random() < 0.5))
                counts["trades"] += 1
            else:
                update_ids[symbol] += int(rng.integers(1, 4))
                message = _book_ticker(symbol, update_ids[symbol], price, price * 0.00005,
                                       float(rng.lognormal(0, 1)), float(rng.lognormal(0, 1)))
                counts["quotes"] += 1
            lines.append((clock_ms * 1000 + int(rng.integers(0, 1000)), json.dumps(message, separators=(",", ":"))))
    return _with_faults(out, lines, faults, rng, counts)


def _kind_and_symbol(frame: str) -> tuple[str, str]:
    data = json.loads(frame)["data"]
    return ("trades" if data.get("e") == "trade" else "quotes"), data["s"]


def _with_faults(out: Path, lines: list[tuple[int, str]], faults: Collection[str], rng: np.random.Generator,
                 counts: Counter[str]) -> Counter[str]:
    result: list[tuple[int, str, tuple[str, str] | None]] = []  # (received_at_us, frame, (kind, symbol) if swappable)
    for received_at_us, frame in lines:
        kind, symbol = _kind_and_symbol(frame)
        if "malformed" in faults and rng.random() < FAULT_RATE:
            reason, corrupt = MALFORMED[counts["malformed"] % len(MALFORMED)]
            counts[kind] -= 1
            counts["malformed"] += 1
            counts[f"malformed:{reason}"] += 1
            result.append((received_at_us, corrupt(frame), None))
            continue
        result.append((received_at_us, frame, (kind, symbol)))
        if "duplicates" in faults and rng.random() < FAULT_RATE:  # the exchange sends a valid frame twice
            result.append((received_at_us + 1, frame, None))  # not swapped: it is no sequence of its own
            counts["duplicates"] += 1
            counts[f"duplicates:{kind}"] += 1
            counts[kind] += 1
        # swapped with the frame before if that is the same symbol and kind (and not the same frame)
        elif "out_of_order" in faults and len(result) > 1 and result[-2][2] == (kind, symbol) \
                and result[-2][1] != frame and rng.random() < FAULT_RATE * 3:
            result[-1], result[-2] = result[-2], result[-1]
            result[-1] = (*result[-1][:2], None)  # moved once only
            counts["out_of_order"] += 1
            counts[f"out_of_order:{kind}"] += 1
    with open(out, "w", encoding="utf-8") as file:
        for received_at_us, frame, _ in result:
            file.write(json.dumps({"received_at_us": received_at_us, "frame": frame}) + "\n")
    counts["frames"] = len(result)
    return counts
