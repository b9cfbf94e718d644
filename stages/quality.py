"""Heuristic quality filters of FineWeb's recipe: ``gopher_quality``, ``gopher_repetition``,
``c4_quality`` and ``fineweb_quality``.

Each is its own stage with FineWeb's thresholds as defaults (datatrove's ``GopherQualityFilter``,
``GopherRepetitionFilter``, ``C4QualityFilter(filter_no_terminal_punct=False)`` and
``FineWebQualityFilter``) and the same rules in the same order, so the first failing rule names
the drop reason as datatrove would.  ``bench/quality_filters.py`` checks the decisions against
datatrove on the dev pages; the README lists every class of disagreement.

What differs from datatrove, on purpose:

* Cost.  datatrove runs spaCy over the whole document in three of the four filters and once more
  per line in C4.  Here one ``TextDoc`` per (text, language) holds the words, lines and n-gram
  ids, memoised across the four stages of a task (they run back to back on the same batch), and
  words come from ``stages.words.WordSplitter`` (spaCy's rules, memoised per chunk).  n-gram
  repetition is computed on integer ids with numpy instead of joined strings.
* Language.  Rows carry a ``language`` column once the ``language`` stage ran; words are split
  with spaCy's rules for that language (``language`` parameter when the column is absent) and
  ``gopher_quality`` looks for that language's stop words.  Text in scripts without spaces
  between words is not judged by whitespace rules: it is kept (or dropped, ``unsegmented: drop``)
  with a counted reason.
* ``mode: annotate`` writes every score as a column ``<stage>_<score>`` plus ``<stage>_reason``
  (the rule that would have dropped it) and drops nothing, so thresholds can be re-tuned on the
  columns later without recomputing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

# datatrove's character sets, reused so that "symbol" and "terminal punctuation" mean the same
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION
from pydantic import Field

from pipeline.registry import register_stage
from pipeline.stage import Params, Resources, Stage
from stages.words import WordSplitter, splitter_for, stop_words_for, unsegmented_script

# datatrove's names of the same drop reasons, where they differ (repetition, C4 and FineWeb
# reasons have the same names); for comparing with datatrove's filters (bench, tests)
DATATROVE_REASONS = {
    "gopher_short_doc": "short_doc",
    "gopher_long_doc": "long_doc",
    "gopher_below_avg_threshold": "short_mean_word_length",
    "gopher_above_avg_threshold": "long_mean_word_length",
    "gopher_too_many_hashes": "too_many_hashes",
    "gopher_too_many_ellipsis": "too_many_ellipsis",
    "gopher_too_many_bullets": "too_many_bullets",
    "gopher_too_many_end_ellipsis": "too_many_end_ellipsis",
    "gopher_below_alpha_threshold": "below_alpha_threshold",
    "gopher_enough_stop_words": "not_enough_stop_words",
}
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
PARAGRAPH_BREAK = re.compile(r"\n{2,}")
LINE_BREAKS = re.compile(r"\n+")

# Memo of analysed documents shared by the quality stages of one worker process, bounded by the
# characters it holds (a document's words and ids cost ~3x its text).
_MEMO_CHARS = 32_000_000


class TextDoc:
    """One document's text split the ways the filters need, each computed on first use."""

    def __init__(self, text: str, language: str) -> None:
        self.text = text
        self.language = language
        self.splitter: WordSplitter = splitter_for(language)

    @cached_property
    def words(self) -> list[str]:
        return self.splitter.words(self.text)

    @cached_property
    def word_profile(self) -> tuple[int, int, int]:
        """(words that are not only punctuation, their total length, words with a letter)."""
        n_non_symbol = non_symbol_chars = n_alpha = 0
        for w in self.words:
            if w.isalpha():
                n_non_symbol += 1
                non_symbol_chars += len(w)
                n_alpha += 1
                continue
            if not all(ch in PUNCTUATION_SET for ch in w):
                n_non_symbol += 1
                non_symbol_chars += len(w)
            if any(ch.isalpha() for ch in w):
                n_alpha += 1
        return n_non_symbol, non_symbol_chars, n_alpha

    @cached_property
    def word_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Per word: an id (equal words, equal ids) and its length; for n-gram statistics."""
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in self.words), np.int64, len(self.words))
        lengths = np.fromiter(map(len, self.words), np.int64, len(self.words))
        return ids, lengths


_memo: dict[tuple[str, str], TextDoc] = {}
_memo_chars = 0


def analyse(text: str, language: str) -> TextDoc:
    """The memoised ``TextDoc`` of a text: the next quality stage on the same row reuses it."""
    global _memo_chars
    key = (language, text)
    doc = _memo.get(key)
    if doc is None:
        if _memo_chars > _MEMO_CHARS:
            _memo.clear()
            _memo_chars = 0
        doc = _memo[key] = TextDoc(text, language)
        _memo_chars += len(text)
    return doc


def _below(value: float, limit: float | None, reason: str) -> str | None:
    return reason if limit is not None and value < limit else None


def _above(value: float, limit: float | None, reason: str) -> str | None:
    return reason if limit is not None and value > limit else None


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


class QualityParams(Params):
    mode: Literal["filter", "annotate"] = Field(
        "filter", description="annotate: write <stage>_<score> columns and <stage>_reason, drop nothing"
    )
    language: str = Field("en", description="language of rows without a 'language' column value")
    unsegmented: Literal["keep", "drop"] = Field(
        "keep", description="text in scripts without spaces between words: keep unjudged, or drop"
    )


class QualityFilter(Stage):
    """Base of the four filters: row loop, language, annotate mode, counting.

    A subclass implements ``checks(doc, scores)``: a generator that computes its scores into
    ``scores`` in rule order and yields, after each rule, the drop reason or ``None``.  Filter
    mode stops at the first reason (later scores are never computed); annotate mode runs every
    rule and keeps the first reason.
    """

    resources = Resources(cpus=1, memory_mb=1024)
    # score name -> Arrow type of its annotate column
    SCORES: ClassVar[dict[str, pa.DataType]] = {}
    # what a filter that rewrites kept text does to it: the before/after samples' reason
    # ``changed:<CHANGE>`` (C4 removes lines; the report shows them highlighted)
    CHANGE: ClassVar[str] = "text"

    def setup(self) -> None:
        # spaCy's import and rules (~0.6 s, once per worker process) load here, not in a batch
        splitter_for(self.params.language)

    def score_types(self) -> dict[str, pa.DataType]:
        return self.SCORES

    def checks(self, doc: TextDoc, scores: dict[str, Any]) -> Iterator[str | None]:
        raise NotImplementedError

    def judge(self, text: str | None, language: str | None) -> tuple[str | None, dict[str, Any], str | None]:
        """(drop reason, scores, new text or None if unchanged) for one document."""
        p = self.params
        scores: dict[str, Any] = {}
        if text is None or not text.strip():
            return "empty", scores, None
        if unsegmented_script(text, language):
            if p.unsegmented == "drop":
                return "unsegmented_script", scores, None
            # keyed by the row's label; "unlabelled" when only the script gave it away
            self.stats.count(language or "unlabelled", group="unsegmented_kept")
            return None, scores, None
        doc = analyse(text, language or p.language)
        reason = None
        for outcome in self.checks(doc, scores):
            if outcome is not None and reason is None:
                reason = outcome
                if p.mode == "filter":
                    break
        return reason, scores, self.rewritten(doc, scores) if reason is None else None

    def rewritten(self, doc: TextDoc, scores: dict[str, Any]) -> str | None:
        """Filters that edit the text (C4 removes lines) return the new text here."""
        return None

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Sequence[str | None]]:
        names = batch.schema.names
        if "text" not in names:
            raise ValueError(f"stage {self.name!r} needs a 'text' column: put it after 'extract'")
        texts = batch.column("text").to_pylist()
        languages = batch.column("language").to_pylist() if "language" in names else [None] * len(texts)
        judged = [self.judge(text, language) for text, language in zip(texts, languages)]
        if self.params.mode == "annotate":
            return self._annotated(batch, judged), [None] * len(texts)
        reasons = [reason for reason, _, _ in judged]
        if any(new is not None for _, _, new in judged):
            new_texts = [t if new is None else new for t, (_, _, new) in zip(texts, judged)]
            ids = batch.column("id").to_pylist() if "id" in names else [None] * len(texts)
            changed = 0
            for doc_id, text, (reason, _, new) in zip(ids, texts, judged):
                if reason is None and new is not None:
                    changed += 1
                    self.sample_change(f"changed:{self.CHANGE}", doc_id, text, new)
            self.stats.count("docs_changed", changed)
            batch = batch.set_column(names.index("text"), "text", pa.array(new_texts, pa.string()))
        if any(reasons):
            batch = batch.filter(pa.array([r is None for r in reasons], pa.bool_()))
        return batch, reasons

    def _annotated(self, batch: pa.RecordBatch, judged: list) -> pa.RecordBatch:
        columns: dict[str, pa.Array] = {
            f"{self.name}_{score}": pa.array([scores.get(score) for _, scores, _ in judged], type)
            for score, type in self.score_types().items()
        }
        columns[f"{self.name}_reason"] = pa.array([reason for reason, _, _ in judged], pa.string())
        for reason, _, _ in judged:
            if reason is not None:
                self.stats.count(reason, group="would_drop")
        for name, values in columns.items():
            i = batch.schema.get_field_index(name)
            batch = batch.append_column(name, values) if i < 0 else batch.set_column(i, name, values)
        return batch


# --------------------------------------------------------------------------------------------
class GopherQualityParams(QualityParams):
    min_doc_words: int | None = Field(50, description="drop documents with fewer words (null: no limit)")
    max_doc_words: int | None = Field(100_000, description="drop documents with more words")
    min_avg_word_length: float | None = Field(3, description="min mean word length in characters")
    max_avg_word_length: float | None = Field(10, description="max mean word length in characters")
    max_symbol_word_ratio: float | None = Field(0.1, description="max (# and ... symbols) per word")
    max_bullet_lines_ratio: float | None = Field(0.9, description="max share of lines starting with a bullet")
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, description="max share of lines ending in an ellipsis"
    )
    min_alpha_words_ratio: float | None = Field(0.8, description="datatrove: max_non_alpha_words_ratio")
    min_stop_words: int | None = Field(2, description="min stop words (of stop_words) in the document")
    stop_words: list[str] | dict[str, list[str]] | None = Field(
        None,
        description="one list for every language, or a list per language code; default: Gopher's "
        "eight English words for en, spaCy's stop-word list for other languages",
    )


@register_stage
class GopherQuality(QualityFilter):
    """Gopher's quality rules (Rae et al. 2021, §A.1.1): word count and length, symbols, bullets,
    ellipses, alphabetic words, stop words."""

    name = "gopher_quality"
    Params = GopherQualityParams
    SCORES: ClassVar[dict[str, pa.DataType]] = {
        "n_words": pa.int64(),
        "mean_word_length": pa.float64(),
        "hash_ratio": pa.float64(),
        "ellipsis_ratio": pa.float64(),
        "bullet_lines_ratio": pa.float64(),
        "ellipsis_lines_ratio": pa.float64(),
        "alpha_words_ratio": pa.float64(),
        "stop_words": pa.int64(),
    }

    def checks(self, doc: TextDoc, s: dict[str, Any]) -> Iterator[str | None]:
        p = self.params
        text = doc.text
        n_non_symbol, non_symbol_chars, n_alpha = doc.word_profile
        n_tokens = len(doc.words)  # datatrove's ratios divide by all tokens, punctuation included
        s["n_words"] = n_non_symbol
        yield _below(n_non_symbol, p.min_doc_words, "short_doc")
        yield _above(n_non_symbol, p.max_doc_words, "long_doc")

        s["mean_word_length"] = mean = non_symbol_chars / n_non_symbol if n_non_symbol else 0.0
        yield _below(mean, p.min_avg_word_length, "short_mean_word_length")
        yield _above(mean, p.max_avg_word_length, "long_mean_word_length")

        s["hash_ratio"] = _ratio(text.count("#"), n_tokens)
        yield _above(s["hash_ratio"], p.max_symbol_word_ratio, "too_many_hashes")
        s["ellipsis_ratio"] = _ratio(text.count("...") + text.count("…"), n_tokens)
        yield _above(s["ellipsis_ratio"], p.max_symbol_word_ratio, "too_many_ellipsis")

        lines = text.splitlines()
        bullets = sum(1 for line in lines if line.lstrip().startswith(("•", "-")))
        s["bullet_lines_ratio"] = _ratio(bullets, len(lines))
        yield _above(s["bullet_lines_ratio"], p.max_bullet_lines_ratio, "too_many_bullets")
        ellipsis_lines = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
        s["ellipsis_lines_ratio"] = _ratio(ellipsis_lines, len(lines))
        yield _above(s["ellipsis_lines_ratio"], p.max_ellipsis_lines_ratio, "too_many_end_ellipsis")

        s["alpha_words_ratio"] = _ratio(n_alpha, n_tokens)
        yield _below(s["alpha_words_ratio"], p.min_alpha_words_ratio, "below_alpha_threshold")

        stop_words = self._stop_words(doc.language)
        if stop_words is None:
            self.stats.count(doc.language, group="no_stop_words_list")
        else:
            s["stop_words"] = len(stop_words.intersection(doc.words))
            yield _below(s["stop_words"], p.min_stop_words, "not_enough_stop_words")

    def setup(self) -> None:
        super().setup()
        self._stop_word_cache: dict[str, frozenset[str] | None] = {}

    def _stop_words(self, language: str) -> frozenset[str] | None:
        cache = self._stop_word_cache
        if language not in cache:
            configured = self.params.stop_words
            if isinstance(configured, list):
                cache[language] = frozenset(configured)
            elif isinstance(configured, dict) and language in configured:
                cache[language] = frozenset(configured[language])
            elif language == "en":
                cache[language] = frozenset(GOPHER_STOP_WORDS)
            else:
                cache[language] = stop_words_for(language)
        return cache[language]


# --------------------------------------------------------------------------------------------
class GopherRepetitionParams(QualityParams):
    dup_line_frac: float | None = Field(0.3, description="max share of lines that repeat an earlier line")
    dup_para_frac: float | None = Field(0.3, description="max share of paragraphs that repeat an earlier one")
    dup_line_char_frac: float | None = Field(0.2, description="max character share of repeated lines")
    dup_para_char_frac: float | None = Field(0.2, description="max character share of repeated paragraphs")
    top_n_grams: dict[int, float] = Field(
        {2: 0.2, 3: 0.18, 4: 0.16}, description="n -> max character share of the most frequent n-gram"
    )
    dup_n_grams: dict[int, float] = Field(
        {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> max character share of repeated n-grams",
    )


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated items, their characters): every occurrence after the first counts."""
    seen: set[str] = set()
    n_dup = dup_chars = 0
    for item in items:
        if item in seen:
            n_dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return n_dup, dup_chars


def ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """One int64 key per n-gram of word ids; equal n-grams, equal keys.  Exact packing while it
    fits 63 bits, else a multiplicative hash (collision odds ~m^2/2^64 for m n-grams)."""
    m = len(ids) - n + 1
    bits = max(int(ids.max()).bit_length(), 1) if len(ids) else 1
    keys = ids[:m].astype(np.uint64)
    if bits * n <= 63:
        for j in range(1, n):
            keys = (keys << np.uint64(bits)) | ids[j : j + m].astype(np.uint64)
    else:
        mult = np.uint64(0x9E3779B97F4A7C15)
        for j in range(1, n):
            keys = keys * mult + ids[j : j + m].astype(np.uint64) + np.uint64(j)
    return keys.view(np.int64)


def top_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count; ties go to
    the n-gram seen first, as ``Counter.most_common(1)``."""
    keys = ngram_keys(ids, n)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    best = counts.max()
    where = first[counts == best].min()
    return int(best) * (int(lengths[where : where + n].sum()) + n - 1)


def repeated_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of repeated n-grams (words joined without spaces), scanning left to right and
    jumping past each repeat so overlapping repeats count once: datatrove's ``find_all_duplicate``
    on ids.  Up to the first repeat the scan adds every n-gram, so it starts there."""
    m = len(ids) - n + 1
    keys = ngram_keys(ids, n)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    is_repeat = first[inverse] < np.arange(m)
    if not is_repeat.any():
        return 0
    start = int(np.argmax(is_repeat))
    key_list = keys.tolist()
    seen = set(key_list[:start])
    cum = np.concatenate(([0], np.cumsum(lengths))).tolist()
    repeated = 0
    i = start
    while i < m:
        key = key_list[i]
        if key in seen:
            repeated += cum[i + n] - cum[i]
            i += n
        else:
            seen.add(key)
            i += 1
    return repeated


