"""The ASX CSV layouts (../shared/formats.md) and how each maps onto a v2 record."""

from dataclasses import dataclass


@dataclass(frozen=True)
class NumericColumn:
    source: str  # column in the CSV
    target: str  # v2 field
    allow_zero: bool  # quote sizes may be zero; prices and trade volumes may not


@dataclass(frozen=True)
class CsvLayout:
    kind: str  # "trades" or "quotes": the landing sub-folder and the Iceberg table
    columns: tuple[str, ...]
    numeric: tuple[NumericColumn, ...]
    id_field: str

    @property
    def asset(self) -> str:
        return f"asx_{self.kind}"


TRADES = CsvLayout(
    kind="trades",
    columns=("Date", "Time", "Price", "Volume", "Qualifiers", "Venue", "BuyerID"),
    numeric=(NumericColumn("Price", "price", False), NumericColumn("Volume", "quantity", False)),
    id_field="trade_id",
)

QUOTES = CsvLayout(
    kind="quotes",
    columns=("Date", "Time", "Bid", "Ask", "BidVolume", "AskVolume"),
    numeric=(
        NumericColumn("Bid", "bid_price", False),
        NumericColumn("Ask", "ask_price", False),
        NumericColumn("BidVolume", "bid_quantity", True),
        NumericColumn("AskVolume", "ask_quantity", True),
    ),
    id_field="quote_id",
)

COMPANY_INFO_COLUMNS = ("company_id", "symbol", "company_name", "ISIN", "start_date", "end_date")
EXCHANGE = "ASX"
CURRENCY = "AUD"
TIMEZONE = "Australia/Sydney"
