"""The MinHash core (``stages.minhash``): normalisation, shingles, signatures, banding, verification,
clustering and exact keys.

Statistical tests use fixed seeds (so they are deterministic) and bounds derived from the binomial
variance of the estimator: with independent permutations the estimate of a pair of Jaccard J from
P permutations is Binomial(P, J) / P, std sqrt(J (1 - J) / P).  The bounds are 4-5 standard
errors wide, so a correct implementation fails them with probability < 1e-4 for any seed, while
a biased or correlated permutation family (the classic ``(a*h + b) % (2**61 - 1)`` overflow bug
is off by ~0.1) fails them by far.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

import stages.minhash as mh

REPO = str(Path(mh.__file__).resolve().parent.parent)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def wid(i: int) -> str:
    """A distinct word per integer, made of letters (digits would all fold to ``0``)."""
    out = ""
    i = int(i)
    while True:
        out += chr(97 + i % 26)
        i //= 26
        if not i:
            return "w" + out


def word_sets_at(jaccard: float, n_pairs: int, union: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n_pairs`` text pairs of distinct random words whose word-set Jaccard is exactly
    round(jaccard * union) / union; different pairs share no word (independent pairs)."""
    shared = round(jaccard * union)
    only = union - shared
    only_a = only // 2
    only_b = only - only_a
    pairs = []
    for p in range(n_pairs):
        ids = rng.permutation(union) + p * union  # disjoint vocabularies per pair
        words = [wid(i) for i in ids]
        a = words[:shared] + words[shared : shared + only_a]
        b = words[:shared] + words[shared + only_a :]
        assert len(b) == shared + only_b
        pairs.append((" ".join(a), " ".join(rng.permutation(b))))
    return pairs


def exact_word_jaccard(a: str, b: str) -> float:
    sa, sb = set(a.split()), set(b.split())
    return len(sa & sb) / len(sa | sb)


# ---------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------


def test_normalize_case_punctuation_digits_whitespace():
    assert mh.normalize("Hello,   WORLD!\n\tIt's 2024-03-12 — 9.99 $") == "hello world it s 0 0 0 0 0"
    # a run of digits is one 0, so counters and dates of different widths agree
    assert mh.normalize("page 9 of 10") == mh.normalize("page 10 of 125")
    assert mh.normalize("a/b") == "a b"  # punctuation separates words instead of gluing them


def test_normalize_unicode_forms():
    composed = "caf\u00e9 na\u00efve"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert mh.normalize(composed) == mh.normalize(decomposed) == "café naïve"
    # NFKC: full-width letters and digits, ligatures, no-break spaces
    assert mh.normalize("\uff28\uff45\uff4c\uff4c\uff4f \uff11\uff12") == "hello 0"
    assert mh.normalize("\ufb01ne\u00a0print") == "fine print"
    # casefold: ß == ss, Greek final sigma
    assert mh.normalize("STRASSE") == mh.normalize("Straße")
    assert mh.normalize("ΟΔΟΣ") == mh.normalize("οδος") == mh.normalize("οδοσ")
    # invisible format characters do not split words
    assert mh.normalize("Silben\u00adtren\u200bnung") == "silbentrennung"
    # digits of other scripts fold too
    assert mh.normalize("\u0661\u0662\u0663 \u0e51\u0e52") == "0 0"


def test_normalize_unsegmented_scripts_become_characters():
    assert mh.normalize("人人有权享有生命。") == "人 人 有 权 享 有 生 命"
    assert mh.normalize("Tokyo東京タワー") == "tokyo 東 京 タ ワ ー"
    # Korean separates words with spaces: left as words
    assert mh.normalize("안녕하세요 세계") == "안녕하세요 세계"


