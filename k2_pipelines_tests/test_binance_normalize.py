import json
from decimal import Decimal

import pytest

from k2_pipelines.lib.binance.normalize import BadFrame, normalize

TRADE = {"e": "trade", "E": 1763683200005, "s": "BTCUSDT", "t": 4242, "p": "91877.12000000", "q": "0.00123000",
         "T": 1763683200004, "m": True, "M": True}
TICKER = {"u": 400900217, "s": "ETHFDUSD", "b": "3120.55000000", "B": "31.21000000", "a": "3120.56000000", "A": "0"}


def _frame(data: dict, stream: str = "btcusdt@trade") -> str:
    return json.dumps({"stream": stream, "data": data})


def test_trade_maps_to_a_v2_trade():
    result = normalize(_frame(TRADE), received_at_us=1763683200009000)
    record = result.record
    assert (result.kind, result.symbol) == ("trades", "BTCUSDT")
    assert record["trade_id"] == "BINANCE-4242" and record["source_sequence"] == 4242
    assert record["timestamp"] == 1763683200004000  # trade time, microseconds
    assert record["price"] == Decimal("91877.12") and record["quantity"] == Decimal("0.00123")
    assert record["side"] == "SELL"  # the buyer was the maker: the aggressor sold
    assert record["currency"] == "USDT" and record["exchange"] == "BINANCE" and record["asset_class"] == "crypto"
    assert record["vendor_data"]["base_asset"] == "BTC" and record["vendor_data"]["event_time"] == "1763683200005"
    assert record["ingestion_timestamp"] == 1763683200009000
    assert normalize(_frame(TRADE | {"m": False}), 0).record["side"] == "BUY"


def test_book_ticker_maps_to_a_v2_quote():
    result = normalize(_frame(TICKER, "ethfdusd@bookTicker"), received_at_us=77)
    record = result.record
    assert result.kind == "quotes" and record["quote_id"] == "BINANCE-400900217"
    assert record["currency"] == "FDUSD"  # the longest matching quote asset
    assert record["ask_quantity"] == Decimal(0) and record["bid_price"] == Decimal("3120.55")
    assert record["timestamp"] == 77 and record["vendor_data"]["time_source"] == "received"
    assert normalize(_frame(TICKER | {"E": 1000}), 77).record["timestamp"] == 1_000_000


@pytest.mark.parametrize(
    "frame, reason",
    [
        ('{"stream": "x", "data": ', "not_json"),
        ('["not", "a", "frame"]', "not_a_stream_frame"),
        (_frame({"e": "kline", "s": "BTCUSDT"}), "unknown_event"),
        (_frame({k: v for k, v in TRADE.items() if k != "q"}), "missing_field"),
        (_frame(TRADE | {"t": "4242"}), "mistyped_field"),
        (_frame(TRADE | {"m": 1}), "mistyped_field"),
        (_frame(TRADE | {"p": "abc"}), "not_a_decimal"),
        (_frame(TRADE | {"p": "NaN"}), "not_a_decimal"),
        (_frame(TRADE | {"p": "0.00000000"}), "not_positive"),
        (_frame(TRADE | {"q": "-1"}), "not_positive"),
        (_frame(TRADE | {"p": "1.123456789"}), "too_many_decimals"),
        (_frame(TRADE | {"p": "12345678901"}), "out_of_range"),
        (_frame(TRADE | {"s": "BTCXYZ"}), "unknown_quote_asset"),
        (_frame(TICKER | {"b": "1e-9"}), "too_many_decimals"),
        (_frame(TICKER | {"E": "1000"}), "mistyped_field"),
    ],
)
def test_bad_frames_are_rejected_with_their_reason(frame, reason):
    with pytest.raises(BadFrame) as error:
        normalize(frame, 0)
    assert error.value.reason == reason


def test_the_largest_values_that_fit_decimal_18_8_pass():
    record = normalize(_frame(TRADE | {"p": "9999999999.99999999", "q": "0.00000001"}), 0).record
    assert record["price"] == Decimal("9999999999.99999999") and record["quantity"] == Decimal("0.00000001")
