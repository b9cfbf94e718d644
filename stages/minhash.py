"""MinHash near-duplicate detection and exact-duplicate keys: the pure, Ray-free core.

``stages.dedup`` runs this logic as distributed barrier phases (signatures per part, band
partitions, candidate pairs, clustering, filtering); ``dedup_in_memory`` runs the very same steps
on one list of texts, for tests, for ``bench/neardup_quality.py`` and for small inputs.

Pipeline of one document
========================

1. ``normalize``: NFKC, ``casefold``, Unicode punctuation/symbols/controls -> space, format
   characters (soft hyphen, zero-width marks) deleted, every run of decimal digits -> ``0``.
   Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan)
   become one token per character, so that "word n-grams" are character n-grams there instead of
   a handful of clause-long "words".  Pure-ASCII text (most of the web) takes a ``str.translate``
   fast path that gives the same result.
2. ``shingle_hashes``: every word is hashed once (``xxh3_64`` of its UTF-8), and the hashes of
   ``ngram`` consecutive words are combined with numpy (rotate-multiply-xor, then the murmur3
   finaliser), so no n-gram string is ever built.  A text of 1..ngram-1 words is one shingle (all
   its words): identical short texts are duplicates, different short texts are not.  An empty
   text has no shingle.
3. ``MinHasher.signatures``: permutation ``i`` is ``h -> (a_i * h + b_i) mod 2**64`` with a
   random odd 64-bit ``a_i`` and random ``b_i`` (splitmix64 from ``seed``, so the same seed gives
   the same signatures on every machine and numpy version); the signature keeps the high 32 bits
   of each minimum.  Multiply-shift needs no modulus -- arithmetic mod 2**64 is what it is
   defined on -- and its high bits are the well-mixed ones; the keys are already uniform 64-bit
   hashes, so the permutations behave as independent ones.  The tests check it against exact
   Jaccard: unbiased over hundreds of independent pairs, with the binomial variance (shared
   multipliers, i.e. correlated permutations, fail both).  A naive numpy
   ``(a*h + b) % (2**61 - 1)`` (wrapping products) measured a mean error of 0.11 here: not used.
4. ``band_keys``: ``bands`` slices of ``rows`` values, each hashed to a uint64 salted with its
   band index (keys of different bands never meet, so all bands can share one column).
5. Candidates: in each bucket (equal band key) every document is paired with the bucket's
   ``hubs`` smallest document keys (``star_pairs``; hubs=1 is a plain star) -- linear in the
   bucket size where all pairs would be quadratic -- then verification keeps pairs whose
   estimated Jaccard (fraction of equal signature values) is at least ``verify_threshold``, and
   ``connected_components`` clusters them: every document's root is the smallest key of its
   component, the kept document.  Why 3 hubs: with one, a member is only compared with the
   bucket's first document, and when that one is a far copy (Jaccard 0.65 to the member, both
   0.8 to the original) the link is rejected although the original is in the same bucket.  On
   the benchmark, 3 hubs recover what verifying every pair of a bucket would (recall +0.02 at
   the default cut, up to +0.06 at stricter ones, same precision) for 3x a star's pairs.

Document keys are int64 ``part_index << 32 | row_index`` in the stage (``doc_key``), plain row
indexes here; either way the smallest key is the first document in input order.

Banding: what ``threshold`` means
=================================

A pair with Jaccard ``J`` becomes a candidate with probability ``1 - (1 - J**rows)**bands``
(``candidate_probability``, the S-curve).  FineWeb's 14 x 8 on 112 permutations (the default
here) gives 0.053 at J=0.5, 0.21 at 0.6, 0.57 at 0.7, 0.77 at 0.75, 0.92 at 0.8, 0.99 at 0.85 and
> 0.999 from 0.9 up.  A ``threshold: t`` has to mean "pairs at or above t are duplicates", so
``lsh_params`` does not centre the S-curve on ``t`` as datasketch's ``_optimal_param`` does
(its 9 x 12 for t=0.8 catches 47 % of pairs at exactly 0.8 and 25 % at 0.75): it takes the
largest ``rows`` whose curve, with all permutations in bands, is >= 0.9 at ``t`` (t=0.8 -> 14 x 8,
t=0.7 -> 22 x 5, t=0.9 -> 8 x 13).  The price is more candidates below ``t``, which verification
removes.

Verification cut: the estimate from ``num_perm`` permutations is binomial, std
``sqrt(J(1-J)/num_perm)`` (0.041 at J=0.75 with 112).  Cutting at ``t`` itself would drop half of
the pairs at exactly ``t``; ``verify_threshold`` cuts ``VERIFY_Z`` = 3 standard deviations below
the reference Jaccard (``t``, or 0.75 for the FineWeb default, which is what its banding is meant
to catch): 0.627 by default, 0.687 for ``threshold: 0.8``.  z was chosen on the benchmark's
development seed (F1 within 0.003 of the best for z in 2.5..4 in both modes; see the bench).
Probability that a pair is a verified candidate (``detection_probability``; 112 permutations):

    J                     0.5    0.6    0.7    0.75   0.8    0.85   0.9
    default 14x8, 0.627   0.001  0.099  0.553  0.771  0.924  0.988  1.000
    threshold 0.75 18x6   0.002  0.210  0.862  0.969  0.996  1.000  1.000
    threshold 0.8  14x8   0.000  0.020  0.441  0.750  0.923  0.988  1.000

Cost on one core of the shared 2-vCPU dev machine (bench, CPU time): 0.27 ms per 1,500-word
English document for the signature, i.e. ~3,700 docs/s/core against datasketch's ~790 (building
the same shingle strings + ``MinHash.update_batch``; ~1,070 for ``update_batch`` alone), and
~3,000 docs/s/core on the 2,256 multilingual dev-web texts.  Per document: normalise 0.13 ms,
word hashes 0.16, n-grams 0.02, 112 permutations 0.13 (the last two are numpy).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import regex
from xxhash import xxh3_64_intdigest

# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------

DEFAULT_NGRAM = 5
DEFAULT_NUM_PERM = 112
DEFAULT_SEED = 1
# FineWeb's banding: 112 permutations as 14 bands of 8 rows.  Without a threshold the rows stay
# at 8 and every permutation goes into a band (num_perm // 8 bands).
DEFAULT_ROWS = 8
# The Jaccard FineWeb's 14 x 8 is meant to catch ("roughly 0.75 upward"): the reference of the
# default verification cut when no threshold is given.
DEFAULT_REFERENCE_JACCARD = 0.75
# lsh_params: the S-curve must be at least this high at the threshold.
MIN_CANDIDATE_PROBABILITY = 0.9
# verify_threshold: how many binomial standard deviations below the reference Jaccard to cut.
# bench/neardup_quality.py's development seed (mean of 3 MinHash seeds): F1 is within 0.003 of
# the best for z in 2.5..5 with FineWeb's banding and in 2..4 with ``threshold: 0.75``; 3 is in
# both plateaus and lets 99.87 % of the pairs at the reference Jaccard through.
VERIFY_Z = 3.0
# Hubs per LSH bucket (see star_pairs): 3 verifies like all pairs of a bucket would, at 3x a
# plain star's pairs (bench, 14 x 8 at cut 0.627: recall 0.929 -> 0.947, precision 0.998 both;
# verifying every pair of every bucket also gives 0.947).
DEFAULT_HUBS = 3
# Band sets: the same bands x rows banding applied to ``DEFAULT_BAND_SETS`` different groupings of
# the signature columns (set 0 is FineWeb's: columns in order; set k > 0: a fixed shuffle).  Every
# FineWeb candidate is still a candidate, and a pair missed by one grouping gets another chance:
# 14 x 8 catches a pair at J = 0.75 with probability 0.77, two sets ~0.95 (they share the
# permutations, so slightly less than 1 - 0.23^2).  Verification keeps precision.  On the
# benchmark's development seed (mean of 3 MinHash seeds): F1 0.970 -> 0.992 (recall 0.943 ->
# 0.987, precision 0.999 -> 0.998); 3 sets 0.997.  Cost: one more banding pass (the band step;
# signatures are unchanged).
DEFAULT_BAND_SETS = 2

# Signature value of a text without shingles (empty, or only punctuation): the minimum over an
# empty set.  A real document reaches it in one permutation with probability ~2**-32 per shingle,
# so a row of only MARKER values is never a real document.
MARKER = np.uint32(0xFFFFFFFF)
# band_keys gives this key to every band of a marker row; real keys are never 0.  It is also the
# exact_key of a text that normalises to nothing: such documents are never duplicates.
EMPTY_KEY = 0

# Texts longer than this many characters are processed in windows of this size (cut at
# whitespace, n-grams carried across the cut), so a 50 MB page costs bounded memory.
WINDOW_CHARS = 1 << 20
# Shingles per (num_perm x chunk) uint64 block of the signature computation (112 x 4096 x 8 bytes
# = 3.7 MB).  Measured on 1,500-word and 100-word documents: 4096 fastest, 512 and 16384 10-20 %
# slower (more numpy calls vs. more cache misses).
CHUNK_SHINGLES = 4096

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FMIX1 = _U64(0xFF51AFD7ED558CCD)
_FMIX2 = _U64(0xC4CEB9FE1A85EC53)
_NGRAM_MUL = _U64(0x9FB21C651E98DF25)

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def _ascii_table() -> dict[int, str]:
    """ASCII -> the same result the Unicode path gives: lower case, punctuation, symbols and
    controls to space, digits to ``0`` (runs are collapsed afterwards)."""
    table: dict[int, str] = {}
    for cp in range(128):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if ch.isdigit():
            table[cp] = "0"
        elif cat[0] in "PS" or cat == "Cc":
            table[cp] = " "
        elif ch != ch.lower():
            table[cp] = ch.lower()
    return table


_ASCII_TABLE = str.maketrans(_ascii_table())
_ZERO_RUN = regex.compile(r"00+")
# Typographic punctuation, symbols and spaces that make otherwise-ASCII (English) text non-ASCII:
# curly quotes, dashes, ellipsis, bullets, guillemets, no-break space, (c), (R), currency...  All
# are P*/S*/Zs and NFKC keeps them punctuation or space, so replacing them with a space is what
# the Unicode path would do; a text that is ASCII afterwards takes the fast path (measured on
# 1,500-word English documents: 0.68 -> ~0.1 ms per document for the 40 % that contain them).
_TYPOGRAPHIC = (
    "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2010\u2011\u2012\u2013\u2014\u2015\u2026\u2022"
    "\u00b7\u00ab\u00bb\u2039\u203a\u00a0\u00a9\u00ae\u00b0\u00a7\u00b6\u2020\u2021\u20ac\u00a3\u00a1"
    "\u00bf\u2032\u2033\u2192\u00a6"
)
# Unicode path.  \p{Cc} includes \t \n (space anyway); \p{Cf} are invisible format characters
# (U+00AD soft hyphen, U+200B..U+200D zero-width, bidi marks) that split words if kept.
_NON_WORD = regex.compile(r"[\p{P}\p{S}\p{Cc}]+")
_FORMAT = regex.compile(r"\p{Cf}+")
_DIGITS = regex.compile(r"\p{Nd}+")
# Scripts without spaces between words, as code point blocks (Thai, Lao, Tibetan, Myanmar, Khmer,
# CJK radicals and ideographs, kana).  Plain ranges in the stdlib ``re``: 8x faster to scan than
# ``regex``'s \p{Han}... script properties, and only the blocks' punctuation (removed before)
# differs from the script property.
_UNSEGMENTED = re.compile(
    "[\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
    "\u3038-\u303b\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua9e0-\ua9ff\uaa60-\uaa7f"
    "\uf900-\ufaff\U00020000-\U0003134f]"
)


def _unicode_path(text: str) -> str:
    """The general normalisation, before digit runs are collapsed and the text is split."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if _FORMAT.search(text):
        text = _FORMAT.sub("", text)
    text = _NON_WORD.sub(" ", text)
    text = _DIGITS.sub("0", text)
    if _UNSEGMENTED.search(text):
        text = _UNSEGMENTED.sub(r" \g<0> ", text)
    return text


