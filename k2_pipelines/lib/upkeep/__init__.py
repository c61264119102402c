"""Table upkeep: compaction, snapshot expiry, orphan removal."""
