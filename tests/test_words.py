"""stages.words: spaCy's word tokens without spaCy's cost, sentence counts as datatrove's C4 filter
counts them, detection of scripts written without spaces, and the bound on the chunk cache."""

from __future__ import annotations

import pytest
import spacy

import stages.words as words_module
from stages.words import (
    UNSEGMENTED_LANGUAGES,
    WordSplitter,
    is_punct,
    splitter_for,
    stop_words_for,
    unsegmented_script,
)

# Real text: the Universal Declaration of Human Rights (public), a forum post, web boilerplate.
TEXTS = {
    "en": [
        "All human beings are born free and equal in dignity and rights. They are endowed with reason and "
        "conscience and should act towards one another in a spirit of brotherhood.",
        "Don't panic: I cannot log in, won't retry and I'm not sure what we'd do. Y'all can't either, "
        "can you? Let's see... 'quoted' and \"double-quoted\" (in brackets) [1] {braces}",
        "Mail info@example.com or see https://www.example.org/path/page.html?id=42&lang=en#top, "
        "www.example.com and http://localhost:8080/a_b. Call +44 20 7946 0958 before 10:30am.",
        "Prices: $5.99, 1,000.50 EUR, 3.14%, -12 °C, 50km, 2nd/3rd place, U.S. and U.K., e.g. Dr. Smith "
        "vs. Mr. Jones; No. 7 - it's 9-to-5 work.",
        "  Multiple   spaces,\ttabs\t\tand\u00a0no-break\u00a0spaces\u2009thin\u3000ideographic\n\nnew "
        "lines\r\nand a trailing space ",
        "Emoji 🙂🎉 and symbols ©®™ → ← ★, #hashtag @mention, C++ and C#, R&D, AT&T, 100% (sic!)",
        "Posted by admin | 12 Comments | Share this: Facebook, Twitter... Read more »",
    ],
    "de": [
        "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen "
        "begabt und sollen einander im Geist der Brüderlichkeit begegnen.",
        "Am 3. Oktober 1990, d.h. vor über 30 Jahren, wurde Deutschland z.B. laut Art. 23 GG "
        "wiedervereinigt. Die Str. 17 liegt u.a. in der Nähe; „Anführungszeichen“ und »Guillemets«.",
    ],
    "fr": [
        "Chacun peut se prévaloir de tous les droits et de toutes les libertés proclamés dans la présente "
        "Déclaration, sans distinction aucune, notamment d'opinion politique ou de toute autre opinion.",
        "Aujourd'hui, l'homme qu'on dit « libre » n'est-il pas J.-C. lui-même ? C'est-à-dire : oui !",
    ],
    "es": [
        "Todo individuo tiene derecho a la vida, a la libertad y a la seguridad de su persona. ¿Qué opinas? "
        "¡Hola! Sr. García, EE.UU., 1.º de mayo.",
    ],
    "ru": [
        "Все люди рождаются свободными и равными в своем достоинстве и правах. Они наделены разумом и "
        "совестью, т.е. должны поступать в отношении друг друга в духе братства — «как-то так».",
    ],
    "ar": [
        "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق. وقد وهبوا عقلاً وضميرًا وعليهم أن يعامل بعضهم "
        "بعضًا بروح الإخاء. هل هذا صحيح؟",
    ],
    "xx": [  # spaCy's language-neutral rules (used for languages it has none for)
        "Tất cả mọi người sinh ra đều được tự do và bình đẳng về nhân phẩm và quyền lợi. Hi, it's x.y@z.com!",
    ],
}


@pytest.fixture(scope="module")
def spacy_tokenizers():
    return {lang: spacy.blank(lang).tokenizer for lang in TEXTS}


def spacy_words(tokenizer, text: str) -> list[str]:
    """What datatrove's ``split_into_words`` returns: spaCy tokens without whitespace tokens."""
    return [t.text for t in tokenizer(text) if not t.is_space]


@pytest.mark.parametrize(
    ("language", "text"),
    [(lang, text) for lang, texts in TEXTS.items() for text in texts],
    ids=[f"{lang}-{i}" for lang, texts in TEXTS.items() for i in range(len(texts))],
)
def test_words_equal_spacy_tokens(spacy_tokenizers, language, text):
    splitter = splitter_for(language)
    expected = spacy_words(spacy_tokenizers[language], text)
    assert splitter.words(text) == expected
    assert splitter.words(text) == expected  # second time from the cache