def _split(text: str) -> list[str]:
    if "00" in text:
        text = _ZERO_RUN.sub("0", text)
    return text.split()


def normalize_words(text: str | None) -> list[str]:
    """The normalised words of ``text`` (see ``normalize``)."""
    if not text:
        return []
    if not text.isascii():
        for ch in _TYPOGRAPHIC:  # ~1 us per absent character: a memchr-like scan
            if ch in text:
                text = text.replace(ch, " ")
    if text.isascii():
        # NFKC and casefold are identities on ASCII except for case, which the table handles
        return _split(text.translate(_ASCII_TABLE))
    return _split(_unicode_path(text))


def normalize(text: str | None) -> str:
    """Normalised text: the words the shingles and exact keys are computed on, one space apart.

    NFKC (compatibility forms: full-width letters, ligatures, superscripts), ``casefold``
    (``Straße`` == ``STRASSE``), punctuation, symbols and control characters replaced by a space
    (so ``don't`` -> ``don t`` and ``a/b`` -> ``a b``: word boundaries survive), format characters
    deleted, every run of decimal digits in any script folded to ``0`` (dates, counters and
    prices do not separate copies of a page), whitespace collapsed; Han, kana, Thai, Lao, Khmer,
    Myanmar and Tibetan characters become one word each.  Diacritics are kept: removing them
    would merge distinct words in many languages.  ``None`` -> ``""``.
    """
    return " ".join(normalize_words(text))