def test_fast_paths_match_unicode_path():
    """ASCII text, and text whose only non-ASCII characters are typographic punctuation (English
    with curly quotes and dashes), skip NFKC and the regexes: same words as the general path."""
    rng = np.random.default_rng(7)
    alphabets = {
        "ascii": [chr(c) for c in range(128)],
        "typographic": [chr(c) for c in range(32, 128)] + list(mh._TYPOGRAPHIC) * 3,
        "mixed": [chr(c) for c in range(32, 128)] + list(mh._TYPOGRAPHIC) + list("éßΣ東\u00ad\u0663ﬁ"),
    }
    for alphabet in alphabets.values():
        for _ in range(300):
            text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 60))))
            assert mh.normalize_words(text) == mh._split(mh._unicode_path(text)), repr(text)


def test_typographic_characters_are_punctuation_after_nfkc():
    for ch in mh._TYPOGRAPHIC:
        assert unicodedata.category(ch)[0] in "PSZ", hex(ord(ch))
        assert all(unicodedata.category(c)[0] in "PSZ" for c in unicodedata.normalize("NFKC", ch)), hex(
            ord(ch)
        )


def test_normalize_empty_inputs():
    for text in (None, "", "   \n", "!!! ... ---", "\u200b\u00ad"):
        assert mh.normalize(text) == ""
        assert mh.normalize_words(text) == []


# ---------------------------------------------------------------------------------------------
# shingles
# ---------------------------------------------------------------------------------------------


def test_shingle_hashes_unique_sorted_and_counted():
    text = " ".join(wid(i) for i in range(20))
    h = mh.shingle_hashes(text, 5)
    assert h.dtype == np.uint64
    assert len(h) == 16  # 20 distinct words -> 16 distinct 5-grams
    assert np.all(np.diff(h.astype(object)) > 0) if len(h) > 1 else True
    repeated = mh.shingle_hashes(" ".join([text] * 3), 5)
    assert set(h.tolist()) <= set(repeated.tolist())
    assert np.array_equal(mh.shingle_hashes(text.upper() + "!!!", 5), h)


def test_shingles_depend_on_word_order():
    a = mh.shingle_hashes("one two three four five", 5)
    b = mh.shingle_hashes("five four three two one", 5)
    assert len(a) == len(b) == 1 and a[0] != b[0]


def test_short_documents_are_one_shingle():
    # fewer words than the n-gram: the whole (normalised) text is one shingle
    a = mh.shingle_hashes("Hello world", 5)
    assert len(a) == 1
    assert np.array_equal(a, mh.shingle_hashes("hello, WORLD!", 5))
    assert not np.array_equal(a, mh.shingle_hashes("hello there", 5))
    assert len(mh.shingle_hashes("one", 5)) == 1
    assert len(mh.shingle_hashes("one two three four five", 5)) == 1


def test_empty_text_has_no_shingles_and_a_marker_signature():
    hasher = mh.MinHasher()
    sigs = hasher.signatures([None, "", "...", "real text here"])
    assert sigs.shape == (4, mh.DEFAULT_NUM_PERM) and sigs.dtype == np.uint32
    assert np.all(sigs[:3] == mh.MARKER)
    assert mh.empty_rows(sigs).tolist() == [True, True, True, False]
    assert len(mh.shingle_hashes(None)) == 0
    # two empty texts are not duplicates of each other
    assert mh.estimated_jaccard(sigs[0], sigs[1]) == 0.0
    assert np.all(mh.band_keys(sigs, 14, 8)[:3] == mh.EMPTY_KEY)


def test_long_texts_windowed_like_whole(monkeypatch):
    rng = np.random.default_rng(3)
    text = "\n".join(" ".join(wid(i) for i in rng.integers(0, 300, size=40)) for _ in range(60))
    whole = mh.shingle_hashes(text)
    sig_whole = mh.MinHasher().signatures([text, "short text"])
    monkeypatch.setattr(mh, "WINDOW_CHARS", 97)  # many windows, cut at spaces and newlines
    monkeypatch.setattr(mh, "CHUNK_SHINGLES", 64)  # and several blocks per document
    assert len(list(mh._shingle_blocks(text, 5))) > 10
    assert np.array_equal(mh.shingle_hashes(text), whole)
    assert np.array_equal(mh.MinHasher().signatures([text, "short text"]), sig_whole)