def test_words_equal_datatrove_split_into_words():
    from datatrove.utils.text import split_into_words

    for language in ("en", "de", "fr"):
        for text in TEXTS[language]:
            assert splitter_for(language).words(text) == split_into_words(text, language)


def test_special_cases_and_alphabetic_chunks():
    en = spacy.blank("en").tokenizer
    splitter = WordSplitter("en")
    # plain alphabetic chunks skip spaCy, except its special cases ("cannot" -> "can", "not")
    for chunk in ["cannot", "Cannot", "gonna", "Straße", "naïve", "ªº", "Ǆemal", "ǃXóõ", "word"]:
        assert splitter.chunk_tokens(chunk) == tuple(t.text for t in en(chunk)), chunk
    assert splitter.words("I cannot go") == ["I", "can", "not", "go"]
    assert splitter.words("Ich kann nicht") == ["Ich", "kann", "nicht"]


def test_language_rules_differ_and_unknown_codes_fall_back():
    text = "Am 3. Oktober, d.h. heute."
    assert splitter_for("de").words(text) == ["Am", "3.", "Oktober", ",", "d.h.", "heute", "."]
    assert splitter_for("en").words(text) == ["Am", "3", ".", "Oktober", ",", "d.h", ".", "heute", "."]
    assert splitter_for("fr").words("l'homme") == ["l'", "homme"]
    assert splitter_for("en").words("l'homme") == ["l'homme"]
    for code in ("qq", "ko", "vi", "sw"):  # unknown to spaCy, or needing a segmenter not installed
        assert splitter_for(code).language == "xx"
    assert splitter_for("de") is splitter_for("de")
    assert splitter_for(None).language == "en"
    assert splitter_for(None, default="de").language == "de"


def test_stop_words_for():
    assert {"und", "der", "die"} <= stop_words_for("de")
    assert {"et", "les"} <= stop_words_for("fr")
    assert stop_words_for("xx") is None
    assert stop_words_for("qq") is None


def test_is_punct_matches_spacy():
    vocab = spacy.blank("en").vocab
    for token in [
        ".",
        "...",
        "…",
        "«",
        "»",
        "—",
        "-",
        "!?",
        "#",
        "$",
        "+",
        "a.",
        "'s",
        "§",
        "¿",
        "。",
        "、",
        "1.",
    ]:
        assert is_punct(token) == vocab[token].is_punct, token


# --- sentences ---------------------------------------------------------------------------------

SENTENCE_LINES = [
    "All human beings are born free and equal in dignity and rights. They are endowed with reason.",
    "Hello world",
    "One. Two! Three? Four",
    "Wait... what?! Really?!?",
    "a.  .",
    "a. .",
    "a.\t.",
    "x\t\ty. z",
    "Ends with a tab.\t",
    "Ends with two spaces.  ",
    "  Leading spaces. Then more.",
    "\tLeading tab. Then more.",
    'He said "Stop." Then he left.',
    "(See below.) Next sentence.",
    "U.S. officials met e.g. Dr. Smith at 3 p.m. today.",
    "Version 3.14 is out. Download it from https://example.org/v3.14. Enjoy!",
    "Mail me at info@example.com. Thanks.",
    "1. First item 2. Second item 3. Third item",
    "Spaced . punctuation . everywhere .",
    "Non\u00a0breaking.\u00a0Space. Thin\u2009space. Ideographic\u3000space.",
    "Chinese full stop。 Next one。 And a question？",
    "¿Qué? ¡Hola! Bien.",
    "Все люди рождаются свободными. Они наделены разумом.",
    "Trailing ellipsis…",
    "Many!!! Marks??? Here...",
    "Hi. !\tx",
    "Stop. ?\tgo on",
]


