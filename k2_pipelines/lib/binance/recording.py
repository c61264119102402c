"""Recorded sessions: JSON lines of {"received_at_us": ..., "frame": "<raw frame text>"}."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.json as pa_json

_ENTRY = pa.schema([("received_at_us", pa.int64()), ("frame", pa.string())])
_BLOCK_BYTES = 4 << 20  # ~13,000 frames per batch


def now_us() -> int:
    return time.time_ns() // 1000


class Recorder:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open until close())

    def write(self, frame: str, received_at_us: int) -> None:
        self._file.write(json.dumps({"received_at_us": received_at_us, "frame": frame}) + "\n")

    def close(self) -> None:
        self._file.close()


def read_recording(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            yield entry["received_at_us"], entry["frame"]


def read_recording_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The recording in record batches of (received_at_us, frame)."""
    try:
        reader = pa_json.open_json(path, read_options=pa_json.ReadOptions(block_size=_BLOCK_BYTES),
                                   parse_options=pa_json.ParseOptions(explicit_schema=_ENTRY))
        yield from reader
    except pa.ArrowInvalid as error:
        raise ValueError(f"{path} is not a K2 recording (JSON lines of received_at_us and frame): {error}") from None


class FrameHandler(Protocol):
    def handle_frame(self, raw: str | bytes, received_at_us: int) -> None: ...

    def handle_frames(self, frames: pa.Array, received_at_us: int) -> None: ...


def replay(path: Path, producer: FrameHandler, speed: float | None = None) -> int:
    """Feed every recorded frame to the producer; with `speed`, one by one at the recorded pacing (2.0: twice as
    fast), else in batches as fast as possible. Frames are stamped with the time they are replayed."""
    count = 0
    if not speed:
        for batch in read_recording_batches(path):
            producer.handle_frames(batch.column("frame"), now_us())
            count += batch.num_rows
        return count
    started, first_received = time.monotonic(), None
    for received_at_us, frame in read_recording(path):
        first_received = first_received if first_received is not None else received_at_us
        delay = (received_at_us - first_received) / 1e6 / speed - (time.monotonic() - started)
        if delay > 0:
            time.sleep(delay)
        producer.handle_frame(frame, now_us())
        count += 1
    return count
