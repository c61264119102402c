"""A persistent DAGSTER_HOME under the state dir, configured by the repository's dagster.yaml."""

import os
import shutil
from pathlib import Path

from k2_pipelines.settings import CHECKOUT, dagster_home


def prepare_dagster_home() -> Path:
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CHECKOUT / "dagster.yaml", home / "dagster.yaml")  # the repository's file is the source of truth
    os.environ["DAGSTER_HOME"] = str(home)
    return home
