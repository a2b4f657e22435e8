"""Batches for truncated BPTT, behind one interface: windows of ids with their targets, epoch by
epoch, from one continuous text (StreamBatches) or from many short documents (DocumentBatches).

A stream is laid out as `rows` contiguous slices (see `batchify`); each row's state flows from
one window to the next. A file of short independent texts (names, headlines, paragraphs) is read
document by document: each as  <end> d o c <end>  (one marker both ends one document and starts
the next), and no recurrent state ever flows from one document into another.

Documents are laid out in batch rows, one after another, each starting at the top of a window:

    window      0         1         2             rows = 2, window = 4, `.` is padding (no loss)
    row 0   | E a b E | E c d e | f E . . |      resets: row 0 at windows 0 and 1
    row 1   | E g h i | j k E . | E l E . |              row 1 at windows 0 and 2

A row's state is zeroed where a document starts and carried through the windows of a long one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from textgen.config import SettingError
from textgen.errors import TextgenError

IGNORE = -100  # the target id cross_entropy skips


class Window(NamedTuple):
    """One band of columns the model reads in a step: what every batch, stream or documents, yields."""

    inputs: torch.Tensor  # (rows, window) token ids
    targets: torch.Tensor  # (rows, window) the next ids; IGNORE where nothing is predicted
    starts: torch.Tensor | None = None  # (rows,) bool: the row begins a document, so its state is zeroed
    scored: int | None = None  # how many targets are not IGNORE, where counted on the host before the copy


def to_device(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A host array on `device`; to a GPU through pinned memory, without waiting for the copy (the
    next kernels queue behind it), so reading the next batch overlaps the GPU's work."""
    tensor = torch.from_numpy(array)
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class Layout:
    """Windows of token ids ready for the model, with where each row starts a new document."""

    inputs: torch.Tensor  # (windows, rows, window) int64
    targets: torch.Tensor  # same shape; IGNORE where there is no next token to predict
    starts: torch.Tensor  # (windows, rows) bool: the row begins a document with this window

    @property
    def windows(self) -> int:
        return self.inputs.shape[0]

    @property
    def rows(self) -> int:
        return self.inputs.shape[1]

    def __getitem__(self, index: int) -> Window:
        return Window(self.inputs[index], self.targets[index], self.starts[index])

    def __iter__(self) -> Iterator[Window]:
        return (self[index] for index in range(self.windows))


def lay_out(documents: list[list[int]], boundary_id: int, rows: int, window: int) -> Layout:
    """Deal documents (already in the order wanted) to the row with the fewest windows so far."""
    if not documents:
        raise TextgenError("there are no documents to lay out")
    rows = max(1, min(rows, len(documents)))
    row_windows: list[list[tuple[list[int], list[int], bool]]] = [[] for _ in range(rows)]
    for ids in documents:
        sequence = [boundary_id, *ids, boundary_id]
        inputs, targets = sequence[:-1], sequence[1:]
        row = min(range(rows), key=lambda r: len(row_windows[r]))
        for start in range(0, len(inputs), window):
            chunk_in = inputs[start : start + window]
            chunk_out = targets[start : start + window]
            padding = window - len(chunk_in)
            row_windows[row].append((chunk_in + [0] * padding, chunk_out + [IGNORE] * padding, start == 0))
    count = max(len(r) for r in row_windows)
    empty = ([0] * window, [IGNORE] * window, True)
    for r in row_windows:
        r.extend([empty] * (count - len(r)))
    inputs = torch.tensor([[r[w][0] for r in row_windows] for w in range(count)], dtype=torch.long)
    targets = torch.tensor([[r[w][1] for r in row_windows] for w in range(count)], dtype=torch.long)
    starts = torch.tensor([[r[w][2] for r in row_windows] for w in range(count)], dtype=torch.bool)
    return Layout(inputs, targets, starts)


def shuffled(documents: list[list[int]], seed: int, epoch: int) -> list[list[int]]:
    """This epoch's order: a permutation fixed by the run's seed and the epoch number, so a resumed
    run deals exactly the documents the interrupted one would have."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    order = torch.randperm(len(documents), generator=generator).tolist()
    return [documents[i] for i in order]


def batchify(ids: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay a stream out as `rows` contiguous slices, inputs and next-token targets side by side:

        stream  a b c d e f g h i j k l m        rows = 3
        inputs  | a b c d |   targets | b c d e |
                | e f g h |           | f g h i |
                | i j k l |           | j k l m |

    A window of the training loop is a band of columns; each row's state flows from one window
    to the next, so the model sees its slice of the corpus in order.
    """
    length = (ids.numel() - 1) // rows
    inputs = ids[: rows * length].view(rows, length)
    targets = ids[1 : rows * length + 1].view(rows, length)
    return inputs, targets