# ---------------------------------------------------------------------------------------------
# Shingles
# ---------------------------------------------------------------------------------------------


def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, in place (a bijection with full avalanche)."""
    x ^= x >> _U64(33)
    x *= _FMIX1
    x ^= x >> _U64(33)
    x *= _FMIX2
    x ^= x >> _U64(33)
    return x


def _word_hashes(words: Sequence[str]) -> np.ndarray:
    # one C call per word; ~60 ns each (a cache dict in front was slower: English text has
    # too many distinct words per document for lookups to beat xxh3 on short strings)
    return np.fromiter(map(xxh3_64_intdigest, map(str.encode, words)), dtype=_U64, count=len(words))


def _ngram_hashes(word_hashes: np.ndarray, ngram: int) -> np.ndarray:
    """Hashes of all ``ngram``-word windows (not unique); one window of all words if fewer."""
    n = len(word_hashes)
    k = min(ngram, n)
    m = n - k + 1
    acc = word_hashes[:m].copy()
    for j in range(1, k):
        # rotate before multiplying: multiplication only carries low bits upward, the rotation
        # feeds the high bits back so every output bit depends on every input bit
        acc = (acc << _U64(27)) | (acc >> _U64(37))
        acc *= _NGRAM_MUL
        acc ^= word_hashes[j : j + m]
    return _fmix64(acc)


def _windows(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut at whitespace where there is some."""
    start = 0
    n = len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start:
                end = cut + 1
        yield text[start:end]
        start = end


