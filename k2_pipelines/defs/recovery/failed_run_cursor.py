"""How the sensors that act on failed runs (failed_runs.py, orphan_sensor.py) read them: each failure once, oldest
first, with the cursor {"after": the update time of the newest failure read, "pending": [{"run_id": ...}, ...]},
pending holding the failures a sensor acts on at a later tick. prune_runs keeps what these cursors still need."""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class FailedRunCursor:
    after: float  # the update time of the newest failed run read
    pending: list[dict[str, Any]] = field(default_factory=list)  # each names its failed run by "run_id"

    @classmethod
    def parse(cls, cursor: str | None) -> "FailedRunCursor":
        """A sensor's stored cursor; none yet: the failures from now on (older ones were not the sensor's)."""
        if not cursor:
            return cls(time.time())
        state = json.loads(cursor)
        return cls(state["after"], state["pending"])

    def serialize(self) -> str:
        return json.dumps({"after": self.after, "pending": self.pending})

    def pending_run_ids(self) -> set[str]:
        return {pending["run_id"] for pending in self.pending}

    def new_failures(self, instance: dg.DagsterInstance) -> tuple[Sequence[dg.RunRecord], float]:
        """The runs that failed since this cursor, oldest first, and the update time of the newest of them (the
        next cursor's `after`)."""
        records = instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],
                          updated_after=datetime.fromtimestamp(self.after, UTC)),
            order_by="update_timestamp", ascending=True)
        return records, max([self.after, *(record.update_timestamp.timestamp() for record in records)])
