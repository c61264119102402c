"""Binance combined-stream frames -> v2 trade and quote records (../shared/formats.md: Binance mapping).

A frame that cannot become a valid record raises BadFrame with a short reason; the caller dead-letters it raw.
"""

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

EXCHANGE = "BINANCE"
# quote assets, longest first so that e.g. FDUSD wins over USD
QUOTE_ASSETS = sorted(
    ["USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "BTC", "ETH", "BNB", "EUR", "GBP", "TRY", "BRL", "AUD",
     "JPY", "USD"],
    key=len, reverse=True,
)
_MAX_INTEGER_DIGITS = 10  # decimal(18,8)
_SCALE = 8
LONG_MAX = 2**63 - 1  # Avro long
T = TypeVar("T")


class BadFrame(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Normalized:
    kind: str  # "trades" or "quotes"
    symbol: str
    record: dict[str, Any]


def split_symbol(symbol: str) -> tuple[str, str]:
    # Binance symbols are upper-case ASCII letters and digits; anything else cannot be a Kafka key or a table value
    if not (symbol.isascii() and symbol.isalnum() and symbol.upper() == symbol):
        raise BadFrame("bad_symbol", repr(symbol))
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise BadFrame("unknown_quote_asset", symbol)


def _field(data: dict[str, Any], key: str, kind: type[T]) -> T:
    if key not in data:
        raise BadFrame("missing_field", key)
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadFrame("mistyped_field", f"{key}={value!r}")
    return value


def _long(data: dict[str, Any], key: str, scale: int = 1) -> int:
    """An integer field that, times `scale` (milliseconds to microseconds), fits an Avro long."""
    value = _field(data, key, int)
    if not -LONG_MAX - 1 <= value * scale <= LONG_MAX:
        raise BadFrame("out_of_range", f"{key}={value!r}")
    return value


def _decimal(data: dict[str, Any], key: str, allow_zero: bool) -> Decimal:
    text = _field(data, key, str)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadFrame("not_a_decimal", f"{key}={text!r}") from None
    if not value.is_finite():
        raise BadFrame("not_a_decimal", f"{key}={text!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise BadFrame("not_positive", f"{key}={text!r}")
    _, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)  # only NaN and infinity have a letter for exponent
    if -exponent > _SCALE:
        raise BadFrame("too_many_decimals", f"{key}={text!r}")
    if len(digits) + exponent > _MAX_INTEGER_DIGITS:
        raise BadFrame("out_of_range", f"{key}={text!r}")
    return value.quantize(Decimal(1).scaleb(-_SCALE))


def _common(symbol: str, received_at_us: int) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "symbol": symbol,
        "exchange": EXCHANGE,
        "asset_class": "crypto",
        "ingestion_timestamp": received_at_us,
        "platform_sequence": None,
    }


def _trade(data: dict[str, Any], received_at_us: int) -> Normalized:
    symbol = _field(data, "s", str)
    base, quote = split_symbol(symbol)
    trade_id = _long(data, "t")
    buyer_is_maker = _field(data, "m", bool)
    record = _common(symbol, received_at_us) | {
        "trade_id": f"{EXCHANGE}-{trade_id}",
        "timestamp": _long(data, "T", 1000) * 1000,
        "price": _decimal(data, "p", allow_zero=False),
        "quantity": _decimal(data, "q", allow_zero=False),
        "currency": quote,
        "side": "SELL" if buyer_is_maker else "BUY",
        "trade_conditions": [],
        "source_sequence": trade_id,
        "vendor_data": {
            "event_time": str(_long(data, "E")),
            "is_buyer_maker": str(buyer_is_maker).lower(),
            "is_best_match": str(data.get("M", "")).lower(),
            "base_asset": base,
            "quote_asset": quote,
        },
    }
    return Normalized("trades", symbol, record)


def _book_ticker(data: dict[str, Any], received_at_us: int) -> Normalized:
    symbol = _field(data, "s", str)
    base, quote = split_symbol(symbol)
    update_id = _long(data, "u")
    # bookTicker carries event/transaction times only in some variants; otherwise the receive time is the best known
    time_key = next((key for key in ("T", "E") if key in data), None)
    event_ms = _long(data, time_key, 1000) if time_key else None
    vendor = {"base_asset": base, "quote_asset": quote, "time_source": "exchange" if event_ms else "received"}
    record = _common(symbol, received_at_us) | {
        "quote_id": f"{EXCHANGE}-{update_id}",
        "timestamp": event_ms * 1000 if event_ms else received_at_us,
        "bid_price": _decimal(data, "b", allow_zero=False),
        "bid_quantity": _decimal(data, "B", allow_zero=True),
        "ask_price": _decimal(data, "a", allow_zero=False),
        "ask_quantity": _decimal(data, "A", allow_zero=True),
        "currency": quote,
        "source_sequence": update_id,
        "vendor_data": vendor,
    }
    return Normalized("quotes", symbol, record)


def normalize(frame: str | bytes, received_at_us: int) -> Normalized:
    """One combined-stream frame -> one v2 record."""
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadFrame("not_json", str(error)) from None
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise BadFrame("not_a_stream_frame", "expected {\"stream\": ..., \"data\": {...}}")
    data = message["data"]
    if data.get("e") == "trade":
        return _trade(data, received_at_us)
    if "u" in data and "b" in data and "a" in data:
        return _book_ticker(data, received_at_us)
    raise BadFrame("unknown_event", str(data.get("e", message.get("stream"))))