@register_stage
class GopherRepetition(QualityFilter):
    """Gopher's repetition rules (Rae et al. 2021, Table A1): duplicated lines and paragraphs,
    most frequent 2-4-grams, repeated 5-10-grams, each as a share of the document's characters."""

    name = "gopher_repetition"
    Params = GopherRepetitionParams

    def score_types(self) -> dict[str, pa.DataType]:
        p = self.params
        names = ["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"]
        names += [f"top_{n}_gram_char_frac" for n in p.top_n_grams]
        names += [f"dup_{n}_gram_char_frac" for n in p.dup_n_grams]
        return dict.fromkeys(names, pa.float64())

    def checks(self, doc: TextDoc, s: dict[str, Any]) -> Iterator[str | None]:
        p = self.params
        text = doc.text
        paragraphs = PARAGRAPH_BREAK.split(text.strip())
        n_dup, dup_chars = find_duplicates(paragraphs)
        s["dup_para_frac"] = n_dup / len(paragraphs)
        yield _above(s["dup_para_frac"], p.dup_para_frac, "dup_para_frac")
        s["dup_para_char_frac"] = dup_chars / len(text)
        yield _above(s["dup_para_char_frac"], p.dup_para_char_frac, "dup_para_char_frac")

        lines = LINE_BREAKS.split(text)
        n_dup, dup_chars = find_duplicates(lines)
        s["dup_line_frac"] = n_dup / len(lines)
        yield _above(s["dup_line_frac"], p.dup_line_frac, "dup_line_frac")
        s["dup_line_char_frac"] = dup_chars / len(text)
        yield _above(s["dup_line_char_frac"], p.dup_line_char_frac, "dup_line_char_frac")

        ids, lengths = doc.word_ids
        for n, limit in p.top_n_grams.items():
            if len(ids) < n:
                continue
            s[f"top_{n}_gram_char_frac"] = top_ngram_chars(ids, lengths, n) / len(text)
            yield _above(s[f"top_{n}_gram_char_frac"], limit, f"top_{n}_gram")
        for n, limit in p.dup_n_grams.items():
            frac = repeated_ngram_chars(ids, lengths, n) / len(text) if len(ids) >= n else 0.0
            s[f"dup_{n}_gram_char_frac"] = frac
            yield _above(frac, limit, f"duplicated_{n}_n_grams")


