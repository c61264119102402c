"""`k2 dev`: the Dagster UI and daemon (`dagster dev`) on the embedded defaults, with the local broker."""

import argparse
import os
import shutil
import sys
from pathlib import Path

from k2_pipelines.cli.jobs import prepare_dagster_home
from k2_pipelines.dev.broker import Broker
from k2_pipelines.settings import CHECKOUT


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    dev = commands.add_parser("dev", help="the Dagster UI and daemon (dagster dev) on the embedded defaults")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(run=dagster_dev)


def dagster_dev(args: argparse.Namespace) -> int:
    home = prepare_dagster_home()
    Broker.from_env().start()  # left running: it serves the UI's runs and sensors until `k2 kafka stop`
    print(f"DAGSTER_HOME={home}; Dagster UI at http://{args.host}:{args.port}")
    beside_python = Path(sys.executable).parent / "dagster"
    dagster = str(beside_python) if beside_python.exists() else shutil.which("dagster")
    if dagster is None:
        raise SystemExit("k2 dev: no dagster command beside Python or on PATH")
    os.chdir(CHECKOUT)
    os.execv(dagster, [dagster, "dev", "-w", "workspace.yaml", "-h", args.host, "-p", str(args.port)])
