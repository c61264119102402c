"""Columnar normalization of many frames at once: the same outcome as normalize() frame by frame, much faster.

pyarrow parses a block of frames into columns, and vectorized checks pick the frames whose outcome is certain: a
well-formed trade or bookTicker with plain decimals in range. Their records are built as Arrow columns. Every other
frame (malformed, or only unusual: a null, an exponent in a price, a field pyarrow reads differently) is left to
normalize(), so one bad frame costs one slow frame and never changes what happens to its neighbours.
"""

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from k2_pipelines.lib.avro.arrow import join
from k2_pipelines.lib.binance.normalize import EXCHANGE, LONG_MAX, BadFrame, split_symbol
from k2_pipelines.lib.utils.arrow_decimals import from_unscaled
from k2_pipelines.lib.utils.uuids import random_uuids

_DATA_FIELDS = {"e": pa.string(), "E": pa.int64(), "s": pa.string(), "t": pa.int64(), "p": pa.string(),
                "q": pa.string(), "T": pa.int64(), "m": pa.bool_(), "M": pa.bool_(), "u": pa.int64(),
                "b": pa.string(), "B": pa.string(), "a": pa.string(), "A": pa.string()}
_PARSE = pa_json.ParseOptions(explicit_schema=pa.schema([("data", pa.struct(_DATA_FIELDS))]),
                              unexpected_field_behavior="ignore")
_SCALE_DIGITS, _INTEGER_DIGITS = 8, 10  # decimal(18,8)
_POWERS = 10 ** np.arange(_SCALE_DIGITS + 1, dtype=np.int64)
_PARSE_ROWS = 2048  # frames parsed at once: small enough that halving around a bad frame stays cheap
_MAX_MILLIS, _MIN_MILLIS = LONG_MAX // 1000, -((LONG_MAX + 1) // 1000)


@dataclass(frozen=True)
class NormalizedBatch:
    trades: pa.Table  # v2 trade records, one row per frame in trade_positions
    trade_positions: np.ndarray
    quotes: pa.Table
    quote_positions: np.ndarray


