"""K2 on a scratch directory, for the benchmarks that run Dagster's daemon or `dagster dev` as processes of their
own."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from k2_pipelines.cli.jobs import prepare_dagster_home
from k2_pipelines.cli.kafka import running_broker
from k2_pipelines.dev.broker import Broker, free_port
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog


@contextmanager
def scratch_k2(scratch: Path) -> Iterator[Broker]:
    """K2_HOME, the ASX landing and DAGSTER_HOME under `scratch` (in os.environ, for this process and the ones it
    starts), a broker of its own on a free port and the catalog created; the broker is stopped after."""
    libs = Broker.from_env().libs  # the jars `make install` fetched
    port = free_port()
    os.environ.update({"K2_HOME": str(scratch / "k2"), "K2_KAFKA_PORT": str(port),
                       "K2_ASX_LANDING": str(scratch / "landing")})
    (scratch / "landing").mkdir()
    prepare_dagster_home(scratch / "dagster")
    with running_broker(Broker(home=scratch / "k2" / "kafka", port=port, libs=libs)) as broker:
        load_k2_catalog()  # the catalog exists before the daemon's first tick
        yield broker
