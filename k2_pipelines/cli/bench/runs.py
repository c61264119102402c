"""`k2 bench runs`: what one drain run costs Dagster on the real run path, and the drain cadence that keeps Dagster's
overhead under 10% of one core.

`dagster dev` on the project's workspace, as `make dev` runs it (webserver, daemon with K2's sensors, code server;
the QueuedRunCoordinator and the default run launcher: a process per run), over a scratch DAGSTER_HOME, K2_HOME and
broker. Runs of drain_binance_trades are submitted one after the other through GraphQL, as the UI launches them, each
draining a batch of a replayed Binance sample from topics of their own (the lag sensor watches the default ones, so it
launches nothing). CPU is read from /proc over dagster dev's whole session (a run's process, once reaped, counts in
its parent's children time); storage is the size of DAGSTER_HOME (SQLite run, event-log and tick storage, compute
logs).
"""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_graphql import DagsterGraphQLClient

from k2_pipelines.cli.bench.scratch import scratch_k2
from k2_pipelines.dev.broker import Broker, free_port
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.settings import CHECKOUT

JOB = "drain_binance_trades"
TOPICS = Topics("bench.runs.trades", "bench.runs.quotes", "bench.runs.dlq")
CADENCES = (30, 60, 120, 300)  # seconds between drains of one table
TABLES = 2
BUDGET_CORES = 0.10
IDLE_SECONDS = 120  # the sensors' own cost: most K2 sensors tick every 30 s, three every 5 minutes
_TICKS = os.sysconf("SC_CLK_TCK")
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class RunCost:
    run_id: str
    status: str
    launch_to_end: float  # submitted (queued) to finished
    launch_to_start: float  # queued, dequeued, its process started and loaded the code
    drain_seconds: float  # inside the drain (drain_metadata duration_seconds)
    cpu_seconds: float  # the run's process
    session_cpu_seconds: float  # all of dagster dev over the run: the run, the daemon launching it, the sensors
    storage_bytes: int  # growth of DAGSTER_HOME over the run


def _session(session: int) -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, its own CPU seconds, its reaped children's) of every process in the session."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile: its parent counts it once it has reaped it
            continue
        if int(fields[3]) == session:
            ticks = [int(f) for f in fields[11:15]]  # utime stime cutime cstime
            found[int(stat.parent.name)] = (int(fields[1]), sum(ticks[:2]) / _TICKS, sum(ticks[2:]) / _TICKS)
    return found


def _cpu(processes: dict) -> float:
    return sum(own + children for _, own, children in processes.values())


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _produce(broker: Broker, scratch: Path, frames: int) -> None:
    session = scratch / "session.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT", "BNBUSDT"], frames, seed=7)
    producer = MarketDataProducer(broker.bootstrap, default_registry(), TOPICS)
    replay(session, producer)
    producer.flush(60)


