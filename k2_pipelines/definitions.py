import warnings
from pathlib import Path

import dagster as dg

# Dagster 1.13 warns about its own use of a beta parameter when it binds resources to sensors' jobs: noise in every
# `k2` command and run that builds these definitions, about nothing K2 does
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition.__init__`",
                        category=dg.BetaWarning)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