def _parse(frames: pa.Array, positions: np.ndarray) -> list[tuple[np.ndarray, pa.StructArray]]:
    """Parse the frames at `positions`; the frames that fail are left out. A failing block is split around the row
    pyarrow names in its error (only a hint: every piece is parsed again), or else halved."""
    if positions.size == 0:
        return []
    block = join(frames.take(pa.array(positions)), b"\n")
    offsets = np.frombuffer(block.buffers()[1], dtype=np.int32, count=len(block) + 1)
    text = block.buffers()[2].slice(offsets[0], offsets[-1] - offsets[0])
    try:
        table = pa_json.read_json(pa.BufferReader(text), parse_options=_PARSE,
                                  read_options=pa_json.ReadOptions(use_threads=False, block_size=text.size + 1))
        if table.num_rows == positions.size:  # one row per frame: `{...}{...}` on one line would make two
            return [(positions, table.column("data").combine_chunks())]
        row = None
    except pa.ArrowInvalid as error:
        named = re.search(r"in row (\d+)", str(error))
        row = int(named.group(1)) if named else None
    if positions.size == 1:
        return []
    pieces: tuple[np.ndarray, ...]
    if row is not None and row < positions.size:
        pieces = (positions[:row], positions[row : row + 1], positions[row + 1 :])
    else:
        pieces = (positions[: positions.size // 2], positions[positions.size // 2 :])
    return [parsed for piece in pieces for parsed in _parse(frames, piece)]


def _decimal(text: pa.Array, allow_zero: bool) -> tuple[pa.Array, np.ndarray]:
    """(decimal128(18,8) values, which rows are certain to be valid) of plain decimal strings: digits, then at most
    one dot followed by at most 8 digits, at most 10 digits before it. Others ("1e5", zero padding) are not certain."""
    text = text.fill_null("")
    length = pc.binary_length(text).to_numpy()
    dot = pc.find_substring(text, ".").to_numpy()
    dot = np.where(dot < 0, length, dot)
    decimals = np.maximum(length - dot - 1, 0)
    digits = pc.replace_substring(text, ".", "", max_replacements=1)
    plain = pc.ascii_is_decimal(digits).to_numpy(zero_copy_only=False) & (dot >= 1) & (dot <= _INTEGER_DIGITS) \
        & (decimals <= _SCALE_DIGITS)
    number = pc.cast(pc.if_else(pa.array(plain), digits, "0"), pa.int64()).to_numpy()
    unscaled = number * _POWERS[_SCALE_DIGITS - np.minimum(decimals, _SCALE_DIGITS)]
    valid = plain & ((unscaled >= 0) if allow_zero else (unscaled > 0))
    return from_unscaled(unscaled, 18, 8), valid


def _present(data: pa.StructArray, *keys: str) -> np.ndarray:
    return np.logical_and.reduce([data.field(key).is_valid().to_numpy(zero_copy_only=False) for key in keys])


def _millis_in_range(millis: pa.Array) -> np.ndarray:
    """Milliseconds that are still an Avro long in microseconds."""
    values = millis.fill_null(0).to_numpy()
    return (values >= _MIN_MILLIS) & (values <= _MAX_MILLIS)


def _symbols(symbols: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(base asset, quote asset, known) per row, splitting each distinct symbol once."""
    distinct = pc.unique(symbols.fill_null("")).to_pylist()
    split: dict[str, tuple[str, str] | None] = {}
    for symbol in distinct:
        try:
            split[symbol] = split_symbol(symbol)
        except BadFrame:
            split[symbol] = None
    index = pc.index_in(symbols.fill_null(""), value_set=pa.array(distinct, pa.string()))
    known = pa.array([split[symbol] is not None for symbol in distinct], pa.bool_()).take(index).to_numpy(
        zero_copy_only=False)
    base = pa.array([(split[s] or ("", ""))[0] for s in distinct], pa.string()).take(index)
    quote = pa.array([(split[s] or ("", ""))[1] for s in distinct], pa.string()).take(index)
    return base, quote, known


def _text_map(keys: list[str], values: list[pa.Array]) -> pa.Array:
    """A map column with the same keys, in order, on every row."""
    rows = len(values[0])
    interleaved = pa.concat_arrays([value.cast(pa.string()) for value in values]).take(
        pa.array((np.arange(len(keys)) * rows + np.arange(rows)[:, None]).ravel()))
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * len(keys))
    return pa.MapArray.from_arrays(offsets, pa.array(keys * rows, pa.string()), interleaved)


def _common(symbols: pa.Array, quote: pa.Array, received_at_us: int) -> dict[str, pa.Array]:
    rows = len(symbols)
    return {"message_id": random_uuids(rows), "symbol": symbols, "exchange": pa.repeat(EXCHANGE, rows),
            "asset_class": pa.repeat("crypto", rows), "currency": quote,
            "ingestion_timestamp": pa.repeat(pa.scalar(received_at_us, pa.int64()), rows),
            "platform_sequence": pa.nulls(rows, pa.int64())}


def _trades(data: pa.StructArray, received_at_us: int) -> tuple[pa.Table, np.ndarray]:
    """(records, which rows of `data` they are) of the frames certain to be good trades; `data` holds only frames
    with every trade field."""
    field = data.field
    base, quote, known = _symbols(field("s"))
    price, price_ok = _decimal(field("p"), allow_zero=False)
    quantity, quantity_ok = _decimal(field("q"), allow_zero=False)
    rows = np.flatnonzero(known & price_ok & quantity_ok & _millis_in_range(field("T")))
    take = pa.array(rows)
    trade_ids, maker, best = field("t").take(take), field("m").take(take), field("M").take(take)
    records = _common(field("s").take(take), quote.take(take), received_at_us) | {
        "trade_id": join(f"{EXCHANGE}-".encode(), trade_ids.cast(pa.string())).cast(pa.string()),
        "timestamp": pc.multiply(field("T").take(take), 1000),
        "price": price.take(take),
        "quantity": quantity.take(take),
        "side": pc.if_else(maker, "SELL", "BUY"),
        "trade_conditions": pa.ListArray.from_arrays(pa.array(np.zeros(len(rows) + 1, np.int32)),
                                                     pa.array([], pa.string())),
        "source_sequence": trade_ids,
        "vendor_data": _text_map(
            ["event_time", "is_buyer_maker", "is_best_match", "base_asset", "quote_asset"],
            [field("E").take(take), pc.if_else(maker, "true", "false"),
             pc.if_else(best, "true", "false").fill_null(""), base.take(take), quote.take(take)]),
    }
    return pa.table(records), rows


def _quotes(data: pa.StructArray, received_at_us: int) -> tuple[pa.Table, np.ndarray]:
    """(records, which rows of `data` they are) of the frames certain to be good bookTickers; `data` holds only
    frames with every bookTicker field."""
    field = data.field
    base, quote, known = _symbols(field("s"))
    checked = [_decimal(field(key), allow_zero=key in "BA") for key in "bBaA"]
    # the exchange's time if the frame has one (T, else E; 0 counts as none), else the receive time
    event_ms = pc.if_else(field("T").is_valid(), field("T"), field("E"))
    has_time = pc.not_equal(event_ms, 0).fill_null(False)
    rows = np.flatnonzero(known & np.logical_and.reduce([ok for _, ok in checked]) & _millis_in_range(event_ms))
    take = pa.array(rows)
    has_time = has_time.take(take)
    (bid, _), (bid_size, _), (ask, _), (ask_size, _) = checked
    records = _common(field("s").take(take), quote.take(take), received_at_us) | {
        "quote_id": join(f"{EXCHANGE}-".encode(), field("u").take(take).cast(pa.string())).cast(pa.string()),
        "timestamp": pc.if_else(has_time, pc.multiply(event_ms.take(take), 1000), received_at_us),
        "bid_price": bid.take(take), "bid_quantity": bid_size.take(take),
        "ask_price": ask.take(take), "ask_quantity": ask_size.take(take),
        "source_sequence": field("u").take(take),
        "vendor_data": _text_map(["base_asset", "quote_asset", "time_source"],
                                 [base.take(take), quote.take(take), pc.if_else(has_time, "exchange", "received")]),
    }
    return pa.table(records), rows


def normalize_batch(frames: pa.Array, received_at_us: int) -> NormalizedBatch:
    """The trades and quotes among `frames` (a string array) that are certain to be good; the frames at positions in
    neither are for normalize() to decide."""
    # What pyarrow and Python's json could read differently goes frame by frame: a JSON null (pyarrow cannot tell it
    # from a missing key), anything before the opening brace (a byte order mark). pyarrow itself refuses the rest.
    certain = pc.and_(pc.starts_with(frames, "{"), pc.invert(pc.match_substring(frames, "null"))).fill_null(False)
    candidates = np.flatnonzero(certain.to_numpy(zero_copy_only=False))
    parsed = [block for start in range(0, candidates.size, _PARSE_ROWS)
              for block in _parse(frames, candidates[start : start + _PARSE_ROWS])]
    positions = np.concatenate([rows for rows, _ in parsed]) if parsed else np.array([], np.int64)
    data = pa.concat_arrays([block for _, block in parsed]) if parsed else pa.array([], pa.struct(_DATA_FIELDS))
    # as in normalize(): an "e" of "trade" makes a trade; otherwise u, b and a make a bookTicker
    is_trade = pc.equal(data.field("e"), "trade").fill_null(False).to_numpy(zero_copy_only=False)
    trade_rows = np.flatnonzero(is_trade & _present(data, *"stpqTmE"))
    quote_rows = np.flatnonzero(~is_trade & _present(data, *"usbBaA"))
    trades, certain_trades = _trades(data.take(pa.array(trade_rows)), received_at_us)
    quotes, certain_quotes = _quotes(data.take(pa.array(quote_rows)), received_at_us)
    return NormalizedBatch(trades, positions[trade_rows[certain_trades]],
                           quotes, positions[quote_rows[certain_quotes]])
