"""Duplicates and sequence breaks: the vectorized classification agrees with the one-by-one reference."""

import numpy as np
import pyarrow as pa

from k2_pipelines.lib.drain.sequences import SequenceRules, _one_by_one, _vectorized, classify, first_occurrences

RULES = SequenceRules(track_gaps=True, small_gap_max=3, reset_after_us=60_000_000)


def test_each_kind_of_break():
    sequences = np.array([10, 11, 13, 12, 20, 21, 5, 6])
    times = np.array([0, 1, 2, 3, 4, 5, 90_000_000, 90_000_001])
    breaks, state = classify(pa.array(["X"] * 8), sequences, times, {}, RULES)
    kinds = sorted((b.kind, b.from_sequence, b.to_sequence, b.missing) for b in breaks)
    # 13 skips 12, which then arrives late: only the out-of-order remains; 21 -> 5 after 90 s is a reset
    assert kinds == [("gap_large", 13, 20, 6), ("out_of_order", 13, 12, 0), ("reset", 21, 5, 0)]
    assert state == {"X": (6, 90_000_001)}


def test_state_carries_over_batches():
    breaks, state = classify(pa.array(["X", "X"]), np.array([5, 6]), np.array([0, 1]), {}, RULES)
    breaks, state = classify(pa.array(["X"]), np.array([8]), np.array([2]), state, RULES)
    assert [(b.kind, b.from_sequence, b.to_sequence, b.missing) for b in breaks] == [("gap_small", 6, 8, 1)]


def test_vectorized_matches_one_by_one_on_random_sequences():
    rng = np.random.default_rng(1)
    compared = 0
    for _ in range(300):
        n = int(rng.integers(1, 40))
        sequences = np.cumsum(rng.choice([1, 1, 1, 2, 5, -1, -3], n)) + 100
        times = np.cumsum(rng.integers(0, 1_000_000, n))
        prior = None if rng.random() < 0.5 else (int(sequences[0]) - int(rng.integers(-2, 3)), 0)
        fast = _vectorized("X", sequences, times, prior, RULES)
        if fast is not None:
            slow = _one_by_one("X", sequences, times, prior, RULES)
            assert sorted(map(repr, fast[0])) == sorted(map(repr, slow[0])) and fast[1] == slow[1]
            compared += 1
    assert compared > 100


def test_first_occurrences_keeps_the_first_of_each_key():
    assert first_occurrences(pa.array(["a", "b", "a", "c", "b"])).tolist() == [True, True, False, True, False]
