"""Duplicates and sequence breaks in a drained batch.

Duplicates: the same (exchange, symbol, id) twice in a batch, or again after it was committed (a replay).
Sequence breaks, per (exchange, symbol), against the highest sequence seen so far (carried from batch to batch in
the drain's checkpoint), in arrival order:
- gap: the sequence jumps by more than one (small up to `small_gap_max` missing ids, else large); only where ids
  are consecutive by design (trade ids; bookTicker update ids skip);
- out_of_order: a sequence at or below the highest seen; one that falls in a gap found in the same batch arrived
  late rather than never, so the gap's missing count goes down (and a gap left with none missing is dropped);
- reset: a sequence below the highest seen after at least `reset_after_us` of event time: the source restarted its
  numbering (a new session), and tracking continues from there.
"""

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2_pipelines.lib.avro.arrow import join

State = dict[str, tuple[int, int]]  # symbol -> (highest sequence, its event time in us)


@dataclass(frozen=True)
class SequenceRules:
    track_gaps: bool
    small_gap_max: int = 100
    reset_after_us: int = 60_000_000


@dataclass(frozen=True)
class Break:
    symbol: str
    kind: str
    from_sequence: int
    to_sequence: int
    missing: int
    event_timestamp: int


def record_keys(rows: pa.Table, id_column: str) -> pa.Array:
    return join(rows.column("exchange").combine_chunks(), b"\x1f", rows.column("symbol").combine_chunks(), b"\x1f",
                rows.column(id_column).combine_chunks())


def first_occurrences(keys: pa.Array) -> np.ndarray:
    """Mask of the rows whose key did not appear earlier in the batch."""
    codes = pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False)
    keep = np.zeros(len(keys), dtype=bool)
    keep[np.unique(codes, return_index=True)[1]] = True
    return keep


def _kind(delta: int, gap_rules: SequenceRules) -> str:
    return "gap_small" if delta - 1 <= gap_rules.small_gap_max else "gap_large"


def _one_by_one(symbol: str, sequences: np.ndarray, times: np.ndarray, prior: tuple[int, int] | None,
                rules: SequenceRules) -> tuple[list[Break], tuple[int, int]]:
    breaks, (high, high_time) = [], prior or (int(sequences[0]) - 1, int(times[0]))
    for sequence, time in zip(sequences.tolist(), times.tolist()):
        delta = sequence - high
        if delta <= 0:
            kind = "reset" if time - high_time >= rules.reset_after_us else "out_of_order"
            breaks.append(Break(symbol, kind, high, sequence, 0, time))
            if kind == "reset":
                high, high_time = sequence, time
            continue
        if delta > 1 and rules.track_gaps:
            breaks.append(Break(symbol, _kind(delta, rules), high, sequence, delta - 1, time))
        high, high_time = sequence, time
    return breaks, (high, high_time)


def _vectorized(symbol: str, sequences: np.ndarray, times: np.ndarray, prior: tuple[int, int] | None,
                rules: SequenceRules) -> tuple[list[Break], tuple[int, int]] | None:
    """As _one_by_one, for the common case without resets (None if there may be one)."""
    first = prior or (int(sequences[0]) - 1, int(times[0]))
    all_sequences = np.concatenate([[first[0]], sequences])
    all_times = np.concatenate([[first[1]], times])
    highest = np.maximum.accumulate(all_sequences)
    rises = np.concatenate([[True], all_sequences[1:] > highest[:-1]])  # a tie is out of order, not a new high
    at_highest = np.maximum.accumulate(np.where(rises, np.arange(len(all_sequences)), 0))
    high_before, high_time_before = highest[:-1], all_times[at_highest[:-1]]
    delta = sequences - high_before
    if ((delta <= 0) & (times - high_time_before >= rules.reset_after_us)).any():
        return None
    breaks = [Break(symbol, "out_of_order", int(high_before[i]), int(sequences[i]), 0, int(times[i]))
              for i in np.flatnonzero(delta <= 0)]
    if rules.track_gaps:
        breaks += [Break(symbol, _kind(int(delta[i]), rules), int(high_before[i]), int(sequences[i]),
                         int(delta[i]) - 1, int(times[i])) for i in np.flatnonzero(delta > 1)]
    return breaks, (int(highest[-1]), int(all_times[at_highest[-1]]))


def _late_arrivals_fill_gaps(breaks: list[Break]) -> list[Break]:
    gaps = sorted((b for b in breaks if b.kind.startswith("gap")), key=lambda b: b.from_sequence)
    if not gaps:
        return breaks
    starts = np.array([gap.from_sequence for gap in gaps])
    missing = [gap.missing for gap in gaps]
    for late in (b for b in breaks if b.kind == "out_of_order"):
        index = int(np.searchsorted(starts, late.to_sequence)) - 1
        if index >= 0 and late.to_sequence < gaps[index].to_sequence:
            missing[index] -= 1
    filled = [replace(gap, missing=left) for gap, left in zip(gaps, missing) if left > 0]
    return [b for b in breaks if not b.kind.startswith("gap")] + filled


def classify(symbols: pa.Array, sequences: np.ndarray, times: np.ndarray, state: State,
             rules: SequenceRules) -> tuple[list[Break], State]:
    """Breaks among rows in arrival order, and the state after them."""
    codes = pc.dictionary_encode(symbols)
    names = codes.dictionary.to_pylist()
    indices = codes.indices.to_numpy(zero_copy_only=False)
    breaks, state = [], dict(state)
    for code, symbol in enumerate(names):
        rows = np.flatnonzero(indices == code)
        prior = state.get(symbol)
        found = _vectorized(symbol, sequences[rows], times[rows], prior, rules) or \
            _one_by_one(symbol, sequences[rows], times[rows], prior, rules)
        breaks += _late_arrivals_fill_gaps(found[0])
        state[symbol] = found[1]
    return breaks, state