def test_jaccard_of_hash_sets():
    a = mh.shingle_hashes("a b c d e f g h", 1)
    b = mh.shingle_hashes("e f g h i j k l", 1)
    assert mh.jaccard(a, b) == pytest.approx(4 / 12)
    assert mh.jaccard(a, a) == 1.0
    assert mh.jaccard(a[:0], a[:0]) == 0.0


# ---------------------------------------------------------------------------------------------
# signatures: estimator, independence, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jaccard", [0.2, 0.5, 0.8, 0.9])
def test_estimate_unbiased_with_binomial_variance(jaccard):
    """Over 400 independent pairs at one known Jaccard: the mean estimate is within 4 standard
    errors of J, and the variance of the estimates matches the binomial J(1-J)/P (independent
    permutations; positively correlated ones would inflate it)."""
    num_perm, n_pairs, union = 112, 400, 50
    rng = np.random.default_rng(int(jaccard * 100))
    pairs = word_sets_at(jaccard, n_pairs, union, rng)
    j_exact = exact_word_jaccard(*pairs[0])
    hasher = mh.MinHasher(num_perm=num_perm, seed=11, ngram=1)
    sigs = hasher.signatures([t for pair in pairs for t in pair])
    est = mh.estimated_jaccard(sigs[0::2], sigs[1::2])
    var = j_exact * (1 - j_exact) / num_perm
    assert abs(est.mean() - j_exact) <= 4 * math.sqrt(var / n_pairs)
    # sample variance of n normal-ish values: relative std sqrt(2 / (n - 1)) = 0.071 -> ~4.2 sd
    assert 0.7 <= est.var(ddof=1) / var <= 1.3


def test_estimate_against_exact_jaccard_of_text_pairs():
    """Real shingling (5-grams of edited texts): every pair's error stays within 4.5 binomial
    standard deviations, and the z-scores have unit spread."""
    rng = np.random.default_rng(5)
    vocab = [wid(i) for i in range(5000)]
    texts_a, texts_b = [], []
    for _ in range(150):
        words = list(rng.choice(vocab, size=300))
        edited = list(words)
        for pos in rng.choice(300, size=int(rng.integers(1, 25)), replace=False):
            edited[pos] = str(rng.choice(vocab))
        texts_a.append(" ".join(words))
        texts_b.append(" ".join(edited))
    exact = np.array(
        [mh.jaccard(mh.shingle_hashes(a), mh.shingle_hashes(b)) for a, b in zip(texts_a, texts_b)]
    )
    sigs = mh.MinHasher(seed=2).signatures(texts_a + texts_b)
    est = mh.estimated_jaccard(sigs[:150], sigs[150:])
    sd = np.sqrt(exact * (1 - exact) / mh.DEFAULT_NUM_PERM)
    assert exact.min() < 0.5 < 0.9 < exact.max()
    z = (est - exact) / sd
    assert np.all(np.abs(z) <= 4.5)
    assert 0.75 <= z.std() <= 1.25  # 150 values: relative std of the sd ~ 0.06


def test_permutations_are_distinct_and_odd():
    a, _ = mh.permutation_params(112, 1)
    assert len(set(a.tolist())) == 112 and np.all(a & np.uint64(1) == 1)
    assert not np.array_equal(mh.permutation_params(112, 2)[0], a)
    # permutation i is the same whatever num_perm: signatures of a prefix agree
    assert np.array_equal(mh.permutation_params(64, 1)[0], a[:64])


def test_signatures_pinned_across_versions():
    """Signatures written by one run must stay comparable with the next: pin the hash chain."""
    # splitmix64 from seed 1 (its first output is the published 0x910a2dec89025cc1)
    assert mh.permutation_params(2, 1)[0].tolist() == [0x910A2DEC89025CC1, 0xF893A2EEFB32555F]
    text = "The quick brown fox jumps over the lazy dog"
    assert mh.shingle_hashes(text).tolist()[:2] == [967246597169811218, 8126706928620259667]
    assert mh.MinHasher(num_perm=4).signature(text).tolist() == [2306932636, 1044253494, 606222897, 88623379]


