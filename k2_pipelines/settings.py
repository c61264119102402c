"""Where K2 keeps its state: one directory, `.k2/` in the checkout unless K2_HOME says otherwise."""

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
SCHEMAS_DIR = CHECKOUT / "schemas"


def state_dir() -> Path:
    return Path(os.environ.get("K2_HOME") or CHECKOUT / ".k2").resolve()


def landing_dir() -> Path:
    """The ASX landing folder the sensor watches (K2_ASX_LANDING overrides)."""
    return Path(os.environ.get("K2_ASX_LANDING") or state_dir() / "landing" / "asx").resolve()


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or state_dir() / "dagster").resolve()