# --------------------------------------------------------------------------------------------
class C4QualityParams(QualityParams):
    filter_no_terminal_punct: bool = Field(
        False, description="remove lines not ending in . ? ! \" ' (C4: true; FineWeb: false)"
    )
    min_num_sentences: int | None = Field(5, description="drop documents with fewer sentences left")
    min_words_per_line: int | None = Field(3, description="remove lines with fewer words")
    max_word_length: int | None = Field(1000, description="remove lines with a longer word")
    remove_citations: bool = Field(True, description="remove Wikipedia-style citation marks such as [1]")
    filter_lorem_ipsum: bool = Field(True, description="drop documents containing 'lorem ipsum'")
    filter_javascript: bool = Field(True, description="remove lines mentioning 'javascript'")
    filter_curly_bracket: bool = Field(True, description="drop documents containing a curly bracket")
    filter_policy: bool = Field(True, description="remove cookie / terms-of-use / privacy-policy lines")


@register_stage
class C4Quality(QualityFilter):
    """C4's rules (Raffel et al. 2020, §2.2), line by line: lines without terminal punctuation (off
    in FineWeb), with few words, a huge word, "javascript" or cookie/terms-of-use wording are
    removed from the text; a document with "lorem ipsum" or a curly bracket, or with too few
    sentences left, is dropped.  Removed lines are counted in ``extra``."""

    name = "c4_quality"
    Params = C4QualityParams
    CHANGE = "lines_removed"
    SCORES: ClassVar[dict[str, pa.DataType]] = {
        "lines": pa.int64(),
        "lines_removed": pa.int64(),
        "sentences": pa.int64(),
        "lorem_ipsum": pa.bool_(),
        "curly_bracket": pa.bool_(),
    }

    def checks(self, doc: TextDoc, s: dict[str, Any]) -> Iterator[str | None]:
        p = self.params
        kept: list[str] = []
        removed: dict[str, int] = {}
        sentences = 0
        s["lorem_ipsum"] = s["curly_bracket"] = False
        lines = doc.text.splitlines()
        for line in lines:
            why = None
            line = line.strip()
            words = line.split()
            if p.max_word_length is not None and any(len(w) > p.max_word_length for w in words):
                why = "too_long_word"
            else:
                if p.remove_citations:
                    line = CITATION.sub("", line)
                if p.filter_no_terminal_punct and (
                    not line.endswith(C4_END_PUNCTUATION) or line.endswith("...")
                ):
                    why = "no_terminal_punct"
                elif p.min_words_per_line is not None and len(words) < p.min_words_per_line:
                    why = "too_few_words"
                else:
                    lower = line.lower()
                    if p.filter_lorem_ipsum and "lorem ipsum" in lower:
                        s["lorem_ipsum"] = True
                        yield "lorem_ipsum"
                    if p.filter_javascript and "javascript" in lower:
                        why = "javascript"
                    elif p.filter_curly_bracket and "{" in line:
                        s["curly_bracket"] = True
                        yield "curly_bracket"
                    elif p.filter_policy and any(sub in lower for sub in POLICY_SUBSTRINGS):
                        why = "policy"
            if why is None:
                if p.min_num_sentences is not None:
                    sentences += doc.splitter.count_sentences(line)
                kept.append(line)
            else:
                removed[why] = removed.get(why, 0) + 1
            # the stats see every line judged, like datatrove's line counters
        for why, n in removed.items():
            self.stats.count(why, n, group="lines_removed")
        self.stats.count("total", len(lines), group="lines")
        self.stats.count("kept", len(kept), group="lines")
        s["lines"] = len(lines)
        s["lines_removed"] = len(lines) - len(kept)
        s["sentences"] = sentences
        s["_kept_lines"] = kept
        yield _below(sentences, p.min_num_sentences, "too_few_sentences")

    def judge(self, text: str | None, language: str | None) -> tuple[str | None, dict[str, Any], str | None]:
        reason, scores, new_text = super().judge(text, language)
        scores.pop("_kept_lines", None)
        return reason, scores, new_text

    def rewritten(self, doc: TextDoc, scores: dict[str, Any]) -> str | None:
        if self.params.mode == "annotate":
            return None
        new_text = "\n".join(scores["_kept_lines"]).strip()
        return new_text if new_text != doc.text else None


