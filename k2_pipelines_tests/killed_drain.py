"""`python -m k2_pipelines_tests.killed_drain POINT ARGS...`: `k2 ARGS...`, SIGKILLed when its drain reaches POINT.

The points are the steps of the drain's exactly-once commit (lib/drain/drain.py) where a crash matters most. The
drain module's own functions are replaced here, so that production code carries no crash hook.
"""

import os
import signal
import sys
from collections.abc import Callable

from k2_pipelines.cli import main
from k2_pipelines.lib.drain import drain
from k2_pipelines_tests.commit_hooks import after_planning


def _kill(*_args: object, **_kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _then_kill(function: Callable[..., object]) -> Callable[..., None]:
    def run_then_kill(*args: object, **kwargs: object) -> None:
        function(*args, **kwargs)
        _kill()

    return run_then_kill


# point -> the name in the drain module to replace, and what replaces it
POINTS: dict[str, tuple[str, Callable[..., object]]] = {
    "files-written": ("next_checkpoint", _kill),  # the batch's data files written, nothing else
    "state-written": ("state_files", _then_kill(drain.state_files)),  # the symbols' state files written too
    "before-commit": ("commit", after_planning(_kill)),  # the commit planned, not made
    "iceberg-committed": ("_commit", _then_kill(drain._commit)),  # committed to Iceberg, not the group offsets
}

if __name__ == "__main__":
    name, replacement = POINTS[sys.argv[1]]
    setattr(drain, name, replacement)
    sys.exit(main(sys.argv[2:]))
