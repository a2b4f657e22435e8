"""Tests for SegmentBatches: the windows of memory-mapped ids cut into files or documents, each
read from a fresh state, poured into rows, shared among processes and reshuffled by epoch."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from textgen.data import IGNORE, SegmentBatches
from textgen.errors import TextgenError

# Three segments of ids 100+: A predicts 9 tokens (3 windows of 4 columns, the last padded),
# B 2 (1 window), C 13 (4 windows); a span of one id predicts nothing and is dropped.
IDS = np.arange(100, 140)
SEGMENTS = np.array([[0, 10], [10, 13], [13, 14], [14, 28]])


def pairs_of(segments: np.ndarray) -> Counter:
    """Every (input, target) pair the segments hold: what one epoch must show exactly once."""
    return Counter((int(IDS[i]), int(IDS[i + 1])) for start, end in segments for i in range(start, end - 1))


def epoch(batches: SegmentBatches, number: int = 0) -> list:
    return [batches.window_at(number, position) for position in range(batches.steps_in_epoch(number))]


def test_segments_are_poured_into_rows_window_by_window_with_a_fresh_state_at_each_start():
    batches = SegmentBatches(IDS, SEGMENTS, rows=2, window=4)
    assert (batches.global_rows, batches.capacity, batches.tokens) == (2, 4, 24)
    windows = epoch(batches)
    # row 0: A0 A1 A2 B0; row 1: C0 C1 C2 C3
    assert windows[0].inputs.tolist() == [[100, 101, 102, 103], [114, 115, 116, 117]]
    assert windows[2].inputs[0].tolist()[:1] == [108] and windows[2].targets[0].tolist() == [109, IGNORE, IGNORE, IGNORE]
    assert windows[3].inputs[0].tolist()[:2] == [110, 111] and windows[3].targets[0].tolist()[:2] == [111, 112]
    assert [w.starts.tolist() for w in windows] == [[True, True], [False, False], [False, False], [True, False]]
    assert windows[3].targets[1].tolist() == [127, IGNORE, IGNORE, IGNORE]
    seen = Counter((int(i), int(t)) for w in windows for i, t in zip(w.inputs.flatten(), w.targets.flatten())
                   if t != IGNORE)
    assert seen == pairs_of(SEGMENTS)
    assert sum(batches.scored_tokens(w) for w in windows) == batches.tokens


def test_a_segment_that_overflows_a_row_goes_on_in_the_next_from_a_fresh_state():
    batches = SegmentBatches(IDS, np.array([[0, 29]]), rows=3, window=4)  # 28 predictions: 7 windows, 3 a row
    windows = epoch(batches)
    assert batches.capacity == 3
    assert [w.inputs[:, 0].tolist() for w in windows] == [[100, 112, 124], [104, 116, 0], [108, 120, 0]]
    assert windows[0].starts.tolist() == [True, True, True]  # each row starts cold, as a long stream's rows do
    assert windows[1].targets[2].tolist() == [IGNORE] * 4  # the last row runs out: nothing scored


def test_documents_come_in_a_new_order_each_epoch_fixed_by_the_seed():
    batches = SegmentBatches(IDS, SEGMENTS, rows=1, window=4, seed=3)
    orders = [[int(w.inputs[0, 0]) for w in epoch(batches, n) if w.starts[0]] for n in range(4)]
    assert len({tuple(o) for o in orders}) > 1  # reshuffled
    again = SegmentBatches(IDS, SEGMENTS, rows=1, window=4, seed=3)
    assert [[int(w.inputs[0, 0]) for w in epoch(again, n) if w.starts[0]] for n in range(4)] == orders
    for n in range(4):  # whatever the order, every prediction once
        assert Counter((int(i), int(t)) for w in epoch(batches, n) for i, t in zip(w.inputs[0], w.targets[0])
                       if t != IGNORE) == pairs_of(SEGMENTS)


def test_processes_take_contiguous_shares_of_the_rows_and_validation_takes_every_nth():
    whole = epoch(SegmentBatches(IDS, SEGMENTS, rows=2, window=4))
    shares = [epoch(SegmentBatches(IDS, SEGMENTS, rows=2, window=4, rank=r, world=2)) for r in range(2)]
    for position, window in enumerate(whole):
        for rank in range(2):
            assert shares[rank][position].inputs.tolist() == window.inputs[rank : rank + 1].tolist()
    validation = SegmentBatches(IDS, SEGMENTS, rows=2, window=4)
    assert [w.inputs.tolist() for w in validation.windows((1, 2))] == [w.inputs[1:].tolist() for w in whole]
    with pytest.raises(TextgenError, match="do not split evenly over 2 processes"):
        SegmentBatches(IDS, SEGMENTS, rows=3, window=4, world=2)


def test_nothing_to_predict_is_a_clear_error():
    with pytest.raises(TextgenError, match="nothing to predict"):
        SegmentBatches(IDS, np.array([[0, 1], [5, 6]]), rows=2, window=4)


def test_a_document_is_never_cut_between_rows():
    segments = np.array([[0, 10], [14, 28], [10, 13]])  # A: 3 windows, C: 4, B: 1; capacity 4 would cut C
    batches = SegmentBatches(IDS, segments, rows=2, window=4, documents=True)
    windows = epoch(batches)
    assert batches.steps_in_epoch(0) == 7  # row 0 holds A and all of C, row 1 only B
    assert [int(w.inputs[0, 0]) for w in windows] == [100, 104, 108, 114, 118, 122, 126]
    assert [w.starts[0].item() for w in windows] == [True, False, False, True, False, False, False]
    assert windows[0].inputs[1].tolist()[:2] == [110, 111] and not (windows[1].targets[1] != IGNORE).any()
    streams = SegmentBatches(IDS, segments, rows=2, window=4)
    assert streams.steps_in_epoch(0) == 4 and epoch(streams)[0].inputs[1, 0] == 118  # files are cut: C goes on cold


@pytest.mark.parametrize("documents", [False, True])
def test_the_predictions_of_a_column_in_all_rows_are_counted_without_reading_them(documents):
    batches = SegmentBatches(IDS, SEGMENTS, rows=3, window=4, documents=documents, seed=1 if documents else None)
    for number in range(2):
        for position, window in enumerate(epoch(batches, number)):
            assert batches.scored_in_all_rows(number, position) == batches.scored_tokens(window)