def test_deterministic_across_processes():
    """Same seed -> same signatures in another interpreter with another hash seed (no
    ``hash()`` anywhere)."""
    texts = ["Near-duplicate detection", "Ein kurzer Text über Duplikate", "人人有权享有生命", ""]
    here = mh.MinHasher(num_perm=16, seed=7).signatures(texts)
    code = (
        "import sys, json; import stages.minhash as mh; "
        "texts = json.loads(sys.argv[1]); "
        "print(json.dumps(mh.MinHasher(num_perm=16, seed=7).signatures(texts).tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(texts)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO,
    )
    assert json.loads(out.stdout) == here.tolist()
    assert not np.array_equal(here, mh.MinHasher(num_perm=16, seed=8).signatures(texts))


def test_signatures_of_shingles_match_texts():
    texts = ["alpha beta gamma delta epsilon zeta", "x", None]
    hasher = mh.MinHasher(num_perm=32)
    assert np.array_equal(
        hasher.signatures(texts), hasher.signatures_of_shingles([mh.shingle_hashes(t) for t in texts])
    )


# ---------------------------------------------------------------------------------------------
# banding
# ---------------------------------------------------------------------------------------------


def test_band_keys_equal_slices_and_salts():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32 - 1, size=(4, 16), dtype=np.uint32)
    sig[1] = sig[0]
    sig[2] = sig[0]
    sig[2, 5] ^= 1  # differs from row 0 in band 1 only (rows 4..7)
    sig[3, :4] = sig[3, 4:8]  # the same 4 values in bands 0 and 1
    keys = mh.band_keys(sig, 4, 4)
    assert keys.shape == (4, 4) and keys.dtype == np.uint64
    assert np.array_equal(keys[0], keys[1])
    assert (keys[2] == keys[0]).tolist() == [True, False, True, True]
    assert keys[3, 0] != keys[3, 1]  # bands are salted
    assert np.all(keys != mh.EMPTY_KEY)
    with pytest.raises(ValueError):
        mh.band_keys(sig, 5, 4)


def test_lsh_params_defaults_and_explicit():
    assert mh.lsh_params() == (14, 8)
    assert mh.lsh_params(112) == (14, 8)
    assert mh.lsh_params(128) == (16, 8)
    assert mh.lsh_params(112, bands=20, rows=5) == (20, 5)
    assert mh.lsh_params(112, bands=16) == (16, 7)
    assert mh.lsh_params(112, rows=4) == (28, 4)
    for bad in ({"bands": 15, "rows": 8}, {"threshold": 0.0}, {"threshold": 1.5}, {"rows": 0}):
        with pytest.raises(ValueError):
            mh.lsh_params(112, **bad)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
def test_threshold_choice_is_high_at_t_and_steepest(threshold):
    bands, rows = mh.lsh_params(112, threshold)
    assert bands * rows <= 112 and bands == 112 // rows
    assert mh.candidate_probability(threshold, bands, rows) >= mh.MIN_CANDIDATE_PROBABILITY
    # the largest such rows: one more row falls below the target at t
    if rows < 112:
        assert mh.candidate_probability(threshold, 112 // (rows + 1), rows + 1) < mh.MIN_CANDIDATE_PROBABILITY
    # with verification: caught at t, rarely 0.2 below (the S-curve is not centred on t)
    cut = mh.verify_threshold(threshold, 112)
    assert mh.detection_probability(threshold, bands, rows, 112, cut) >= 0.85
    assert mh.detection_probability(threshold - 0.2, bands, rows, 112, cut) <= 0.1


def test_default_s_curve():
    """FineWeb's 14 x 8: the numbers the README quotes."""
    p = {j: float(mh.candidate_probability(j, 14, 8)) for j in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)}
    assert p[0.5] == pytest.approx(0.0532, abs=1e-3)
    assert p[0.75] == pytest.approx(0.7716, abs=1e-3)
    assert p[0.8] == pytest.approx(0.9235, abs=1e-3)
    assert p[0.9] > 0.999
    # datasketch's centred choice for 0.8 (9 x 12) catches about half the pairs at 0.8
    ours = mh.candidate_probability(0.8, *mh.lsh_params(112, 0.8))
    assert mh.candidate_probability(0.8, 9, 12) < 0.5 < 0.9 < ours


