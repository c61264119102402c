"""What a drain has consumed, stored in the Iceberg snapshot of the same commit that added the rows.

Each drain commit's snapshot summary holds, per topic, the next offset to read in each partition, the run id, the
last sequence seen per symbol, and per symbol the highest id number committed (see replays.py). A drain starts
from the newest snapshot holding them (walking ancestry, so that snapshots from other writers, such as compaction,
are skipped).
"""

import json
from dataclasses import dataclass, field

from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

OFFSETS_PREFIX = "k2.drain.offsets."  # + topic
_SEQUENCES = "k2.drain.sequences."
_CEILINGS = "k2.drain.id-ceilings."
RUN_ID = "k2.drain.run-id"


@dataclass(frozen=True)
class Checkpoint:
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)  # symbol -> (sequence, event time in us)
    ceilings: dict[str, int] = field(default_factory=dict)  # symbol -> highest id number committed
    snapshot_id: int | None = None  # the snapshot that holds it
    run_id: str | None = None


def stored_checkpoint(table: Table, topic: str) -> Checkpoint:
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        summary = snapshot.summary or {}
        offsets = summary.get(OFFSETS_PREFIX + topic)
        if offsets is not None:
            return Checkpoint(
                offsets={int(partition): offset for partition, offset in json.loads(offsets).items()},
                sequences={symbol: tuple(state) for symbol, state in json.loads(summary.get(_SEQUENCES + topic, "{}"))
                           .items()},
                ceilings=json.loads(summary.get(_CEILINGS + topic, "{}")),
                snapshot_id=snapshot.snapshot_id,
                run_id=summary.get(RUN_ID),
            )
    return Checkpoint()


def checkpoint_properties(topic: str, offsets: dict[int, int], sequences: dict[str, tuple[int, int]],
                          ceilings: dict[str, int], run_id: str) -> dict[str, str]:
    return {
        OFFSETS_PREFIX + topic: json.dumps({str(p): o for p, o in sorted(offsets.items())}),
        _SEQUENCES + topic: json.dumps({s: list(state) for s, state in sorted(sequences.items())}),
        _CEILINGS + topic: json.dumps(dict(sorted(ceilings.items()))),
        RUN_ID: run_id,
    }
