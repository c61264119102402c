"""Do a drain's consumer group offsets still agree with the offsets stored in Iceberg, and does the topic still hold
what they point at?

A drain reads from the offsets stored in the table's snapshot; the group `k2.drain.<table>` only mirrors them for
lag monitoring. A group reset or deleted by an operator misreports the lag, and is fixed by committing the stored
offsets again. A topic whose partitions end before the stored offsets (or has fewer of them) was recreated: its
messages are not the ones the offsets count, so nothing is realigned; the drain refuses it too (OffsetsOutOfRange).

Offsets are read and committed with a consumer of the group, as the drain does: librdkafka's admin client can
crash the process on an offset fetch for a group whose coordinator moved (confluent-kafka-javascript#374).
Only partitions with a stored offset are compared: the drain reads the others from their start.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from k2_pipelines.lib.drain.drain import DrainTarget, group_id, reader_for
from k2_pipelines.lib.drain.kafka_batch import TopicReader

TIMEOUT_SECONDS = 10
COORDINATOR_ATTEMPTS, RETRY_SECONDS = 40, 0.5
_COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                       KafkaError.COORDINATOR_LOAD_IN_PROGRESS}
T = TypeVar("T")


class RealignRefused(RuntimeError):
    """The topic does not hold what the stored offsets count (recreated, or gone): nothing was committed."""


@dataclass(frozen=True)
class Drift:
    topic: str
    group: str
    kind: str  # "aligned", "group_behind", "group_ahead", "group_missing", "topic_recreated", "topic_missing"
    stored: dict[int, int]  # partition -> next offset, from Iceberg
    committed: dict[int, int | None]  # the group's committed offsets (None: none committed)
    watermarks: dict[int, tuple[int, int]]
    detail: str  # one sentence: what disagrees, by how much, per partition


def _watermarks(reader: TopicReader) -> dict[int, tuple[int, int]] | None:
    """(low, high) per partition; None if the topic does not exist."""
    try:
        return reader.watermarks()
    except KafkaException as error:
        if error.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise


def _once_coordinated(call: Callable[[], T]) -> T:
    """call(), again while the group's coordinator is being elected or moved (a fresh broker's first requests)."""
    for _ in range(COORDINATOR_ATTEMPTS - 1):
        try:
            return call()
        except KafkaException as error:
            if error.args[0].code() not in _COORDINATOR_MOVING:
                raise
            time.sleep(RETRY_SECONDS)
    return call()  # the last attempt: any error is raised


def _committed(reader: TopicReader, partitions: list[int]) -> dict[int, int | None]:
    return _once_coordinated(lambda: reader.committed(partitions, TIMEOUT_SECONDS))


def _recreated(stored: dict[int, int], marks: dict[int, tuple[int, int]]) -> list[str]:
    """Per partition, how the topic falls short of the stored offsets."""
    return [f"partition {p} (stored {offset}) no longer exists" if p not in marks else
            f"partition {p} ends at {marks[p][1]}, {offset - marks[p][1]} before the stored offset {offset}"
            for p, offset in sorted(stored.items()) if p not in marks or marks[p][1] < offset]


def _group_drift(stored: dict[int, int], committed: dict[int, int | None]) -> tuple[str, list[str]]:
    """The kind of disagreement (the most misleading one found: ahead hides lag) and each partition's."""
    kinds, notes = set(), []
    for p, offset in sorted(stored.items()):
        at = committed.get(p)
        if at is None:
            kinds.add("group_missing")
            notes.append(f"partition {p} has no committed offset (stored {offset})")
        elif at != offset:
            kinds.add("group_ahead" if at > offset else "group_behind")
            notes.append(f"partition {p} at {at}, {abs(at - offset)} {'ahead of' if at > offset else 'behind'} "
                         f"the stored {offset}")
    kind = next((k for k in ("group_ahead", "group_behind", "group_missing") if k in kinds), "aligned")
    return kind, notes


def _drift(reader: TopicReader, target: DrainTarget, stored: dict[int, int]) -> Drift:
    group = group_id(target)
    marks = _watermarks(reader)
    if marks is None:
        return Drift(target.topic, group, "topic_missing", dict(stored), {}, {},
                     f"{target.topic} does not exist; Iceberg stores offsets {stored} for it")
    committed = _committed(reader, sorted(set(stored) | set(marks)))
    shortfalls = _recreated(stored, marks)
    if shortfalls:
        return Drift(target.topic, group, "topic_recreated", dict(stored), committed, marks,
                     f"{target.topic} holds fewer messages than {target.table.identifier} drained from it (was it "
                     f"recreated?): {'; '.join(shortfalls)}")
    kind, notes = _group_drift(stored, committed)
    detail = (f"{group} on {target.topic} " + (f"disagrees with the offsets stored in Iceberg: {'; '.join(notes)}"
              if notes else f"is at the offsets stored in Iceberg on every partition ({len(stored)})"))
    return Drift(target.topic, group, kind, dict(stored), committed, marks, detail)


def offset_drift(bootstrap: str, target: DrainTarget, stored: dict[int, int]) -> Drift:
    reader = reader_for(bootstrap, target)
    try:
        return _drift(reader, target, stored)
    finally:
        reader.close()


def realign_group(bootstrap: str, target: DrainTarget, stored: dict[int, int]) -> dict[int, int]:
    """Commit the stored offsets for the drain's group; the group's offsets afterwards.

    Raises RealignRefused if the topic was recreated or is gone: the stored offsets would count other messages.
    A drain committing meanwhile commits its own (newer) stored offsets; a stale realign only leaves the group
    behind, which the next check reports.
    """
    reader = reader_for(bootstrap, target)
    try:
        drift = _drift(reader, target, stored)
        if drift.kind in ("topic_recreated", "topic_missing"):
            raise RealignRefused(f"not realigning {drift.group}: {drift.detail}")
        if drift.kind != "aligned":
            _once_coordinated(lambda: reader.consumer.commit(
                offsets=[TopicPartition(target.topic, p, o) for p, o in sorted(stored.items())], asynchronous=False))
        committed = _committed(reader, sorted(stored))
    finally:
        reader.close()
    return {p: o for p, o in committed.items() if o is not None}