def test_detection_probability_matches_definition():
    # no cut / cut 0: the S-curve itself
    for j in (0.3, 0.7, 0.9):
        s_curve = mh.candidate_probability(j, 14, 8)
        assert mh.detection_probability(j, 14, 8, 112, None) == pytest.approx(s_curve)
        assert mh.detection_probability(j, 14, 8, 112, 0.0) == pytest.approx(s_curve)
    # Monte Carlo of the same model (independent Bernoulli agreements), 20k trials
    rng = np.random.default_rng(1)
    agree = rng.random((20_000, 112)) < 0.72
    cand = agree[:, :112].reshape(-1, 14, 8).all(axis=2).any(axis=1)
    hit = (cand & (agree.mean(axis=1) >= 0.65)).mean()
    p = mh.detection_probability(0.72, 14, 8, 112, 0.65)
    assert abs(hit - p) <= 4 * math.sqrt(p * (1 - p) / 20_000)


def test_empirical_s_curve_through_band_keys():
    """Pairs at J = 0.8 go through signatures -> band keys -> candidate pairs: the share found
    is the S-curve's 0.9235 within 4 binomial standard errors."""
    n_pairs = 600
    rng = np.random.default_rng(2)
    pairs = word_sets_at(0.8, n_pairs, 40, rng)
    sigs = mh.MinHasher(seed=3, ngram=1).signatures([t for p in pairs for t in p])
    a, b = mh.candidate_pairs(mh.band_keys(sigs, 14, 8))
    found = {(int(x), int(y)) for x, y in zip(a, b)}
    hits = sum((2 * i + 1, 2 * i) in found for i in range(n_pairs))
    p = float(mh.candidate_probability(0.8, 14, 8))
    assert abs(hits / n_pairs - p) <= 4 * math.sqrt(p * (1 - p) / n_pairs)
    assert all(x // 2 == y // 2 for x, y in found)  # nothing across independent pairs


GROUPING_1_HEAD = [36, 108, 109, 42]  # pinned: signatures of old runs stay comparable


def test_band_sets_keep_fineweb_bands_and_add_a_second_chance():
    """Set 0 is FineWeb's contiguous banding; set 1 regroups the same columns (a fixed, pinned
    permutation), so a pair at J = 0.75 that 14 x 8 misses (23 %) often matches there."""
    rng = np.random.default_rng(4)
    pairs = word_sets_at(0.75, 600, 60, rng)
    sigs = mh.MinHasher(seed=5, ngram=1).signatures([t for p in pairs for t in p])
    one, two = mh.band_keys(sigs, 14, 8), mh.band_keys(sigs, 14, 8, band_sets=2)
    assert two.shape == (len(sigs), 28) and np.array_equal(two[:, :14], one)
    grouping = mh.column_grouping(1, 112)
    assert sorted(grouping.tolist()) == list(range(112)) and grouping[:4].tolist() == GROUPING_1_HEAD
    assert np.array_equal(mh.column_grouping(1, 112), grouping)  # deterministic

    def found(keys):
        a, b = mh.candidate_pairs(keys)
        got = {(int(x), int(y)) for x, y in zip(a, b)}
        return sum((2 * i + 1, 2 * i) in got for i in range(len(pairs))) / len(pairs)

    p1 = float(mh.candidate_probability(0.75, 14, 8))  # 0.772
    assert abs(found(one) - p1) <= 4 * math.sqrt(p1 * (1 - p1) / len(pairs))
    # two groupings of shared permutations: below the independent 1 - (1 - p1)^2 = 0.948, well above p1
    assert p1 + 0.1 < found(two) <= 1 - (1 - p1) ** 2 + 4 * math.sqrt(0.05 * 0.95 / len(pairs))


# ---------------------------------------------------------------------------------------------
# candidates, verification
# ---------------------------------------------------------------------------------------------


def test_star_pairs_hubs_and_empty_keys():
    keys = np.array([5, 5, 5, 5, 9, 0, 0, 7, 7], dtype=np.uint64)
    docs = np.array([40, 10, 30, 20, 50, 60, 70, 90, 80], dtype=np.int64)
    a, b = mh.star_pairs(keys, docs, hubs=1)
    assert sorted(zip(a.tolist(), b.tolist())) == [(20, 10), (30, 10), (40, 10), (90, 80)]
    a, b = mh.star_pairs(keys, docs, hubs=2)
    assert sorted(zip(a.tolist(), b.tolist())) == [(20, 10), (30, 10), (30, 20), (40, 10), (40, 20), (90, 80)]
    # EMPTY_KEY (documents without shingles) pairs with nothing; single buckets neither
    assert not ({60, 70, 50} & set(a.tolist()) | {60, 70, 50} & set(b.tolist()))
    a, b = mh.star_pairs(np.array([3], np.uint64), np.array([1]))
    assert len(a) == len(b) == 0


def test_candidate_pairs_unique_over_bands():
    keys = np.array([[1, 2], [1, 2], [3, 4]], dtype=np.uint64)
    a, b = mh.candidate_pairs(keys)
    assert a.tolist() == [1] and b.tolist() == [0]


def test_estimated_jaccard_and_verify_threshold():
    x = np.arange(112, dtype=np.uint32)
    y = x.copy()
    y[:28] += 1000
    assert mh.estimated_jaccard(x, y) == pytest.approx(0.75)
    two = mh.estimated_jaccard(np.stack([x, x]), np.stack([y, np.full(112, mh.MARKER)]))
    assert two.tolist() == [0.75, 0.0]
    sd = math.sqrt(0.75 * 0.25 / 112)
    assert mh.verify_threshold(None, 112) == pytest.approx(0.75 - mh.VERIFY_Z * sd)
    assert mh.verify_threshold(0.75, 112) == pytest.approx(0.75 - mh.VERIFY_Z * sd)
    assert mh.verify_threshold(0.9, 112) > mh.verify_threshold(0.8, 112)
    with pytest.raises(ValueError):
        mh.estimated_jaccard(x, y[:10])


def test_verification_removes_false_candidates():
    """A pair that shares one band by construction but little else is a candidate of plain
    banding and is rejected by verification."""
    rng = np.random.default_rng(4)
    sig = rng.integers(0, 2**32 - 1, size=(3, 112), dtype=np.uint32)
    sig[1, :8] = sig[0, :8]  # one band equal, estimated Jaccard 8/112
    sig[2] = sig[0]
    sig[2, 100:] ^= 1  # a true near-duplicate: 100/112
    plain = mh.cluster_signatures(sig, 14, 8, None)
    verified = mh.cluster_signatures(sig, 14, 8, mh.verify_threshold(None, 112))
    assert plain.tolist() == [0, 0, 0]
    assert verified.tolist() == [0, 1, 0]


# ---------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------


def test_connected_components_min_key_and_chains():
    part = np.int64(3) << 32
    a = np.array([part | 7, part | 5, 2, 9], dtype=np.int64)
    b = np.array([part | 5, 2, 11, 12], dtype=np.int64)
    keys, roots = mh.connected_components(a, b)
    assert keys.tolist() == sorted({*a.tolist(), *b.tolist()})
    got = dict(zip(keys.tolist(), roots.tolist()))
    # part-3 rows chain to key 2 of part 0: the first in input order is kept
    assert got[int(part | 7)] == got[int(part | 5)] == got[11] == got[2] == 2
    assert got[9] == got[12] == 9


def test_connected_components_long_chain_and_huge_cluster():
    n = 100_000
    # a chain given in reverse order: 99999-99998, ..., 1-0 -> everything is rooted at 0
    keys, roots = mh.connected_components(np.arange(n - 1, 0, -1), np.arange(n - 2, -1, -1))
    assert len(keys) == n and np.all(roots == 0)
    # one huge star cluster rooted at its smallest key, plus a separate pair
    hub = np.full(n, 10**9, dtype=np.int64)
    others = np.arange(10**9 + 1, 10**9 + 1 + n, dtype=np.int64)
    keys, roots = mh.connected_components(np.append(others, 5), np.append(hub, 6))
    assert np.all(roots[keys >= 10**9] == 10**9)
    assert roots[keys == 5][0] == roots[keys == 6][0] == 5


def test_connected_components_empty_and_mismatched():
    keys, roots = mh.connected_components(np.empty(0, np.int64), np.empty(0, np.int64))
    assert len(keys) == len(roots) == 0
    with pytest.raises(ValueError):
        mh.connected_components(np.array([1, 2]), np.array([3]))


def test_dedup_in_memory_end_to_end():
    rng = np.random.default_rng(9)
    vocab = [wid(i) for i in range(3000)]
    base = [" ".join(rng.choice(vocab, size=400)) for _ in range(4)]
    words = base[0].split()
    near = list(words)
    for pos in rng.choice(400, size=6, replace=False):  # ~0.86 Jaccard
        near[pos] = "changed"
    texts = [
        base[1],  # 0 unrelated
        " ".join(near),  # 1 near-duplicate of 3
        "",  # 2 empty
        base[0].upper() + " !!!",  # 3 same as 4 after normalisation, first of the cluster here
        base[0],  # 4
        "",  # 5 empty: never a duplicate, not even of 2
        base[2],  # 6 unrelated
        "Short text.",  # 7 short
        "short TEXT",  # 8 identical to 7 after normalisation
    ]
    roots = mh.dedup_in_memory(texts)
    assert roots.tolist() == [0, 1, 2, 1, 1, 5, 6, 7, 7]
    # a stricter threshold still keeps the 0.86 pair and the exact copies
    assert mh.dedup_in_memory(texts, threshold=0.8).tolist() == roots.tolist()
    # plain banding without verification: same here (nothing borderline)
    assert mh.dedup_in_memory(texts, verify=False).tolist() == roots.tolist()


def test_no_documents():
    sigs = mh.MinHasher().signatures([])
    assert sigs.shape == (0, mh.DEFAULT_NUM_PERM)
    assert mh.band_keys(sigs, 14, 8).shape == (0, 14)
    assert len(mh.dedup_in_memory([])) == 0
    assert mh.dedup_in_memory(["only one"]).tolist() == [0]


def test_dedup_in_memory_all_identical():
    texts = ["The same page, again and again, with the same words in it."] * 50
    assert np.all(mh.dedup_in_memory(texts) == 0)


# ---------------------------------------------------------------------------------------------
# exact keys
# ---------------------------------------------------------------------------------------------


def test_exact_keys():
    a = mh.exact_key("Hello, World! 2024")
    assert a == mh.exact_key("hello world 1999") == mh.exact_key("HELLO   WORLD\n(7)")
    assert a != mh.exact_key("hello world")
    assert mh.exact_key(None) == mh.exact_key("") == mh.exact_key("...") == mh.EMPTY_KEY
    keys = mh.exact_keys(["Hello, World! 2024", None, "other"])
    assert keys.dtype == np.uint64 and keys.tolist() == [a, mh.EMPTY_KEY, mh.exact_key("other")]


def test_url_keys():
    assert mh.url_key("HTTPS://Example.COM:443/Path?q=1#frag") == mh.url_key("https://example.com/Path?q=1")
    assert mh.url_key("https://example.com/Path") != mh.url_key("https://example.com/path")
    assert mh.url_key(None) == mh.url_key("  ") == mh.EMPTY_KEY
    assert mh.url_key("http://[bad") != mh.EMPTY_KEY  # malformed: hashed as given


def test_import_is_light():
    code = "import sys, stages.minhash; print(any(m in sys.modules for m in ('scipy', 'datasketch')))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert out.stdout.strip() == "False"
