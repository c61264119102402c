from dataclasses import fields

import dagster as dg

from k2_pipelines.lib.quality.thresholds import DEFAULTS, Thresholds


class QualityResource(dg.ConfigurableResource):
    """The limits K2's data-quality checks hold data to (lib/quality/thresholds.py); set per run in the launchpad."""

    future_tolerance_seconds: float = DEFAULTS.future_tolerance_seconds
    price_jump_band: float = DEFAULTS.price_jump_band
    max_gap_share: float = DEFAULTS.max_gap_share
    max_dead_letter_share: float = DEFAULTS.max_dead_letter_share
    freshness_minutes: float = DEFAULTS.freshness_minutes
    trading_opens_minute: int = DEFAULTS.trading_opens_minute
    trading_closes_minute: int = DEFAULTS.trading_closes_minute
    # dead letters no replay can land yet at which the dead-letter sensor asks a human for a fix
    dead_letters_for_incident: int = 1_000

    def thresholds(self) -> Thresholds:
        return Thresholds(**{f.name: getattr(self, f.name) for f in fields(Thresholds)})


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"quality": QualityResource()})
