"""Windows over memory-mapped ids cut into segments, each read from a fresh state: the files of
a folder (each its own stream) or the documents of a big corpus (their end markers already in the
ids). The counterpart of StreamBatches for a corpus that is more than one stream, laid out
without ever holding its ids in a Python list.

A segment is a span [start, end) of the ids; its end - start - 1 predictions take whole windows
of `window` columns (the last one padded). Every segment's windows, in order (documents in a new
order each epoch), are poured into the rows one after another, about `capacity` windows a row:

    segments   A: 3 windows   B: 1   C: 4          rows = 2, capacity = 4
    row 0   | A0 | A1 | A2 | B0 |                  a state reset at A0 and B0
    row 1   | C0 | C1 | C2 | C3 |                  and at C0

A file that does not fit at the end of a row goes on at the top of the next, from a fresh state,
as a long stream's rows always did. A document is never cut: it stays in the row it starts in,
which then runs a little longer than the others. Only two arrays per epoch (the order, and each
segment's first window) are kept: 16 bytes per segment.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from textgen.data.batches import IGNORE, Window, to_device
from textgen.config import SettingError
from textgen.errors import TextgenError


class SegmentBatches:
    """Training (or validation) windows of segments of `ids`; rows shared out among `world`
    processes, each taking a contiguous share. `documents`: segments are never cut between rows,
    and come in a new order every epoch when `seed` is given."""

    def __init__(self, ids: np.ndarray, segments: np.ndarray, rows: int, window: int,
                 device: torch.device | str = "cpu", rank: int = 0, world: int = 1, documents: bool = False,
                 seed: int | None = None) -> None:
        segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
        predictions = segments[:, 1] - segments[:, 0] - 1
        if not (predictions > 0).all():  # a file of one token predicts nothing
            segments, predictions = segments[predictions > 0], predictions[predictions > 0]
        self.ids, self.segments, self.predictions = ids, segments, predictions
        if not len(segments):
            raise TextgenError("the training part holds nothing to predict; use a longer text")
        self.window = window
        self.segment_windows = -(-self.predictions // window)  # ceiling division
        total = int(self.segment_windows.sum())
        self.global_rows = min(rows, total)
        if self.global_rows % world:
            raise SettingError(f"the text fills {self.global_rows} rows of {window} tokens, which do not split "
                               f"evenly over {world} processes; give a smaller {{batch_size}} or {{seq_len}}",
                               "batch_size", "seq_len")
        self.rows = self.global_rows // world
        self.first_row = rank * self.rows
        self.capacity = math.ceil(total / self.global_rows)
        self.tokens = int(self.predictions.sum())
        self.device, self.documents, self.seed = device, documents, seed
        self._epoch = -1
        self._order = self._first_window = self._row_start = np.zeros(0, np.int64)

    def steps_in_epoch(self, epoch: int) -> int:
        return int(np.diff(self._epoch_layout(epoch)[2]).max())

    def window_at(self, epoch: int, position: int, rows: range | None = None) -> Window:
        """The band of column `position` for this process's rows (or the given `rows`)."""
        order, first_window, row_start = self._epoch_layout(epoch)
        rows = rows if rows is not None else range(self.first_row, self.first_row + self.rows)
        inputs = np.zeros((len(rows), self.window), dtype=np.int64)
        targets = np.full((len(rows), self.window), IGNORE, dtype=np.int64)
        starts = np.ones(len(rows), dtype=bool)
        for slot, row in enumerate(rows):
            poured = row_start[row] + position  # the window's place among all windows, in order
            if poured >= row_start[row + 1]:
                continue  # past the row's last segment: an empty window, nothing scored
            index = int(np.searchsorted(first_window, poured, side="right")) - 1
            segment = int(order[index])
            within = poured - int(first_window[index])
            start = int(self.segments[segment, 0]) + within * self.window
            count = min(self.window, int(self.predictions[segment]) - within * self.window)
            band = np.asarray(self.ids[start : start + count + 1], dtype=np.int64)
            inputs[slot, :count], targets[slot, :count] = band[:-1], band[1:]
            starts[slot] = within == 0 or position == 0
        return Window(*(to_device(a, self.device) for a in (inputs, targets, starts)),
                      scored=int((targets != IGNORE).sum()))

    def windows(self, share: tuple[int, int] = (0, 1)) -> Iterator[Window]:
        """Every window of the first epoch for rows k, k + n, ... of `share` (k, n): validation."""
        rows = range(share[0], self.global_rows, share[1])
        for position in range(self.steps_in_epoch(0)):
            yield self.window_at(0, position, rows)

    def scored_tokens(self, window: Window) -> int:
        return window.scored if window.scored is not None else int((window.targets != IGNORE).sum())

    def scored_in_all_rows(self, epoch: int, position: int) -> int:
        """The predictions of column `position` in every process's rows, counted without reading
        them: what the step's mean loss divides by, so that rows padded unevenly weigh right."""
        order, first_window, row_start = self._epoch_layout(epoch)
        poured = row_start[:-1] + position
        poured = poured[poured < row_start[1:]]
        index = np.searchsorted(first_window, poured, side="right") - 1
        within = poured - first_window[index]
        return int(np.minimum(self.window, self.predictions[order[index]] - within * self.window).sum())

    def _epoch_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This epoch's order of the segments, the first window of each among all windows, and the
        first window of each row (and, last, the number of windows)."""
        if epoch != self._epoch:
            count = len(self.segments)
            if self.seed is None:
                order = np.arange(count)
            else:  # the same permutation a resumed run computes for this epoch
                generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
                order = torch.randperm(count, generator=generator).numpy()
            first_window = np.zeros(count + 1, dtype=np.int64)
            np.cumsum(self.segment_windows[order], out=first_window[1:])
            total = int(first_window[-1])
            row_start = np.minimum(np.arange(self.global_rows + 1) * self.capacity, total)
            if self.documents:  # a row begins with the first document that starts in its share
                row_start = first_window[np.searchsorted(first_window, row_start)]
            self._epoch, self._order, self._first_window, self._row_start = epoch, order, first_window, row_start
        return self._order, self._first_window, self._row_start
