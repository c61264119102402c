"""Generated sessions inject exactly the faults they report."""

import itertools
import json
from collections import Counter

from k2_pipelines.lib.binance.recording import read_recording
from k2_pipelines.lib.binance.sample import generate_session


def test_resets_restart_lower_without_reusing_a_trade_id(tmp_path):
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, ["BTCUSDT", "ETHUSDT"], 40_000, seed=5, faults={"resets", "duplicates"})
    assert counts["resets"] >= 5
    trades = [frame for _, frame in read_recording(session) if '"e":"trade"' in frame]
    keys = [(json.loads(frame)["data"]["s"], json.loads(frame)["data"]["t"]) for frame in trades]
    assert sum(n - 1 for n in Counter(keys).values()) == counts["duplicates:trades"]  # only injected ones repeat
    descents = 0
    for symbol in {symbol for symbol, _ in keys}:
        ids = [trade_id for s, trade_id in keys if s == symbol]
        descents += sum(later < earlier for earlier, later in itertools.pairwise(ids))
    assert descents == counts["resets"]
