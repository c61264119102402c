from pathlib import Path

import dagster as dg

from k2_pipelines.settings import landing_dir


class AsxLandingResource(dg.ConfigurableResource):
    """The folder ASX drops land in: company_info.csv, trades/<company_id>.csv, quotes/<company_id>.csv."""

    path: str | None = None  # default: K2_ASX_LANDING, else <state dir>/landing/asx

    def root(self) -> Path:
        return Path(self.path) if self.path else landing_dir()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"asx_landing": AsxLandingResource()})