def _shingle_blocks(text: str | None, ngram: int) -> Iterator[np.ndarray]:
    """Shingle hashes of ``text`` (not unique), in blocks: one for a normal text, several of
    bounded size for a text longer than ``WINDOW_CHARS``; nothing for an empty text."""
    if not text:
        return
    if len(text) <= WINDOW_CHARS:
        words = normalize_words(text)
        if words:
            yield _ngram_hashes(_word_hashes(words), ngram)
        return
    carry = np.empty(0, dtype=_U64)
    emitted = False
    for piece in _windows(text, WINDOW_CHARS):
        hashes = np.concatenate((carry, _word_hashes(normalize_words(piece))))
        if len(hashes) >= ngram:
            yield _ngram_hashes(hashes, ngram)
            emitted = True
            carry = hashes[len(hashes) - (ngram - 1) :] if ngram > 1 else hashes[:0]
        else:
            carry = hashes
    if not emitted and len(carry):
        yield _ngram_hashes(carry, ngram)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted unique values.  numpy 2.4's ``np.unique`` is 20x slower than this on 1.5k uint64
    (120 vs 6 us) and 60x on 2 M ints: it no longer sorts by default."""
    if len(values) < 2:
        return values.copy()
    s = np.sort(values)
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def shingle_hashes(text: str | None, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """Sorted unique uint64 hashes of the normalised word ``ngram``-grams of ``text``.

    A text of 1..ngram-1 words gives one shingle (all its words); an empty one gives none.
    Independent of any MinHash seed: ``xxh3_64`` (seed 0) of each word, combined in numpy.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    blocks = list(_shingle_blocks(text, ngram))
    if not blocks:
        return np.empty(0, dtype=_U64)
    return sorted_unique(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays (``shingle_hashes``); 0 if both empty."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


# ---------------------------------------------------------------------------------------------
# Signatures
# ---------------------------------------------------------------------------------------------


def _splitmix64(seed: int, n: int) -> list[int]:
    """``n`` outputs of splitmix64 from ``seed``: pure Python, identical on every platform and
    numpy version (numpy's ``Generator.integers`` stream is not promised to stay the same)."""
    state = seed & _MASK64
    out = []
    for _ in range(n):
        state = (state + _GOLDEN) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


def permutation_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers (odd) and offsets of the ``num_perm`` multiply-shift permutations of ``seed``."""
    raw = _splitmix64(seed, 2 * num_perm)
    a = np.array(raw[0::2], dtype=_U64) | _U64(1)
    b = np.array(raw[1::2], dtype=_U64)
    return a, b


class MinHasher:
    """MinHash signatures of texts: ``num_perm`` multiply-shift permutations of word-n-gram hashes.

    Trade-offs: uint32 signatures (the high half of each 64-bit minimum) take 448 bytes per
    document at 112 permutations; two different shingles give the same 32-bit minimum with
    probability ~m/2**32 for an m-shingle document (~4e-7 at 1,500 words), far below the
    estimator's own noise.  Cost is linear in shingles x permutations: ~0.13 ms for 1,500
    shingles x 112 on one core here, plus ~0.3 ms of Python per 1,500-word document for
    normalising and hashing words (one ``xxh3_64`` call per word).
    """

    def __init__(
        self, num_perm: int = DEFAULT_NUM_PERM, seed: int = DEFAULT_SEED, ngram: int = DEFAULT_NGRAM
    ):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.num_perm = num_perm
        self.seed = seed
        self.ngram = ngram
        a, b = permutation_params(num_perm, seed)
        # column vectors: the block is (num_perm, shingles), reduced along shingles
        self._a = a[:, None]
        self._b = b[:, None]

    def signatures(self, texts: Sequence[str | None]) -> np.ndarray:
        """``(len(texts), num_perm)`` uint32 signatures.

        A text without shingles (``None``, empty, only punctuation) gets a row of ``MARKER``
        (0xFFFFFFFF, the minimum of nothing): ``band_keys`` gives it ``EMPTY_KEY`` in every band
        and ``estimated_jaccard`` gives 0 with it, so it is never a candidate.

        Shingles of consecutive documents are pooled into blocks of ``CHUNK_SHINGLES`` so the
        per-call numpy overhead is paid per block, not per (short) document; a long document is
        split over several blocks and its minima merged.
        """
        blocks = ((i, block) for i, text in enumerate(texts) for block in _shingle_blocks(text, self.ngram))
        return self._signatures(len(texts), blocks)

    def signatures_of_shingles(self, shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures of precomputed uint64 shingle hashes (e.g. ``shingle_hashes``), one row
        per set; an empty set gets the marker row."""
        blocks = ((i, np.asarray(s, dtype=_U64)) for i, s in enumerate(shingle_sets) if len(s))
        return self._signatures(len(shingle_sets), blocks)

    def _signatures(self, n: int, blocks: Iterator[tuple[int, np.ndarray]]) -> np.ndarray:
        mins = np.full((n, self.num_perm), np.iinfo(np.uint64).max, dtype=_U64)
        pending: list[np.ndarray] = []
        owners: list[int] = []
        size = 0
        for i, block in blocks:
            for start in range(0, len(block), CHUNK_SHINGLES):
                piece = block[start : start + CHUNK_SHINGLES]
                pending.append(piece)
                owners.append(i)
                size += len(piece)
                if size >= CHUNK_SHINGLES:
                    self._flush(pending, owners, mins)
                    pending, owners, size = [], [], 0
        if pending:
            self._flush(pending, owners, mins)
        return (mins >> _U64(32)).astype(np.uint32)

    def signature(self, text: str | None) -> np.ndarray:
        """The ``(num_perm,)`` signature of one text."""
        return self.signatures([text])[0]

    def _flush(self, pieces: list[np.ndarray], owners: list[int], mins: np.ndarray) -> None:
        shingles = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        block = self._a * shingles  # (num_perm, m) uint64, wraps mod 2**64 as intended
        block += self._b
        # one segment per distinct owner (pieces of one document are adjacent)
        owner_arr = np.asarray(owners)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        first = np.ones(len(owner_arr), dtype=bool)
        first[1:] = owner_arr[1:] != owner_arr[:-1]
        seg_mins = np.minimum.reduceat(block, starts[first], axis=1)  # (num_perm, docs)
        docs = owner_arr[first]
        # a document may continue a previous block: merge with what it already has
        mins[docs] = np.minimum(mins[docs], seg_mins.T)


def empty_rows(signatures: np.ndarray) -> np.ndarray:
    """Boolean mask of the marker rows (texts without shingles)."""
    return (signatures == MARKER).all(axis=1)


# ---------------------------------------------------------------------------------------------
# Banding
# ---------------------------------------------------------------------------------------------


def candidate_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """The LSH S-curve: P(a pair of Jaccard ``jaccard`` shares at least one band)."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=float) ** rows) ** bands


def lsh_params(
    num_perm: int = DEFAULT_NUM_PERM,
    threshold: float | None = None,
    bands: int | None = None,
    rows: int | None = None,
) -> tuple[int, int]:
    """``(bands, rows)`` for the stage's parameters.

    * ``bands`` and ``rows`` given: used as they are (``bands * rows <= num_perm``).
    * one of them given: the other is ``num_perm // given``.
    * ``threshold`` given: the largest ``rows`` whose S-curve with ``num_perm // rows`` bands is
      at least ``MIN_CANDIDATE_PROBABILITY`` (0.9) at ``threshold``.  Largest rows = steepest
      curve = fewest candidates below the threshold among those that catch pairs at it.
      112 permutations: t=0.5 -> 37 x 3, 0.7 -> 22 x 5, 0.8 -> 14 x 8, 0.9 -> 8 x 13.
    * nothing: FineWeb's setting, rows 8 and ``num_perm // 8`` bands (14 x 8 for 112).
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    for name, value in (("bands", bands), ("rows", rows)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if bands is not None and rows is not None:
        if bands * rows > num_perm:
            raise ValueError(f"bands * rows = {bands * rows} exceeds num_perm = {num_perm}")
        return bands, rows
    if bands is not None:
        if bands > num_perm:
            raise ValueError(f"bands = {bands} exceeds num_perm = {num_perm}")
        return bands, num_perm // bands
    if rows is not None:
        if rows > num_perm:
            raise ValueError(f"rows = {rows} exceeds num_perm = {num_perm}")
        return num_perm // rows, rows
    if threshold is None:
        r = min(DEFAULT_ROWS, num_perm)
        return num_perm // r, r
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if candidate_probability(threshold, b, r) >= MIN_CANDIDATE_PROBABILITY:
            return b, r
    return num_perm, 1  # unreachable for threshold > 0 with enough permutations; the best there is


def _band_salts(bands: int) -> np.ndarray:
    return np.array(_splitmix64(0xB4D5, bands), dtype=_U64)


def column_grouping(band_set: int, num_perm: int) -> np.ndarray:
    """The order of signature columns for band set ``band_set``: identity for 0, else a fixed
    shuffle (argsort of splitmix64 values: the same on every machine and numpy version)."""
    if band_set == 0:
        return np.arange(num_perm)
    return np.argsort(np.array(_splitmix64(0x5E7 + band_set, num_perm), dtype=_U64), kind="stable")


def band_keys(signatures: np.ndarray, bands: int, rows: int, band_sets: int = 1) -> np.ndarray:
    """``(n, band_sets * bands)`` uint64 keys: in set ``s``, band ``j`` hashes the signature
    columns ``column_grouping(s)[j*rows : (j+1)*rows]`` (set 0: FineWeb's contiguous bands).

    Keys are salted with the band index (over all sets), so equal keys in different bands are as
    unlikely as any 64-bit collision and the stage may pool all bands into one column.  Marker rows
    get ``EMPTY_KEY`` (0) in every band; real keys are never 0.  A collision of two different
    slices (~n**2 / 2**65 per band: 0.03 expected for 10**9 documents) only adds a candidate that
    verification removes.
    """
    sig = np.asarray(signatures)
    n, num_perm = sig.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows = {bands * rows} exceeds the {num_perm} signature columns")
    salts = _band_salts(bands * band_sets)
    out = np.empty((n, bands * band_sets), dtype=_U64)
    empty = empty_rows(sig)
    for s in range(band_sets):
        grouped = sig[:, column_grouping(s, num_perm)[: bands * rows]]
        cols = grouped.reshape(n, bands, rows).astype(_U64)
        keys = np.repeat(salts[None, s * bands : (s + 1) * bands], n, axis=0)
        for j in range(rows):
            keys ^= cols[:, :, j]
            _fmix64(keys)  # a bijection per step: two slices differing in one value never collide
        keys[keys == _U64(EMPTY_KEY)] = _U64(1)
        keys[empty] = _U64(EMPTY_KEY)
        out[:, s * bands : (s + 1) * bands] = keys
    return out


# ---------------------------------------------------------------------------------------------
# Candidates, verification, clustering
# ---------------------------------------------------------------------------------------------


def star_pairs(keys: np.ndarray, doc_keys: np.ndarray, hubs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of one key column: ``(member, hub)`` pairs within each bucket (documents
    with equal ``keys``), where the hubs are the bucket's ``hubs`` smallest ``doc_keys`` and every
    other member -- and every hub after the first -- is paired with each hub before it.

    ``hubs=1`` (the default here, for callers that rely on at most k-1 pairs per bucket) is the
    plain star: k-1 pairs for a bucket of k documents instead of k(k-1)/2, and verification then
    compares each member with the first document only.  ``DEFAULT_HUBS`` (3) is what
    ``cluster_signatures`` / ``dedup_in_memory`` use and what the benchmark's defaults measure:
    at most 3(k-1) pairs, still linear, and as good as verifying all pairs of the bucket.
    ``keys`` may be one band's column or several bands pooled (``band_keys`` salts them).
    Buckets of one document and ``EMPTY_KEY`` entries give nothing.  Pairs may repeat across
    bands: see ``unique_pairs``.
    """
    if hubs < 1:
        raise ValueError(f"hubs must be >= 1, got {hubs}")
    keys = np.asarray(keys).ravel()
    doc_keys = np.asarray(doc_keys, dtype=np.int64).ravel()
    valid = keys != _U64(EMPTY_KEY)
    keys, doc_keys = keys[valid], doc_keys[valid]
    if len(keys) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.lexsort((doc_keys, keys))
    k, d = keys[order], doc_keys[order]
    first = np.empty(len(k), dtype=bool)
    first[0] = True
    np.not_equal(k[1:], k[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    start_of = starts[np.cumsum(first) - 1]  # index of each row's bucket start
    pos = np.arange(len(k)) - start_of  # position within the bucket, 0 = smallest key
    members, roots = [], []
    for q in range(hubs):
        sel = pos > q
        members.append(d[sel])
        roots.append(d[start_of[sel] + q])
    return np.concatenate(members), np.concatenate(roots)


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(a, b)`` pairs, sorted by ``a`` then ``b`` (sort-based; see ``sorted_unique``)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if len(a) < 2:
        return a.copy(), b.copy()
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def candidate_pairs(
    keys: np.ndarray, doc_keys: np.ndarray | None = None, hubs: int = DEFAULT_HUBS
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct star pairs over all bands of ``band_keys`` output ``(n, bands)``;
    ``doc_keys`` defaults to the row indexes."""
    keys = np.asarray(keys)
    n, bands = keys.shape
    if doc_keys is None:
        doc_keys = np.arange(n, dtype=np.int64)
    a, b = star_pairs(keys.ravel(), np.repeat(np.asarray(doc_keys, dtype=np.int64), bands), hubs)
    return unique_pairs(a, b)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values (float64), 0 where either row is a marker.

    Unbiased for independent permutations, with binomial std ``sqrt(J(1-J)/num_perm)``.
    1-D inputs are one pair (a 0-d array comes back).
    """
    a = np.asarray(sig_a)
    b = np.asarray(sig_b)
    if a.shape != b.shape:
        raise ValueError(f"signature shapes differ: {a.shape} vs {b.shape}")
    a2 = np.atleast_2d(a)
    b2 = np.atleast_2d(b)
    est = (a2 == b2).mean(axis=1)
    est[empty_rows(a2) | empty_rows(b2)] = 0.0
    return est.reshape(a.shape[:-1])


def verify_threshold(threshold: float | None = None, num_perm: int = DEFAULT_NUM_PERM) -> float:
    """The estimated-Jaccard cut that candidates must reach by default.

    ``ref - VERIFY_Z * sqrt(ref (1 - ref) / num_perm)`` with ``ref = threshold`` or, without one,
    ``DEFAULT_REFERENCE_JACCARD`` (0.75, what FineWeb's banding is meant to catch).  The estimate
    of a pair of Jaccard ``J`` is Binomial(num_perm, J) / num_perm, so cutting at ``ref`` itself
    would lose half of the pairs at ``ref``; ``VERIFY_Z`` = 3 keeps 99.9 % of them and rejects
    most candidates 0.15 and more below (112 permutations: 0.627 without threshold, 0.687 for
    0.8).  Lower z = fewer false merges of templated pages at J 0.55-0.7, more missed copies at
    the low end (through chains); the benchmark F1 is within 0.003 of the best for z in 2.5..4.
    """
    ref = DEFAULT_REFERENCE_JACCARD if threshold is None else threshold
    z = VERIFY_Z
    if not 0.0 < ref <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {ref}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    return max(0.0, ref - z * math.sqrt(ref * (1.0 - ref) / num_perm))


def detection_probability(jaccard: float, bands: int, rows: int, num_perm: int, cut: float | None) -> float:
    """P(a pair of Jaccard ``jaccard`` is a candidate AND its estimate is >= ``cut``).

    Exact under independent permutations: each permutation agrees with probability ``jaccard``;
    a dynamic programme over bands tracks (agreements so far, some band fully agreed).  With
    ``cut=None`` this is ``candidate_probability``.  (A star pair is verified against the
    bucket's root, which may be a third document; this is the probability for a direct pair.)
    """
    if cut is None:
        return float(candidate_probability(jaccard, bands, rows))
    from math import comb

    j = float(jaccard)
    band = np.array([comb(rows, k) * j**k * (1 - j) ** (rows - k) for k in range(rows + 1)])
    # dist[f, m]: probability of m agreements so far with f = 1 if some band agreed fully
    dist = np.zeros((2, num_perm + 1))
    dist[0, 0] = 1.0
    for _ in range(bands):
        new = np.zeros_like(dist)
        for k in range(rows + 1):
            full = 1 if k == rows else 0
            shifted = np.roll(dist, k, axis=1) * band[k]
            shifted[:, :k] = 0.0
            new[1] += shifted[1]
            new[full] += shifted[0]
        dist = new
    rest = num_perm - bands * rows
    if rest:
        tail = np.array([comb(rest, k) * j**k * (1 - j) ** (rest - k) for k in range(rest + 1)])
        dist = np.array([np.convolve(dist[f], tail)[: num_perm + 1] for f in (0, 1)])
    need = math.ceil(cut * num_perm - 1e-9)
    return float(dist[1, need:].sum())


def connected_components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clusters of the pairs ``(a[i], b[i])`` of int64 document keys.

    Returns ``(doc_keys, root_keys)``: every key that appears in a pair, ascending, and the
    smallest key of its component (the kept document: keys encode input order).  Documents in
    no pair are singletons and not listed.  scipy's ``csgraph.connected_components`` (imported
    here, not at module import) is linear in pairs: ~0.5 s for 10 M pairs.
    """
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components as _components

    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    if len(a) != len(b):
        raise ValueError(f"pair arrays differ in length: {len(a)} vs {len(b)}")
    if len(a) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys, inverse = np.unique(np.concatenate((a, b)), return_inverse=True)
    m = len(a)
    graph = coo_array(
        (np.ones(m, dtype=np.int8), (inverse[:m], inverse[m:])), shape=(len(keys), len(keys))
    ).tocsr()
    _, labels = _components(graph, directed=False)
    # keys are ascending, so the first position of each label holds its component's minimum
    first = np.full(labels.max() + 1, len(keys), dtype=np.int64)
    np.minimum.at(first, labels, np.arange(len(keys)))
    return keys, keys[first[labels]]


def cluster_signatures(
    signatures: np.ndarray,
    bands: int,
    rows: int,
    verify_cut: float | None,
    doc_keys: np.ndarray | None = None,
    hubs: int = DEFAULT_HUBS,
    band_sets: int = DEFAULT_BAND_SETS,
) -> np.ndarray:
    """The stage's procedure on in-memory signatures: band keys -> star pairs per bucket ->
    (``verify_cut`` not None) keep pairs with estimated Jaccard >= cut -> connected components.

    Returns the root key of every row (its own key when it has no duplicate); rows whose root
    differs from their key are the duplicates to drop.
    """
    n = signatures.shape[0]
    if doc_keys is None:
        doc_keys = np.arange(n, dtype=np.int64)
    doc_keys = np.asarray(doc_keys, dtype=np.int64)
    roots = doc_keys.copy()
    if n < 2:
        return roots
    a, b = candidate_pairs(band_keys(signatures, bands, rows, band_sets), doc_keys, hubs)
    if verify_cut is not None and len(a):
        # row positions of the keys (doc_keys may be any distinct int64s)
        order = np.argsort(doc_keys)
        pos_a = order[np.searchsorted(doc_keys, a, sorter=order)]
        pos_b = order[np.searchsorted(doc_keys, b, sorter=order)]
        ok = estimated_jaccard(signatures[pos_a], signatures[pos_b]) >= verify_cut
        a, b = a[ok], b[ok]
    keys, root_keys = connected_components(a, b)
    if len(keys):
        order = np.argsort(doc_keys)
        roots[order[np.searchsorted(doc_keys, keys, sorter=order)]] = root_keys
    return roots


def dedup_in_memory(
    texts: Sequence[str | None],
    *,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = DEFAULT_SEED,
    ngram: int = DEFAULT_NGRAM,
    threshold: float | None = None,
    bands: int | None = None,
    rows: int | None = None,
    verify: bool | float = True,
    hubs: int = DEFAULT_HUBS,
    band_sets: int = DEFAULT_BAND_SETS,
) -> np.ndarray:
    """Near-duplicate clusters of ``texts`` with the stage's logic and defaults, in one process.

    Returns ``root`` (int64, one per text): the index of the kept text of its cluster, the
    first in input order; ``root[i] == i`` for kept texts.  ``verify``: True = the default cut
    (``verify_threshold(threshold, num_perm)``), False = plain banding, a float = that cut.
    """
    b, r = lsh_params(num_perm, threshold, bands, rows)
    if verify is True:
        cut: float | None = verify_threshold(threshold, num_perm)
    elif verify is False:
        cut = None
    else:
        cut = float(verify)
    sigs = MinHasher(num_perm=num_perm, seed=seed, ngram=ngram).signatures(texts)
    return cluster_signatures(sigs, b, r, cut, hubs=hubs, band_sets=band_sets)


# ---------------------------------------------------------------------------------------------
# Exact duplicates
# ---------------------------------------------------------------------------------------------


def exact_key(text: str | None) -> int:
    """64-bit key (``xxh3_64`` of the normalised text, as a Python int in [0, 2**64)).

    Texts equal after ``normalize`` (case, punctuation, digits, Unicode forms, whitespace) get
    the same key.  ``EMPTY_KEY`` (0) for a text that normalises to nothing: never a duplicate.
    64 bits: a false match somewhere among 10**9 distinct texts has probability ~3 %.
    """
    norm = normalize(text)
    if not norm:
        return EMPTY_KEY
    return xxh3_64_intdigest(norm.encode()) or 1


def exact_keys(texts: Sequence[str | None]) -> np.ndarray:
    """``exact_key`` of every text, as a uint64 array."""
    return np.fromiter(map(exact_key, texts), dtype=_U64, count=len(texts))


def url_key(url: str | None) -> int:
    """64-bit key of a URL for URL-level exact dedup (re-captures of one page).

    Light normalisation only: surrounding whitespace, scheme and host lower-cased, default port
    and ``#fragment`` dropped.  Query strings and paths are kept as they are (they are
    case-sensitive and often identify different pages).  ``EMPTY_KEY`` for no URL.
    """
    if not url or not url.strip():
        return EMPTY_KEY
    url = url.strip()
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.lower()
        scheme = parts.scheme.lower()
        if (scheme, netloc.rsplit(":", 1)[-1]) in (("http", "80"), ("https", "443")):
            netloc = netloc.rsplit(":", 1)[0]
        url = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    except ValueError:
        pass  # malformed (e.g. bad IPv6 literal): hash as given
    return xxh3_64_intdigest(url.encode("utf-8", "surrogatepass")) or 1