# --------------------------------------------------------------------------------------------
class FineWebQualityParams(QualityParams):
    line_punct_thr: float | None = Field(0.12, description="min share of lines ending in punctuation")
    line_punct_exclude_zero: bool = Field(
        False, description="do not drop documents with no line ending in punctuation at all"
    )
    stop_chars: list[str] | None = Field(None, description="line-ending characters; default: terminal punct")
    short_line_thr: float | None = Field(0.67, description="max share of lines of <= short_line_length chars")
    short_line_length: int = Field(30, description="a line of at most this many characters is short")
    char_duplicates_ratio: float | None = Field(0.01, description="max share of chars in repeated lines")
    new_line_ratio: float | None = Field(0.3, description="max newlines per word")


@register_stage
class FineWebQuality(QualityFilter):
    """FineWeb's own rules (Penedo et al. 2024): share of lines ending in punctuation, share of
    short lines, characters in duplicated lines, newlines per word (list-like pages)."""

    name = "fineweb_quality"
    Params = FineWebQualityParams
    SCORES: ClassVar[dict[str, pa.DataType]] = {
        "line_punct_ratio": pa.float64(),
        "short_line_ratio": pa.float64(),
        "char_dup_ratio": pa.float64(),
        "newline_ratio": pa.float64(),
    }

    def checks(self, doc: TextDoc, s: dict[str, Any]) -> Iterator[str | None]:
        p = self.params
        text = doc.text
        lines = [line for line in text.split("\n") if line.strip()]
        stop_chars = tuple(p.stop_chars) if p.stop_chars is not None else tuple(TERMINAL_PUNCTUATION)
        ratio = s["line_punct_ratio"] = sum(1 for line in lines if line.endswith(stop_chars)) / len(lines)
        if not (ratio == 0 and p.line_punct_exclude_zero):
            yield _below(ratio, p.line_punct_thr, "line_punct_ratio")
        s["short_line_ratio"] = sum(1 for line in lines if len(line) <= p.short_line_length) / len(lines)
        yield _above(s["short_line_ratio"], p.short_line_thr, "short_line_ratio")
        s["char_dup_ratio"] = _ratio(find_duplicates(lines)[1], len(text) - text.count("\n"))
        yield _above(s["char_dup_ratio"], p.char_duplicates_ratio, "char_dup_ratio")
        s["newline_ratio"] = _ratio(text.count("\n"), len(doc.words))
        yield _above(s["newline_ratio"], p.new_line_ratio, "list_ratio")
