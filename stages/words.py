"""Language-aware word and sentence splitting shared by the quality filters.

The Gopher/C4/FineWeb reference implementations (datatrove) split words with spaCy's rule-based
tokenizer for the document's language (``spacy.blank(lang)``: no model, no download) and count
C4's sentences with spaCy's ``sentencizer``.  We keep spaCy's rules, so decisions agree with
datatrove's, but not its cost.  Measured on the 2,256 extracted pages of ``dev_web.warc.gz``
(2 shared cores): datatrove's ``split_into_words`` takes 19.7 s, ``nlp.tokenizer`` alone 8.7 s.

spaCy tokenizes every whitespace-separated chunk on its own, so the token list of a text is the
concatenation of the token lists of its chunks.  ``WordSplitter`` memoises chunk -> tokens
(web text is Zipfian: 2.2 M chunks but 296 k distinct) and skips spaCy entirely for plain
alphabetic chunks that are not one of its special cases ("cannot" -> "can", "not").  Warm, the
same 2,256 pages take 0.47 s (18x less than spaCy itself); token lists are identical to spaCy's
on 2,254 of the 2,256 pages (spaCy's URL matcher sees across a ``(`` in two code snippets).

Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Burmese,
Tibetan) would come out of a whitespace tokenizer as one "word" per clause, and every word-based
threshold would be meaningless.  Proper segmenters for them (jieba, SudachiPy, PyThaiNLP, ...)
are not dependencies, so ``unsegmented_script`` detects such text (by the document's language
label, and by the share of its characters in those scripts, which also catches mislabelled
pages) and the filters skip it with a counted reason instead of applying English rules silently.
"""

from __future__ import annotations

import threading
import unicodedata
from functools import cache
from typing import Any

import regex

# Languages whose standard orthography does not separate words with spaces.
UNSEGMENTED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu", "gan", "dz"})
_UNSEGMENTED_CHARS = regex.compile(
    r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}]"
)
# Share of non-space characters in those scripts above which a text is treated as unsegmented.
# Japanese/Chinese pages with English navigation are ~0.5-0.9; European pages quoting a few
# CJK names are < 0.01.
UNSEGMENTED_SHARE = 0.3

# Bound on memoised chunks per language: ~200 bytes each, so ~60 MB at the bound.
CHUNK_CACHE_SIZE = 300_000


def unsegmented_script(text: str, language: str | None) -> bool:
    """True if ``text`` is written (mostly) without spaces between words."""
    if language in UNSEGMENTED_LANGUAGES:
        return True
    n_chars = len(text) - text.count(" ") - text.count("\n")
    if n_chars <= 0:
        return False
    # subn counts without building a list of matches
    n_unsegmented = _UNSEGMENTED_CHARS.subn("", text)[1]
    return n_unsegmented > UNSEGMENTED_SHARE * n_chars


