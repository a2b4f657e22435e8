"""The one windowed cross-entropy: the summed next-token loss of a model over windows of ids,
its recurrent state carried from each window to the next.

Validation during training, `textgen evaluate`, document-mode scoring and every later view of a
model's behaviour go through `score_windows`, so all of them measure the same thing the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from textgen.data import IGNORE, SegmentBatches, Window, lay_out, window_for
from textgen.data.prepare import HeldOut
from textgen.model import RNNLanguageModel, reset_rows


@contextmanager
def evaluation_mode(model: RNNLanguageModel) -> Iterator[None]:
    """Dropout off and no autograd for the block; the model's own mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


# Logits of at most this many numbers are held at once (64 MB in float32, and as much again for the
# loss): a 20,000-word model scores in shorter windows than a char model, with the same result,
# since the state is carried.
_MAX_LOGITS = 16_000_000


def window_within_memory(model: RNNLanguageModel, rows: int, window: int) -> int:
    return max(1, min(window, _MAX_LOGITS // (rows * model.config.vocab_size)))


def score_windows(model: RNNLanguageModel, windows: Iterable[Window], rows: int) -> float:
    """Sum of next-token losses in nats over `windows`, each (rows, window) ids with its targets
    (IGNORE where nothing is scored); a row's state is zeroed where its `starts` flag is set."""
    device = model.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    with evaluation_mode(model):
        state = model.init_state(rows, device)
        for window in windows:
            if window.starts is not None:
                state = reset_rows(state, window.starts.to(device))
            logits, state = model(window.inputs.to(device), state)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                     window.targets.to(device).reshape(-1),
                                     ignore_index=IGNORE, reduction="sum").double()
    return float(total)


def total_loss(
    model: RNNLanguageModel,
    ids: torch.Tensor,
    context_id: int | None = None,
    rows: int = 32,
    window: int = 64,
    share: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """Sum of next-token losses in nats over every token of `ids` after the first
    (over every token when `context_id` supplies the one before it), and how many were scored.
    With `share` (k, n), only rows k, k + n, k + 2n, ... are scored, so n processes can each score
    their share and add the sums up; the count is always the whole text's.

    The ids are cut into `rows` contiguous segments run side by side, each carrying its
    state through windows of `window` tokens (the window changes no figure, only speed: 64 keeps
    the activations in cache, about 15% faster than 256 on a 2-core CPU); padding at the end is
    masked out:

        ids  a b c d e f g h i j k        10 predictions, rows=3, segment length 4
        row0 a b c d  -> predicts b c d e
        row1 e f g h  -> predicts f g h i
        row2 i j . .  -> predicts j k (the padding is ignored)
    """
    ids = ids.to(torch.long).flatten()
    if context_id is not None:
        ids = torch.cat([torch.tensor([context_id], dtype=torch.long), ids])
    count = ids.numel() - 1
    if count < 1:
        return 0.0, 0
    rows = max(1, min(rows, count))
    window = window_within_memory(model, rows, window)
    length = math.ceil(count / rows)
    inputs = torch.zeros(rows * length, dtype=torch.long)
    targets = torch.full((rows * length,), IGNORE, dtype=torch.long)
    inputs[:count] = ids[:-1]
    targets[:count] = ids[1:]
    inputs, targets = inputs.view(rows, length)[share[0] :: share[1]], targets.view(rows, length)[share[0] :: share[1]]
    if not len(inputs):
        return 0.0, count
    windows = (Window(inputs[:, start : start + window], targets[:, start : start + window])
               for start in range(0, length, window))
    return score_windows(model, windows, len(inputs)), count


def documents_loss(
    model: RNNLanguageModel, documents: list[list[int]], end_id: int, rows: int = 32, window: int = 256
) -> tuple[float, int]:
    """Sum of next-token losses over documents, each read from a fresh state: every token and the
    end marker after the last one are predicted, the opening marker is given."""
    if not documents:
        return 0.0, 0
    rows = max(1, min(rows, len(documents)))
    layout = lay_out(documents, end_id, rows, window_for(documents, window_within_memory(model, rows, window)))
    return score_windows(model, layout, layout.rows), int((layout.targets != IGNORE).sum())


def segments_loss(model: RNNLanguageModel, ids: np.ndarray, segments: np.ndarray, context_id: int | None = None,
                  documents: bool = False, rows: int = 32, window: int = 64,
                  share: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """Sum of next-token losses over segments of `ids` (files, or documents with their markers),
    each read from a fresh state, the first primed by `context_id` when given; and how many were
    scored (all of them, whatever `share` of the rows this process scores)."""
    segments = np.array(segments, dtype=np.int64).reshape(-1, 2)
    if context_id is not None and len(segments):
        ids, segments = np.concatenate([[context_id], np.asarray(ids, dtype=np.int64)]), segments + 1
        segments[0, 0] = 0
    if not ((segments[:, 1] - segments[:, 0]) > 1).any():
        return 0.0, 0
    layout = SegmentBatches(ids, segments, rows, window_within_memory(model, rows, window), model.device,
                            documents=documents)
    scored = len(range(share[0], layout.global_rows, share[1]))
    return (score_windows(model, layout.windows(share), scored) if scored else 0.0), layout.tokens


def held_out_loss(model: RNNLanguageModel, part: HeldOut, share: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """A prepared corpus's held-out part, scored as validation scores it: one stream as
    `total_loss` reads any text, several files or documents each from a fresh state."""
    one_stream = len(part.segments) == 1 and tuple(part.segments[0]) == (0, len(part.ids))
    if one_stream:
        return total_loss(model, torch.from_numpy(part.ids), part.context_id, share=share)
    return segments_loss(model, part.ids, part.segments, part.context_id, part.documents, share=share)


def random_windows_loss(model: RNNLanguageModel, ids: torch.Tensor, length: int = 256, count: int = 2000,
                        seed: int = 0) -> tuple[float, int]:
    """nanoGPT's protocol: the summed next-token loss over `count` windows of `length` predictions
    starting at random places (fixed by `seed`), each read from a zero state, and how many were
    scored. Higher than textgen's figure for the same model, since no prediction has more than
    `length` tokens of context (the first of each window none), and noisier; reported beside it
    so that comparisons with nanoGPT's own estimates are like for like."""
    ids = ids.to(torch.long).flatten()
    length = min(length, ids.numel() - 1)
    if length < 1:
        return 0.0, 0
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - length, (count,), generator=generator)
    offsets = torch.arange(length)
    inputs, targets = ids[starts[:, None] + offsets], ids[starts[:, None] + offsets + 1]
    rows = max(1, window_within_memory(model, 1, count * length) // length)
    total = 0.0
    for first in range(0, count, rows):
        part = slice(first, first + rows)
        total += score_windows(model, [Window(inputs[part], targets[part])], len(inputs[part]))
    return total, count * length
