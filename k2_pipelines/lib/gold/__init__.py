"""Gold tables: aggregates rebuilt from the silver market data (market_data.trades)."""
