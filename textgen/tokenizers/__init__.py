"""The only code that maps text to ids and ids back to text.

Three kinds share one protocol (base.py): `char` (char.py, one id per Unicode code point), `word`
(word.py: words, numbers, punctuation marks and whitespace runs) and `subword` (subword.py, a
sentencepiece model with byte fallback, so nothing is ever unknown). documents.py adds an end
marker for a text of separate documents, stream.py decodes one token at a time, unseen.py deals
with symbols a model never saw, building.py learns a tokenizer or reads one back. Each kind saves
its vocabulary as its own small file in a checkpoint; loading reads only JSON or a sentencepiece
proto, never code.
"""

from textgen.tokenizers.base import JSON_FILE, MODEL_FILE, UNK, Tokenizer, describe_symbols
from textgen.tokenizers.building import build_tokenizer, load_tokenizer
from textgen.tokenizers.char import CharTokenizer
from textgen.tokenizers.documents import DocumentTokenizer, end_marker
from textgen.tokenizers.stream import StreamDecoder
from textgen.tokenizers.subword import SentencePieceTokenizer
from textgen.tokenizers.unseen import UnseenSymbols, encode_leniently, unseen_symbols
from textgen.tokenizers.word import WordTokenizer

__all__ = [
    "JSON_FILE", "MODEL_FILE", "UNK", "CharTokenizer", "DocumentTokenizer", "SentencePieceTokenizer", "StreamDecoder",
    "Tokenizer", "UnseenSymbols", "WordTokenizer", "build_tokenizer", "describe_symbols", "encode_leniently",
    "end_marker", "load_tokenizer", "unseen_symbols",
]
