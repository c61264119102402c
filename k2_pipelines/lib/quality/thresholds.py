"""The limits K2's data-quality checks hold data to; each one is configurable (Dagster: the `quality` resource)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    future_tolerance_seconds: float = 300.0  # event times may run this far ahead of the clock (skew)
    price_jump_band: float = 0.10  # a move this large between a symbol's consecutive prices is flagged
    max_gap_share: float = 0.01  # of a symbol's trade ids in a batch, missing from the sequence
    max_dead_letter_share: float = 0.01  # of a batch's messages
    freshness_minutes: float = 15.0  # the newest event may be this old while the feed delivers
    trading_opens_minute: int = 10 * 60  # ASX local time; prints outside normal hours are legal, and counted
    trading_closes_minute: int = 16 * 60 + 12  # after the closing auction


DEFAULTS = Thresholds()
