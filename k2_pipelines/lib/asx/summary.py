"""What the ASX tables hold, by trading date, and what was rejected and why."""

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from k2_pipelines.lib.asx.layouts import EXCHANGE, TIMEZONE
from k2_pipelines.lib.iceberg.tables import QUOTES, REJECTS, TRADES


def rows_by_trading_date(catalog: Catalog) -> dict[str, dict[str, int]]:
    """{table: {trading date: rows}} for the ASX rows of trades and quotes."""
    result = {}
    for definition in (TRADES, QUOTES):
        timestamps = catalog.load_table(definition.identifier).scan(
            row_filter=EqualTo("exchange", EXCHANGE), selected_fields=("timestamp",)
        ).to_arrow()["timestamp"]
        local_dates = pc.strftime(timestamps.cast(pa.timestamp("us", tz=TIMEZONE)), format="%Y-%m-%d")
        counts = ({c["values"].as_py(): c["counts"].as_py() for c in local_dates.value_counts()}
                  if len(local_dates) else {})
        result[definition.identifier] = dict(sorted(counts.items()))
    return result


def rejects_by_reason(catalog: Catalog) -> dict[tuple[str, str], int]:
    rejects = catalog.load_table(REJECTS.identifier).scan(selected_fields=("source", "reason")).to_arrow()
    return dict(Counter(zip(rejects["source"].to_pylist(), rejects["reason"].to_pylist())).most_common())
