"""A persistent DAGSTER_HOME under the state dir, configured by the repository's dagster.yaml."""

import os
import shutil
from pathlib import Path

from k2_pipelines.lib.paths import CHECKOUT, dagster_home


def prepare_dagster_home() -> Path:
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(CHECKOUT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
