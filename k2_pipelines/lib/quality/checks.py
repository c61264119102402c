"""K2's data-quality checks: each a name, a severity and the Great Expectations expectations it stands for.

An expectation is held as its Great Expectations class name and arguments, and made GE's object only where GE
validates (lib/quality/validate.py): the write path's row rules judge the same expectations on Arrow without
importing Great Expectations, which costs every drain process about 3 s of start (measured with `python -X importtime`).

A check runs on one of the frames that lib/quality/frames.py builds from what an asset wrote:
- `rows`: the trades or quotes themselves, with derived columns (`price_move`, `listed_at`; for ASX
  `trading_date`, `local_date`, `local_minute`);
- `symbols`: a drained batch per symbol (rows written, trade ids missing from the sequence);
- `batch`: a drained batch as a whole (messages, dead letters, newest event and newest message ages);
- `days`: an ASX load per trading date (source lines, rows loaded, rows rejected).
ERROR checks (the rows written are wrong) block downstream assets when they fail, and so fail their run; WARN
checks (legal but unusual rows, and the feed's health: gaps, dead letters, freshness, which blocking cannot mend)
are shown and block nothing.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pyiceberg.schema import Schema

from k2_pipelines.lib.avro.iceberg import load_avro
from k2_pipelines.lib.quality.thresholds import Thresholds

ERROR, WARN = "ERROR", "WARN"
DECIMAL_MAX = 9_999_999_999.99999999  # decimal(18,8)
_SIDES = next(f["type"]["symbols"] for f in load_avro("trade_v2")["fields"] if f["name"] == "side")


# the Great Expectations classes K2's checks use
NOT_NULL, BETWEEN, IN_SET = ("ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeBetween",
                             "ExpectColumnValuesToBeInSet")
A_GREATER_THAN_B, PAIR_EQUAL = "ExpectColumnPairValuesAToBeGreaterThanB", "ExpectColumnPairValuesToBeEqual"
UNIQUE = "ExpectCompoundColumnsToBeUnique"


@dataclass(frozen=True)
class Expectation:
    """A Great Expectations expectation: its class in great_expectations.expectations, and its arguments."""

    type: str
    kwargs: dict[str, Any] = field(hash=False)

    def columns(self) -> list[str]:
        return columns_read(self.kwargs)


def columns_read(kwargs: Mapping[str, Any]) -> list[str]:
    """The columns an expectation of these arguments reads, in order (as K2 holds it, or as GE reports it)."""
    if "column" in kwargs:
        return [kwargs["column"]]
    return list(kwargs.get("column_list") or [kwargs["column_A"], kwargs["column_B"]])


def _expect(type_: str, **kwargs: Any) -> Expectation:
    return Expectation(type_, kwargs)


@dataclass(frozen=True)
class Check:
    name: str
    severity: str
    description: str
    frame: str
    expectations: tuple[Expectation, ...]


def required_fields(schema: Schema) -> tuple[str, ...]:
    return tuple(f.name for f in schema.fields if f.required)


def _not_null(schema: Schema) -> Check:
    required = required_fields(schema)
    return Check("required_fields", ERROR, f"required fields are not null ({', '.join(required)})", "rows",
                 tuple(_expect(NOT_NULL, column=c) for c in required))


def _positive(*columns: str) -> tuple[Expectation, ...]:
    return tuple(_expect(BETWEEN, column=c, min_value=0, strict_min=True, max_value=DECIMAL_MAX)
                 for c in columns)


def market_checks(kind: str, schema: Schema, id_column: str, thresholds: Thresholds, now: datetime) -> list[Check]:
    """Row checks of trades (kind "trades") or quotes ("quotes"), whatever the source."""
    latest = now + timedelta(seconds=thresholds.future_tolerance_seconds)
    checks = [_not_null(schema)]
    if kind == "trades":
        checks += [
            Check("price_and_quantity_positive", ERROR, "price and quantity are > 0 and fit decimal(18,8)", "rows",
                  _positive("price", "quantity")),
            Check("side_known", ERROR, f"side is one of {', '.join(_SIDES)}", "rows",
                  (_expect(IN_SET, column="side", value_set=_SIDES),)),
        ]
    else:
        checks += [
            Check("prices_positive", ERROR, "bid and ask prices are > 0 and fit decimal(18,8)", "rows",
                  _positive("bid_price", "ask_price")),
            Check("sizes_not_negative", ERROR, "bid and ask sizes are >= 0 and fit decimal(18,8)", "rows", tuple(
                _expect(BETWEEN, column=c, min_value=0, max_value=DECIMAL_MAX)
                for c in ("bid_quantity", "ask_quantity"))),
            Check("book_not_crossed", ERROR, "the bid is not above the ask (a crossed book)", "rows",
                  (_expect(A_GREATER_THAN_B, column_A="ask_price", column_B="bid_price",
                           or_equal=True),)),
        ]
    return [
        *checks,
        Check("not_in_future", ERROR, f"event time is at most {thresholds.future_tolerance_seconds:g} s ahead of the "
              "clock", "rows", (_expect(BETWEEN, column="timestamp", max_value=latest),)),
        Check("not_before_listing", ERROR, "event time is not before the instrument's listing", "rows",
              (_expect(A_GREATER_THAN_B, column_A="timestamp", column_B="listed_at",
                       or_equal=True, ignore_row_if="either_value_is_missing"),)),
        Check("unique_ids", ERROR, f"(exchange, symbol, {id_column}) is unique", "rows",
              (_expect(UNIQUE, column_list=["exchange", "symbol", id_column]),)),
        Check("price_jumps", WARN, f"a symbol's {'price' if kind == 'trades' else 'mid price'} moves at most "
              f"{thresholds.price_jump_band:.0%} from one {kind[:-1]} to the next", "rows",
              (_expect(BETWEEN, column="price_move", max_value=thresholds.price_jump_band),)),
    ]


def stream_checks(thresholds: Thresholds, gaps_tracked: bool) -> list[Check]:
    """Checks of a drained micro-batch as a whole (gaps only where ids are consecutive by design: trades)."""
    gaps = [
        Check("sequence_gaps", WARN, f"at most {thresholds.max_gap_share:.1%} of a symbol's trade ids in the batch "
              "are missing from its sequence", "symbols",
              (_expect(BETWEEN, column="missing_share", max_value=thresholds.max_gap_share),)),
    ]
    return (gaps if gaps_tracked else []) + [
        Check("dead_letter_rate", WARN, f"at most {thresholds.max_dead_letter_share:.1%} of the batch's messages are "
              "dead letters", "batch",
              (_expect(BETWEEN, column="dead_letter_share",
                       max_value=thresholds.max_dead_letter_share),)),
        Check("freshness", WARN, f"while the feed delivers, the newest event is at most "
              f"{thresholds.freshness_minutes:g} minutes old", "batch",
              (_expect(IN_SET, column="stale", value_set=[False]),)),
    ]


def asx_checks(thresholds: Thresholds) -> list[Check]:
    """Checks of an ASX load, per trading date."""
    return [
        Check("reconciliation", ERROR, "rows loaded + rows rejected = lines in the source files", "days",
              (_expect(PAIR_EQUAL, column_A="source_lines", column_B="accounted"),)),
        Check("trading_date_matches", ERROR, "each row's local (Sydney) date is its trading date", "rows",
              (_expect(PAIR_EQUAL, column_A="local_date", column_B="trading_date"),)),
        Check("out_of_hours", WARN, "prints outside normal trading hours (legal: pre-open and after-market)", "rows",
              (_expect(BETWEEN, column="local_minute",
                       min_value=thresholds.trading_opens_minute, max_value=thresholds.trading_closes_minute),)),
    ]


def reference_checks(schema: Schema) -> list[Check]:
    return [
        _not_null(schema),
        Check("unique_companies", ERROR, "(exchange, company_id) is unique", "rows",
              (_expect(UNIQUE, column_list=["exchange", "company_id"]),)),
        Check("listed_before_delisted", ERROR, "no delisting before its listing", "rows",
              (_expect(A_GREATER_THAN_B, column_A="delisting_date", column_B="listing_date",
                       or_equal=True, ignore_row_if="either_value_is_missing"),)),
    ]
