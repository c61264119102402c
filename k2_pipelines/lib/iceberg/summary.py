"""The snapshot-summary properties K2 writes: one vocabulary (like PyIceberg's snapshot Summary) for every writer.

A key ending in "." is a prefix: the topic it is about follows it.
"""

# ASX loads and gold builds
RUN_ID = "k2.run-id"  # the run that committed the snapshot
PARTITIONS = "k2.partitions"  # first..last trading date of a market load, "all" for reference data
SOURCE_FILES = "k2.source-files"  # JSON list of the landing files loaded, each with its path and fingerprint

# drains (lib/drain/checkpoint.py), and the replays and quarantines that carry their checkpoint forward
DRAIN_RUN_ID = "k2.drain.run-id"  # the run that committed the snapshot
DRAIN_OFFSETS_PREFIX = "k2.drain.offsets."  # JSON of each partition's next offset to read
DRAIN_STATE_PREFIX = "k2.drain.state."  # the checkpoint number of the symbols' state in market_data.drain_state
# before market_data.drain_state held the symbols' state, the summary did: read from there, never written
LEGACY_DRAIN_SEQUENCES_PREFIX = "k2.drain.sequences."  # JSON of each symbol's last sequence and its event time
LEGACY_DRAIN_CEILINGS_PREFIX = "k2.drain.id-ceilings."  # JSON of each symbol's highest id number committed

# quarantines and releases (lib/recovery/quarantine.py)
SOURCE_RUN_ID = "k2.quarantine.source-run-id"  # the drain run whose rows were taken out or put back
RELEASE_RUN_ID = "k2.quarantine.release-run-id"  # the run that put quarantined rows back

# upkeep
UPKEEP_OPERATION = "k2.upkeep.operation"  # which upkeep job made the snapshot ("compact")

RUN_IDS = (RUN_ID, DRAIN_RUN_ID)  # the keys naming the run that committed a snapshot
