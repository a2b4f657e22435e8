"""The data a model learns from: corpus.py reads a user's file or a named corpus (strictly: a bad
file is a one-line error naming its byte offset), split.py cuts the text for training and
validation, batches.py lays ids out in windows for truncated BPTT (streams and documents behind
one interface), and segments.py does so over a prepared corpus's memory-mapped ids, file by file
or document by document (reading.py, pieces.py and prepare.py build that id cache)."""

from textgen.data.batches import (
    IGNORE, Batches, DocumentBatches, Layout, StreamBatches, Window, batchify, lay_out, shuffled, window_for,
    window_for_predictions,
)
from textgen.data.segments import SegmentBatches
from textgen.data.split import document_split_point, split_documents, split_text

__all__ = [
    "IGNORE", "Batches", "DocumentBatches", "Layout", "SegmentBatches", "StreamBatches", "Window", "batchify", "document_split_point",
    "lay_out", "shuffled", "split_documents", "split_text", "window_for", "window_for_predictions",
]
