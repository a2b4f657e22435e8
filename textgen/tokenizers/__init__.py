"""The only code that maps text to ids and ids back to text.

Three kinds share one protocol (base.py): `char` (char.py, one id per Unicode code point), `word`
(word.py: words, numbers, punctuation marks and whitespace runs) and `subword` (subword.py, a
sentencepiece model with byte fallback, so nothing is ever unknown). Each kind's class also says
how it learns from a text streamed in pieces, how it encodes a piece into a numpy array and where
a big corpus may be cut, so preparing one (data/prepare.py) never maps text to ids itself.
building.py registers the kinds, learns a tokenizer or reads one back; documents.py adds an end
marker for a text of separate documents, growing.py grows a trained model's vocabulary for a
new text, stream.py decodes one token at a time, unseen.py deals
with symbols a model never saw, parallel.py encodes a big corpus on every core. Each kind saves
its vocabulary as its own small file in a checkpoint; loading reads only JSON or a sentencepiece
proto, never code.
"""

from textgen.tokenizers.base import (
    JSON_FILE, MODEL_FILE, UNK, TokenizerKind, Tokenizer, TokenNumbering, UnseenSymbols, describe_symbols,
    ids_dtype,
)
from textgen.tokenizers.building import (
    KINDS, build_tokenizer, learn_tokenizer, load_tokenizer, tokenizer_kind, with_documents,
)
from textgen.tokenizers.char import CharTokenizer
from textgen.tokenizers.documents import DocumentTokenizer, end_marker
from textgen.tokenizers.growing import grown_tokenizer, origins
from textgen.tokenizers.stream import StreamDecoder
from textgen.tokenizers.subword import SentencePieceTokenizer
from textgen.tokenizers.unseen import encode_leniently, unseen_symbols
from textgen.tokenizers.word import WordTokenizer

__all__ = [
    "JSON_FILE", "KINDS", "MODEL_FILE", "UNK", "CharTokenizer", "DocumentTokenizer", "SentencePieceTokenizer",
    "StreamDecoder", "TokenNumbering", "Tokenizer", "TokenizerKind", "UnseenSymbols", "WordTokenizer",
    "build_tokenizer", "describe_symbols", "encode_leniently", "end_marker", "grown_tokenizer", "ids_dtype", "learn_tokenizer",
    "load_tokenizer", "origins", "tokenizer_kind", "unseen_symbols", "with_documents",
]