class StreamBatches:
    """The training windows of one continuous text: the same bands of columns every epoch.

    `ids` is a tensor (a small corpus: laid out once, on the training device) or a numpy array,
    typically memory-mapped (a big corpus: each window's band is read from it as it is needed,
    so the ids never need to fit in memory)."""

    def __init__(self, ids: torch.Tensor | np.ndarray, rows: int, seq_len: int,
                 device: torch.device | str = "cpu", rank: int = 0, world: int = 1) -> None:
        count = len(ids)
        if count < seq_len + 1:
            raise SettingError(
                f"the training text is {count} tokens long, shorter than one training window "
                f"({{seq_len}} {seq_len}); use a longer text or a smaller {{seq_len}}", "seq_len"
            )
        # Every row holds at least one whole window.
        self.global_rows = min(rows, (count - 1) // seq_len)
        if self.global_rows % world:
            raise SettingError(f"the text fills {self.global_rows} rows of {{seq_len}} {seq_len}, which do not split "
                               f"evenly over {world} processes; give a smaller {{batch_size}} or {{seq_len}}",
                               "seq_len", "batch_size")
        # Under torchrun each process takes a contiguous share of the rows (see distributed.py).
        self.rows = self.global_rows // world
        self.first_row = rank * self.rows
        self.window = seq_len
        self.tokens = count
        self.row_length = (count - 1) // self.global_rows
        self.device = device
        self._steps = math.ceil(self.row_length / seq_len)
        if isinstance(ids, torch.Tensor):
            share = slice(self.first_row, self.first_row + self.rows)
            self.inputs, self.targets = (t[share].to(device) for t in batchify(ids, self.global_rows))
            self.mapped = None
        else:
            self.mapped = ids

    def steps_in_epoch(self, epoch: int) -> int:
        return self._steps

    def window_at(self, epoch: int, position: int) -> Window:
        start = position * self.window
        if self.mapped is None:
            columns = slice(start, start + self.window)
            return Window(self.inputs[:, columns], self.targets[:, columns])
        stop = min(start + self.window, self.row_length)
        band = np.stack([self.mapped[row * self.row_length + start : row * self.row_length + stop + 1]
                         for row in range(self.first_row, self.first_row + self.rows)])
        band = to_device(band.astype(np.int64), self.device)
        return Window(band[:, :-1], band[:, 1:])

    def scored_tokens(self, window: Window) -> int:
        return window.inputs.numel()

    def scored_in_all_rows(self, epoch: int, position: int) -> int:
        return self.global_rows * min(self.window, self.row_length - position * self.window)


class DocumentBatches:
    """The training windows of a document corpus, epoch by epoch, each epoch in its own order."""

    def __init__(self, documents: list[list[int]], end_id: int, rows: int, seq_len: int, seed: int) -> None:
        if not documents:
            raise SettingError("the training part holds no documents; check {documents} and {val_fraction}",
                               "documents", "val_fraction")
        self.documents, self.end_id, self.seed = documents, end_id, seed
        self.rows = max(1, min(rows, len(documents)))
        self.window = window_for(documents, seq_len)
        self.tokens = sum(len(ids) + 1 for ids in documents)
        self._epoch, self._layout = -1, None

    def layout(self, epoch: int) -> Layout:
        if epoch != self._epoch:
            order = shuffled(self.documents, self.seed, epoch)
            self._epoch, self._layout = epoch, lay_out(order, self.end_id, self.rows, self.window)
        return self._layout

    def steps_in_epoch(self, epoch: int) -> int:
        return self.layout(epoch).windows

    def window_at(self, epoch: int, position: int) -> Window:
        return self.layout(epoch)[position]

    def scored_tokens(self, window: Window) -> int:
        return int((window.targets != IGNORE).sum())  # the layout stays on the host: no wait for a GPU

    def scored_in_all_rows(self, epoch: int, position: int) -> int:
        return self.scored_tokens(self.window_at(epoch, position))  # documents in memory train in one process


Batches = StreamBatches | DocumentBatches


def window_for(documents: list[list[int]], seq_len: int) -> int:
    """Short documents (names, titles) get windows just long enough for the longest, not seq_len."""
    return window_for_predictions(max(len(ids) for ids in documents) + 1, seq_len)


def window_for_predictions(longest: int, seq_len: int) -> int:
    """The window for documents whose longest makes `longest` predictions (its tokens and the end marker)."""
    return max(1, min(seq_len, longest))