def is_punct(token: str) -> bool:
    """spaCy's ``Token.is_punct``: every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(ch).startswith("P") for ch in token)


class WordSplitter:
    """spaCy's word tokenization for one language, memoised per whitespace-separated chunk."""

    def __init__(self, language: str) -> None:
        self.language, self._tokenizer = _load_spacy_tokenizer(language)
        self._special = frozenset(self._tokenizer.rules or ())
        self._cache: dict[str, tuple[str, ...]] = {}
        self._punct_cache: dict[str, bool] = {}
        from spacy.pipeline.sentencizer import Sentencizer

        self._punct_chars = frozenset(Sentencizer.default_punct_chars)

    def chunk_tokens(self, chunk: str) -> tuple[str, ...]:
        tokens = self._cache.get(chunk)
        if tokens is None:
            if chunk.isalpha() and chunk not in self._special:
                tokens = (chunk,)
            else:
                # one spaCy call per distinct chunk (~20 us for code/URL-like chunks); batching
                # chunks into one call was no faster and lets URLs match across the join
                tokens = tuple(t.text for t in self._tokenizer(chunk))
            if len(self._cache) >= CHUNK_CACHE_SIZE:
                self._cache.clear()
            self._cache[chunk] = tokens
        return tokens

    def words(self, text: str) -> list[str]:
        """Tokens of ``text`` without whitespace tokens, as datatrove's ``split_into_words``."""
        out: list[str] = []
        extend = out.extend
        get = self._cache.get
        for chunk in text.split():
            tokens = get(chunk)
            extend(tokens if tokens is not None else self.chunk_tokens(chunk))
        return out

    def count_sentences(self, line: str) -> int:
        """Sentences in one line by spaCy's ``sentencizer`` rule, as datatrove's C4 filter counts
        them: a sentence ends at a token in ``punct_chars`` and the next one starts at the first
        following token that is neither punctuation nor such a character.  Whitespace tokens
        (spaCy makes one of each whitespace run other than a single space) count as "not
        punctuation", so they are kept as empty markers here.  ``line`` has no newlines."""
        if not line.strip():
            return 0
        sentences = 1
        seen_period = False
        punct_chars = self._punct_chars
        if line.isprintable():
            chunks = line.split(" ")
            if len(chunks) > 1 and not chunks[-1] and chunks[-2]:
                chunks.pop()  # a single trailing space belongs to the last token, as in spaCy
        else:
            chunks = _chunks_and_whitespace(line)
        for chunk in chunks:
            for token in self.chunk_tokens(chunk) if chunk else ("",):
                in_punct_chars = token in punct_chars
                if seen_period and not in_punct_chars and not self._is_punct(token):
                    sentences += 1
                    seen_period = False
                elif in_punct_chars:
                    seen_period = True
        return sentences

    def _is_punct(self, token: str) -> bool:
        if not token:
            return False
        value = self._punct_cache.get(token)
        if value is None:
            value = self._punct_cache[token] = is_punct(token)
        return value


_WHITESPACE_RUN = regex.compile(r"(\s+)")


def _chunks_and_whitespace(line: str) -> list[str]:
    """Chunks of a line with tabs or other non-space whitespace, in spaCy's terms: a whitespace
    run becomes one whitespace token (here ``""``) unless it is a single plain space."""
    out = []
    for i, part in enumerate(_WHITESPACE_RUN.split(line)):
        if i % 2 == 0:
            if part:
                out.append(part)
        elif part != " ":
            out.append("")
    return out


_splitters: dict[str, WordSplitter] = {}
_splitters_lock = threading.Lock()


def splitter_for(language: str | None, default: str = "en") -> WordSplitter:
    """The (process-wide, memoised) splitter for a language code; unknown codes use spaCy's
    language-neutral ``xx`` rules."""
    key = language or default
    splitter = _splitters.get(key)
    if splitter is None:
        with _splitters_lock:
            splitter = _splitters.get(key)
            if splitter is None:
                splitter = _splitters[key] = WordSplitter(key)
    return splitter


@cache
def _load_spacy_tokenizer(language: str) -> tuple[str, Any]:
    """``spacy.blank(language).tokenizer``; falls back to ``xx`` where spaCy has no rules for the
    language or they need a segmenter that is not installed (ja, ko, th, vi)."""
    import spacy
    from spacy.tokenizer import Tokenizer

    try:
        tokenizer = spacy.blank(language).tokenizer
    except Exception:  # ImportError for missing segmenters, spaCy's own error for unknown codes
        return "xx", spacy.blank("xx").tokenizer
    if not isinstance(tokenizer, Tokenizer):  # zh: a character segmenter, not rules
        return "xx", spacy.blank("xx").tokenizer
    return language, tokenizer


def stop_words_for(language: str) -> frozenset[str] | None:
    """spaCy's stop-word list for a language, or ``None`` where it has none."""
    try:
        module = __import__(f"spacy.lang.{language}.stop_words", fromlist=["STOP_WORDS"])
    except ImportError:
        return None
    return frozenset(module.STOP_WORDS)
