"""Queries over K2's Iceberg tables: planning in PyIceberg, reading and SQL in DuckDB."""
