"""Apache Spark on K2's tables: its catalog settings derived from K2's own, its jars, sessions, and compaction."""
