"""`k2 drain binance` runs what the Dagster drain asset runs: each batch through the asset's drain_batch (its metrics
pushed), and a topic that cannot serve the stored offsets is a clear error, as it fails the asset's run."""

import numpy as np

from k2_pipelines.cli import main
from k2_pipelines.cli.bench.generated import COMPACT_START, append_micro_batch, generated_trades
from k2_pipelines.lib.drain.checkpoint import checkpoint_properties, stored_checkpoint
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.runs import drain_batch
from k2_pipelines_tests.kafka_helpers import replay_session


def test_the_drain_command_pushes_each_batch_and_refuses_offsets_the_topic_cannot_serve(
        kafka_broker, catalog, tmp_path, monkeypatch, capsys) -> None:
    _, counts, topics = replay_session(kafka_broker, tmp_path, 2_000, set())
    monkeypatch.setenv("K2_KAFKA_PORT", str(kafka_broker.port))
    pushed = []
    monkeypatch.setattr(drain_batch, "push_drain", pushed.append)
    command = ["drain", "binance", "--table", "trades", "--topic", topics.trades]
    assert main([*command, "--max-messages", "300", "--until-caught-up"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(pushed) == len(printed) > 1  # a push per batch, as a push per asset run
    assert sum(result.messages for result in pushed) == counts["trades"]
    assert all(line.startswith(f"{result.table}: {result.messages:,} messages -> {result.rows_written:,} rows")
               for line, result in zip(printed, pushed, strict=True))

    drained = stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets
    ahead = {partition: offset + 1_000 for partition, offset in drained.items()}
    append_micro_batch(catalog, TRADES.identifier, generated_trades(np.random.default_rng(1), 1, COMPACT_START, 1, 0),
                       checkpoint_properties(topics.trades, ahead, 0, "a-recreated-topic"))
    pushed.clear()
    assert main(command) == 1
    captured = capsys.readouterr()
    assert "k2 drain: " in captured.err and "past the end" in captured.err and not captured.out and not pushed
