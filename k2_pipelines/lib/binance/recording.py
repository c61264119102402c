"""Recorded sessions: JSON lines of {"received_at_us": ..., "frame": "<raw frame text>"}."""

import json
import time
from collections.abc import Iterator
from pathlib import Path


def now_us() -> int:
    return time.time_ns() // 1000


class Recorder:
    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8")

    def write(self, frame: str, received_at_us: int) -> None:
        self._file.write(json.dumps({"received_at_us": received_at_us, "frame": frame}) + "\n")

    def close(self) -> None:
        self._file.close()


def read_recording(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            yield entry["received_at_us"], entry["frame"]


def replay(path: Path, handle_frame, speed: float | None = None) -> int:
    """Feed every recorded frame to handle_frame(frame, received_at_us); with `speed`, keep the recorded pacing
    (2.0: twice as fast), else as fast as possible. Frames are stamped with the time they are replayed."""
    started, first_received, count = time.monotonic(), None, 0
    for received_at_us, frame in read_recording(path):
        if speed:
            first_received = first_received if first_received is not None else received_at_us
            delay = (received_at_us - first_received) / 1e6 / speed - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        handle_frame(frame, now_us())
        count += 1
    return count