def _compile_bytecode(prefix: Path) -> float:
    """Compile the venv's packages and K2 under a pycache prefix of the scratch dir (the venv is left as it is)."""
    started = time.monotonic()
    site = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    subprocess.run([sys.executable, "-X", f"pycache_prefix={prefix}", "-m", "compileall", "-q", "-j", "0", str(site),
                    str(CHECKOUT / "k2_pipelines")], check=False, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def _wait_for_webserver(port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer on port {port} within {timeout:.0f}s")


def _submit(client: DagsterGraphQLClient, batch: int) -> str:
    config = {"ops": {"binance_trades": {"config": {"max_messages": batch}}},
              "resources": {"binance_kafka": {"config": {"trades_topic": TOPICS.trades,
                                                         "quotes_topic": TOPICS.quotes}}}}
    for _ in range(120):  # the code location may still be loading
        try:
            return client.submit_job_execution(JOB, run_config=config)
        except Exception:
            time.sleep(1)
    return client.submit_job_execution(JOB, run_config=config)


def _drain_seconds(instance: dg.DagsterInstance, run_id: str) -> float:
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        duration = materialization.metadata.get("duration_seconds") if materialization else None
        if not isinstance(duration, dg.FloatMetadataValue) or duration.value is None:
            raise ValueError(f"run {run_id}: its materialization reports no duration_seconds")
        return duration.value
    return float("nan")


def _one_run(client: DagsterGraphQLClient, instance: dg.DagsterInstance, session: int, home: Path,
             batch: int) -> RunCost:
    """The run's process is found as a new process of the session; once it has exited, its parent's children time
    grew by its CPU."""
    before, size_before = _session(session), _size(home)
    run_id, parents, finished = _submit(client, batch), set(), None
    while True:
        now = _session(session)
        new = set(now) - set(before)
        parents |= {now[pid][0] for pid in new} & set(before)
        record = instance.get_run_record_by_id(run_id)
        if record is None:
            raise RuntimeError(f"run {run_id} was submitted but is not in the instance")
        if record.dagster_run.status in _FINISHED:
            finished = finished or time.monotonic()
            # once its process has gone (a first run may leave a new server process behind: not the run's)
            if not new or time.monotonic() - finished > 30:
                break
        time.sleep(0.1)
    after, stats, created = _session(session), instance.get_run_stats(run_id), record.create_timestamp.timestamp()
    if stats.start_time is None or stats.end_time is None:
        raise RuntimeError(f"run {run_id} ended {record.dagster_run.status.value} without a start or end time")
    run_cpu = sum(after[p][2] - before[p][2] for p in parents if p in after)
    return RunCost(run_id, record.dagster_run.status.value, stats.end_time - created, stats.start_time - created,
                   _drain_seconds(instance, run_id), run_cpu, _cpu(after) - _cpu(before), _size(home) - size_before)


def _report(costs: list[RunCost], idle_cores: float, idle_bytes_per_s: float, bytecode: str, started_in: float) -> int:
    print(f"k2 bench runs: {len(costs)} runs of {JOB} through dagster dev (QueuedRunCoordinator, a process per run); "
          f"bytecode {bytecode}; dagster dev answered {started_in:.0f}s after its start")
    print("| run | status | launch to end (s) | launch to start (s) | in the drain (s) | run process CPU (s) | "
          "dagster dev CPU over the run (s) | storage (KB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cost in costs:
        print(f"| {cost.run_id[:8]} | {cost.status} | {cost.launch_to_end:.2f} | {cost.launch_to_start:.2f} | "
              f"{cost.drain_seconds:.3f} | {cost.cpu_seconds:.2f} | {cost.session_cpu_seconds:.2f} | "
              f"{cost.storage_bytes / 1024:,.0f} |")
    cpu, drain = statistics.median(c.cpu_seconds for c in costs), statistics.median(c.drain_seconds for c in costs)
    storage = statistics.median(c.storage_bytes for c in costs)
    session = statistics.median(c.session_cpu_seconds for c in costs)
    print(f"median per run: the run's process {cpu:.2f} CPU s, of which in the drain at most {drain:.3f} s; all of "
          f"dagster dev {session:.2f} CPU s; storage {storage / 1024:,.0f} KB. Idle (webserver, daemon, sensors "
          f"ticking): {idle_cores:.3f} cores, {idle_bytes_per_s * 86400 / 2**20:,.0f} MB/day")
    print(f"| drain every (s), {TABLES} tables | runs/day | run overhead (cores) | with idle (cores) | "
          "storage/day before pruning (MB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    chosen = None
    for cadence in CADENCES:
        per_second = TABLES / cadence
        overhead = (cpu - drain) * per_second
        if chosen is None and overhead < BUDGET_CORES:
            chosen = cadence
        print(f"| {cadence} | {per_second * 86400:,.0f} | {overhead:.3f} | {overhead + idle_cores:.3f} | "
              f"{(storage * per_second + idle_bytes_per_s) * 86400 / 2**20:,.0f} |")
    print(f"cadence keeping the runs' Dagster overhead under {BUDGET_CORES:.0%} of one core: "
          + (f"every {chosen} s per table" if chosen else f"none of {CADENCES}: batch more per run"))
    return 0 if all(c.status == "SUCCESS" for c in costs) else 1


def bench_runs(runs: int, batch: int, compiled_bytecode: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="k2-bench-runs-") as scratch_dir:
        scratch = Path(scratch_dir)
        web_port, home = free_port(), scratch / "dagster"
        with scratch_k2(scratch) as broker:
            env = os.environ.copy()
            if compiled_bytecode:  # read, never written: PYTHONDONTWRITEBYTECODE may stay set
                print(f"compiled the bytecode in {_compile_bytecode(scratch / 'pycache'):.0f}s")
                env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
            _produce(broker, scratch, frames=runs * batch * 3)  # about a third of the frames are trades
            log = (scratch / "dagster-dev.log").open("w")
            started = time.monotonic()
            dev = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w",
                                    str(CHECKOUT / "workspace.yaml"), "-p", str(web_port)],
                                   cwd=CHECKOUT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _wait_for_webserver(web_port)
                started_in = time.monotonic() - started
                client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
                with dg.DagsterInstance.get() as instance:
                    _one_run(client, instance, dev.pid, home, batch)  # the code location loaded; not counted
                    time.sleep(IDLE_SECONDS)  # the first ticks of every sensor are behind us
                    cpu, size = _cpu(_session(dev.pid)), _size(home)
                    time.sleep(IDLE_SECONDS)
                    idle_cores = (_cpu(_session(dev.pid)) - cpu) / IDLE_SECONDS
                    idle_bytes_per_s = (_size(home) - size) / IDLE_SECONDS
                    costs = [_one_run(client, instance, dev.pid, home, batch) for _ in range(runs)]
            finally:
                os.killpg(dev.pid, signal.SIGTERM)
                dev.wait(60)
    return _report(costs, idle_cores, idle_bytes_per_s, "compiled" if compiled_bytecode else "from source (no .pyc)",
                   started_in)