def test_count_sentences_matches_datatrove():
    from datatrove.utils.text import split_into_sentences

    splitter = splitter_for("en")
    for line in SENTENCE_LINES:
        assert splitter.count_sentences(line) == len(split_into_sentences(line, "en")), repr(line)
    for language, line in [
        ("de", "Am 3. Oktober 1990 wurde Deutschland wiedervereinigt. Das war z.B. ein Feiertag."),
        ("fr", "Aujourd'hui, c'est-à-dire le 1er mai. Bonne fête !"),
    ]:
        assert splitter_for(language).count_sentences(line) == len(split_into_sentences(line, language))
    assert splitter_for("de").count_sentences("Am 3. Oktober 1990 war Feiertag.") == 1
    assert splitter_for("en").count_sentences("Am 3. Oktober 1990 war Feiertag.") == 2


def test_blank_line_has_no_sentence():
    # datatrove's split_into_sentences("") returns one empty "sentence"; C4 never counts a blank line
    # with its default min_words_per_line (it is removed as too_few_words first)
    splitter = splitter_for("en")
    assert [splitter.count_sentences(line) for line in ["", " ", "   ", "\t"]] == [0, 0, 0, 0]


def test_count_sentences_trailing_single_space():
    from datatrove.utils.text import split_into_sentences

    splitter = splitter_for("en")
    for line in ["Hello world. ", "One. Two. ", "Stop! ", "a. b. "]:
        assert splitter.count_sentences(line) == len(split_into_sentences(line, "en")), repr(line)


# --- scripts without spaces --------------------------------------------------------------------


def test_unsegmented_script_by_label_and_by_share():
    zh = "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。"
    ja = "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。"
    th = "มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักดิ์และสิทธิ"
    ko = "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다."
    de = "Die Olympischen Spiele 2020 fanden in Tokio (東京) statt, Peking (北京) folgte 2022."
    for text in (zh, ja, th):
        assert unsegmented_script(text, None)
        assert unsegmented_script(text, "en")  # mislabelled: the script decides
    assert not unsegmented_script(ko, "ko")  # Korean separates words with spaces
    assert not unsegmented_script(de, None)
    assert not unsegmented_script("", None) and not unsegmented_script(" \n ", None)
    # the label alone is enough
    assert unsegmented_script("Hello world", "zh")
    assert {"zh", "ja", "th", "lo", "km", "my", "bo"} <= UNSEGMENTED_LANGUAGES


def test_unsegmented_share_threshold_is_strict():
    # 10 characters that are not spaces or newlines: 3 Han (30 %) is not enough, 4 (40 %) is
    assert not unsegmented_script("東京 abc de\nfg", None)
    assert not unsegmented_script("東京都 abcd efg", None)
    assert unsegmented_script("東京都庁 abc de\nf", None)
    assert unsegmented_script("東京都庁 abcdefghi", None)  # 4 of 13: 31 %
    # spaces and newlines are not counted, other characters are
    assert unsegmented_script("東京都庁 " + " " * 50 + "ab\n\n\ncd", None)
    assert not unsegmented_script("東京都 abc\tdefg", None)


# --- the chunk cache ---------------------------------------------------------------------------


def test_cache_bound_keeps_results_right(monkeypatch, spacy_tokenizers):
    monkeypatch.setattr(words_module, "CHUNK_CACHE_SIZE", 5)
    splitter = WordSplitter("en")  # a private splitter: the shared one keeps its cache
    text = " ".join(TEXTS["en"])
    expected = spacy_words(spacy_tokenizers["en"], text)
    for _ in range(3):
        assert splitter.words(text) == expected
        assert len(splitter._cache) <= 5
    from datatrove.utils.text import split_into_sentences

    for line in SENTENCE_LINES:
        assert splitter.count_sentences(line) == len(split_into_sentences(line, "en")), repr(line)
        assert len(splitter._cache) <= 5


def test_splitter_for_chinese_uses_the_language_neutral_rules():
    """spaCy's zh tokenizer is a character segmenter, not rules: the splitter falls back to the
    language-neutral ``xx`` rules, so Chinese text splits at spaces and punctuation only (the
    quality filters do not judge such text by word rules; see stages/quality.py)."""
    import spacy

    zh = splitter_for("zh")
    text = "我们的 模型 很好, 你们 觉得 呢?"
    expected = [t.text for t in spacy.blank("xx").tokenizer(text) if not t.is_space]
    assert zh.words(text) == expected == ["我们的", "模型", "很好", ",", "你们", "觉得", "呢", "?"]
    assert splitter_for("zh") is zh  # memoised per process
