"""Phone numbers only: a second planted evaluation of the ``pii`` stage, independent of
``pii_eval.py``'s generator, with libphonenumber's ``PhoneNumberMatcher`` as the reference.

Why a second one: ``pii_eval.py`` plants only numbers that libphonenumber calls valid, reformatted
by libphonenumber itself, and never an extension; an evaluation with another generator found the
stage at 0.78 recall where ``PhoneNumberMatcher`` found 0.935.  This one plants what Faker writes.

**Values.**  Faker's raw ``phone_number()`` in 25 locales, one per default ``phone_regions``
country (Ireland has no Faker phone provider) plus fr_CH and it_CH, as Faker writes them:
national and international layouts, ``(0)`` trunk prefixes (``+49(0)30 ...``), ``00``/``001``
prefixes, ``x123`` extensions (en_US, en_CA, es_MX).  Some get an explicit extension appended
(`` ext. 7``, `` ext 1234``).  A few are rewritten into forms the issue lists and Faker does not
make: ``011``- and ``00``-prefixed international numbers and, after a cue word only, the bare
national digits (``2125550142``).  Faker draws many numbers from unallocated ranges; each value
is classified by libphonenumber for its locale's country: **valid**, **possible** (right length,
unallocated range) or not even possible (not planted; counted per locale).

**Contexts.**  Each value goes into a real paragraph (``pii_eval.carrier_paragraphs``: books,
documentation, the Debian Handbook in 23 languages, the UDHR) inside a sentence of its own, at a
sentence boundary.  Half the sentences carry a **cue word** right before the number (``Call us
at``, ``Fax:``, ``Telefon:``, ``Tél. :``, ``Llámenos al``, ``電話：`` ... in 12 languages); the other
half carry none (``Ask Maria ({v}) about it.``, ``{v} — Oslo office``), checked against the
stage's own cue regex.  The templates share nothing with ``pii_eval.py``'s labels and wraps.

**Gold** (the headline recall): valid numbers in both contexts, and possible-but-not-valid ones
after a cue word (the only place where a reader, or a scrubber, can tell an unallocated number
from an id).  Possible-only numbers without a cue are reported on their own row, not in the
headline; their characters never count as false positives.  A value is found when every one of
its characters (extension included) is replaced.

**False positives**: characters replaced outside planted values, on the planted documents and on
``pii_eval.py``'s clean documents (2,000 by default, each with 1-4 hard negatives: ISBNs, dates,
year ranges, versions, order numbers, prices, times, code, hashes, private IPs, section
numbers...), and on ``cue_negatives``: clean documents with sentences that put a phone cue word
before something that is not a phone number (``Call 2 of 3``, ``Call ID 4821937265``, ``pH 7.4``,
``Phone sales rose 12% in 2019``); the number of those changed is reported too.

**Reference**: ``phonenumbers.PhoneNumberMatcher`` with ``Leniency.VALID`` for 12 regions
(``REFERENCE_REGIONS``), the union of its matches, on the same texts.  winnow: ``find_pii`` with the
stage's defaults (24 ``phone_regions``, every type).

Usage: ``python bench/pii_phone_eval.py [--seed 1] [--phones 1500] [--clean 2000] [--json OUT]``.
Seed 1 is the development seed; report another (``--seed 2``) as held out.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import benchutil  # noqa: E402
from pii_eval import _covered, _overlaps, carrier_paragraphs  # noqa: E402
from pii_eval import build_documents as pii_eval_documents  # noqa: E402

GOALS = {"recall": 0.95, "fp_rate": 0.001}
LOCALES = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "nl_BE", "de_CH", "fr_CH", "it_CH",
    "de_AT", "pl_PL", "sv_SE", "no_NO", "da_DK", "fi_FI", "pt_PT", "pt_BR", "es_MX", "en_IN", "ja_JP",
    "en_AU", "en_CA", "cs_CZ",
)  # fmt: skip
REFERENCE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "JP", "IN", "AU")
NAMES = ("Maria", "Jonas", "Aiko", "Pedro", "Ingrid", "Tomasz", "Léa", "Giulia", "Sven", "Priya")
CITIES = ("Oslo", "Lyon", "Porto", "Graz", "Osaka", "Leeds", "Austin", "Turin", "Brno", "Pune")
# sentences with a cue word right before the number
CUE_TEMPLATES = (
    "Call us at {v}.", "Phone: {v}", "For reservations, phone {v} before noon.", "Tel: {v}",
    "Fax: {v}", "Mobile {v} (evenings).", "Cell: {v}", "Ph. {v}", "Questions? Contact us on {v}.",
    "WhatsApp: {v}", "Send an SMS to {v}.", "You can reach the front desk by telephone at {v}.",
    "Telefon: {v}", "Rufen Sie uns an unter {v}.", "Tel. {v}", "Handy: {v}", "Tél. : {v}",
    "Appelez-nous au {v}.", "Téléphone : {v}", "Teléfono: {v}", "Llámenos al {v}.", "Móvil: {v}",
    "Telefono: {v}", "Chiamaci al {v}.", "Cellulare {v}", "Bel ons op {v}.", "Telefoon: {v}",
    "Telefone: {v}", "Ligue para {v}.", "Celular: {v}", "Zadzwoń: {v}", "tel. kom. {v}",
    "Ring {v}.", "Tlf. {v}", "Mobil: {v}", "Puh. {v}", "電話：{v}", "TEL {v}",
)  # fmt: skip
# sentences without one (checked against the stage's cue regex in build())
NO_CUE_TEMPLATES = (
    "Ask {name} ({v}) about it.", "{v} — {city} office.", "{name}, {v}, {city}.",
    "Write down {v} before you leave.", "{name} gave us {v} last week.", "The {city} desk: {v}",
    "Notes for {name}: {v}; bring the forms.", "In {city} it is {v}, otherwise {name}.",
)  # fmt: skip
EXTENSIONS = (" ext. ", " ext. ", " ext ", " Ext. ")
# cue words before things that are not phone numbers: none of these may be replaced
CUE_NEGATIVES = (
    "Call {a} of {b} starts at 10:{mm}.", "Call ID {id10} was logged.", "Phone sales rose {a}% in {year}.",
    "The phone costs ${a}.{mm}.", "Call of Duty {a} sold {big:,} copies.", "Contact {year}-{year2} archive.",
    "Tel Aviv, {day}.{month}.{year}.", "Fax machines sold {big:,} units.", "Mobile World Congress {year}.",
    "Phone: iPhone {a} Pro", "pH {a}.{b}", "ph. {a}.{b} at 25 °C", "Mobile version {a}.{b}.{mm}.{b}",
    "Contact order {id10} shipped.", "call 2 of 3", "SMS {short} to vote.", "Call {year}-{month}-{day} 10:30",
    "Phone model {id8}", "Contact form #{id8}", "calls per second: {big}",
)  # fmt: skip


def _faker(locale: str, seed: int):
    from faker import Faker

    f = Faker(locale)
    f.seed_instance(seed * 7919 + sum(map(ord, locale)))
    return f


class PhoneValues:
    """Faker's raw numbers, classified by libphonenumber for the locale's country."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.fakers: dict[str, Any] = {}
        self.drawn: Counter = Counter()
        self.not_possible: Counter = Counter()
        self.not_possible_examples: dict[str, list[str]] = defaultdict(list)

    def faker(self, locale: str):
        if locale not in self.fakers:
            self.fakers[locale] = _faker(locale, self.seed)
        return self.fakers[locale]

    def draw(self, cue: bool) -> dict[str, Any]:
        import phonenumbers as pn
        from phonenumbers import PhoneNumberFormat as PNF

        rng = self.rng
        while True:
            locale = rng.choice(LOCALES)
            region = locale.split("_")[1]
            raw = self.faker(locale).phone_number()
            self.drawn[locale] += 1
            try:
                number = pn.parse(raw, region)
            except pn.NumberParseException:
                number = None
            if number is None or not pn.is_possible_number(number):
                self.not_possible[locale] += 1
                if len(self.not_possible_examples[locale]) < 5:
                    self.not_possible_examples[locale].append(raw)
                continue
            valid = pn.is_valid_number(number)
            value, fmt = raw, "faker_ext" if number.extension else "faker"
            r = rng.random()
            if r < 0.12 and not number.extension:
                value, fmt = raw + rng.choice(EXTENSIONS) + str(rng.randint(1, 9999)), "explicit_ext"
            elif r < 0.24 and valid and not number.extension:
                intl = pn.format_number(number, PNF.INTERNATIONAL)
                national = pn.format_number(number, PNF.NATIONAL)
                forms = ["011", "00"]
                if cue:
                    forms.append("bare_national")
                if national.startswith("0") and region not in ("IT",):
                    forms.append("trunk_bracket")
                fmt = rng.choice(forms)
                if fmt == "011":
                    value = "011 " + intl[1:]
                elif fmt == "00":
                    value = "00" + intl[1:]
                elif fmt == "bare_national":
                    value = re.sub(r"\D", "", national)
                else:  # '+49(0)30 1234567', '+44 (0)20 7946 0958'
                    cc = intl.split(" ", 1)[0]
                    value = f"{cc}{rng.choice(('', ' '))}(0){national[1:].lstrip('(').replace(')', '')}"
            return {
                "locale": locale,
                "format": fmt,
                "validity": "valid" if valid else "possible",
                "extension": fmt in ("faker_ext", "explicit_ext"),
                "value": value,
            }


def _boundaries(text: str) -> list[int]:
    """Where a sentence may be inserted: after a sentence end, at a paragraph's start or end."""
    spots = [m.end() for m in re.finditer(r"[.!?。！？](?=\s)", text)]
    return [0, len(text), *spots]


def _insert(text: str, sentences: list[tuple[str, int, int, dict]], rng: random.Random) -> tuple[str, list]:
    """Put each (sentence, value offset, value length, info) at a sentence boundary of ``text``."""
    spots = _boundaries(text)
    picks = sorted((rng.choice(spots), i) for i in range(len(sentences)))
    out, spans, prev, length = [], [], 0, 0
    for pos, i in picks:
        sentence, off, n, info = sentences[i]
        out.append(text[prev:pos])
        length += pos - prev
        prev = pos
        if pos == 0:
            snippet, lead = sentence + " ", 0
        elif text[pos - 1] in "。！？":
            snippet, lead = sentence, 0
        else:
            snippet, lead = " " + sentence, 1
        out.append(snippet)
        spans.append({**info, "start": length + lead + off, "end": length + lead + off + n})
        length += len(snippet)
    out.append(text[prev:])
    new = "".join(out)
    for s in spans:
        assert new[s["start"] : s["end"]] == s["value"], (s, new[s["start"] : s["end"]])
    return new, spans


def _fill(template: str, rng: random.Random, value: str) -> tuple[str, int]:
    sentence = template.format(v="\0", name=rng.choice(NAMES), city=rng.choice(CITIES))
    off = sentence.index("\0")
    return sentence.replace("\0", value), off


def _cue_negative(rng: random.Random) -> str:
    year = rng.randint(1950, 2024)
    return rng.choice(CUE_NEGATIVES).format(
        a=rng.randint(2, 99),
        b=rng.randint(1, 9),
        mm=f"{rng.randint(0, 59):02d}",
        year=year,
        year2=year + rng.randint(1, 20),
        month=f"{rng.randint(1, 12):02d}",
        day=f"{rng.randint(1, 28):02d}",
        id10=rng.randint(10**9, 10**10 - 1),
        id8=rng.randint(10**7, 10**8 - 1),
        big=rng.randint(10**6, 10**8),
        short=rng.randint(10000, 99999),
    )


def build(seed: int, n_phones: int, n_clean: int) -> dict[str, Any]:
    from stages.pii import DEFAULT_PHONE_REGIONS

    rng = random.Random(seed)
    paragraphs, _ = carrier_paragraphs(rng)
    english = [p for p in paragraphs if p["lang"] == "en"]
    other = [p for p in paragraphs if p["lang"] != "en"]

    def carrier() -> str:
        pool = english if rng.random() < 0.5 else other
        first = pool[rng.randrange(len(pool))]
        same = [first] + [
            p for p in (pool[rng.randrange(len(pool))] for _ in range(3)) if p["lang"] == first["lang"]
        ]
        return "\n\n".join(p["text"] for p in same[: rng.randint(1, 2)])

    values = PhoneValues(seed)
    planted: list[dict] = []
    left = n_phones
    while left > 0:
        k = min(left, rng.randint(1, 2))
        sentences = []
        for _ in range(k):
            cue = rng.random() < 0.5
            info = values.draw(cue)
            template = rng.choice(CUE_TEMPLATES if cue else NO_CUE_TEMPLATES)
            sentence, off = _fill(template, rng, info["value"])
            info = {**info, "cue": cue, "template": template}
            sentences.append((sentence, off, len(info["value"]), info))
        text, spans = _insert(carrier(), sentences, rng)
        planted.append({"id": f"phone-{len(planted)}", "text": text, "spans": spans})
        left -= k
    cue_negatives = []
    for i in range(n_clean // 4):
        negs = [_cue_negative(rng) for _ in range(rng.randint(1, 3))]
        text, spans = _insert(carrier(), [(s, 0, len(s), {"value": s}) for s in negs], rng)
        cue_negatives.append({"id": f"cueneg-{i}", "text": text, "spans": spans})
    # pii_eval's clean documents (hard negatives), built from the same seed
    clean = pii_eval_documents(seed, 0, n_clean, tuple(DEFAULT_PHONE_REGIONS))["clean"]
    return {
        "planted": planted,
        "clean": clean,
        "cue_negatives": cue_negatives,
        "faker_not_possible": {
            loc: {"drawn": values.drawn[loc], "not_possible": values.not_possible[loc]}
            for loc in sorted(values.drawn)
        },
        "faker_not_possible_examples": dict(values.not_possible_examples),
    }


# --------------------------------------------------------------------------------------------
# the two systems


def winnow_spans(texts: list[str]) -> list[list[tuple[int, int, str]]]:
    from stages.pii import find_pii

    return [find_pii(t) for t in texts]


def reference_spans(texts: list[str]) -> list[list[tuple[int, int, str]]]:
    """The union of PhoneNumberMatcher's VALID matches over REFERENCE_REGIONS, merged."""
    import phonenumbers as pn

    out = []
    for text in texts:
        found = sorted(
            (m.start, m.end)
            for region in REFERENCE_REGIONS
            for m in pn.PhoneNumberMatcher(text, region, leniency=pn.Leniency.VALID)
        )
        merged: list[list[int]] = []
        for a, b in found:
            if merged and a < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out.append([(a, b, "phone") for a, b in merged])
    return out


# --------------------------------------------------------------------------------------------
# scoring


def is_gold(g: dict) -> bool:
    return g["validity"] == "valid" or g["cue"]


def score_planted(docs: list[dict], pred: list[list[tuple[int, int, str]]]) -> dict[str, Any]:
    rows: dict[str, Counter] = defaultdict(Counter)
    missed: list[str] = []
    total = fp = 0
    fp_strings: Counter = Counter()
    for d, spans in zip(docs, pred):
        text = d["text"]
        total += len(text)
        for g in d["spans"]:
            hit = _covered(g["start"], g["end"], spans)
            typed = hit and all(t == "phone" for a, b, t in spans if a < g["end"] and g["start"] < b)
            partial = not hit and _overlaps(g["start"], g["end"], spans)
            keys = ["all"] if is_gold(g) else ["possible_only_no_cue"]
            if is_gold(g):
                keys += [
                    f"cue:{g['cue']}",
                    f"locale:{g['locale']}",
                    f"format:{g['format']}",
                    f"validity:{g['validity']}",
                    f"validity+cue:{g['validity']}/{g['cue']}",
                ]
            for key in keys:
                rows[key]["n"] += 1
                rows[key]["found"] += hit
                rows[key]["typed"] += typed
                rows[key]["partial"] += partial
            if is_gold(g) and not hit and len(missed) < 80:
                lo, hi = max(0, g["start"] - 30), min(len(text), g["end"] + 15)
                missed.append(text[lo : g["start"]] + "[[" + g["value"] + "]]" + text[g["end"] : hi])
        for a, b, t in spans:
            outside = [i for i in range(a, b) if not any(g["start"] <= i < g["end"] for g in d["spans"])]
            if outside:
                fp += len(outside)
                fp_strings[(t, text[a:b])] += 1
    recall = {
        k: {
            "n": c["n"],
            "recall": round(c["found"] / c["n"], 4),
            "recall_typed": round(c["typed"] / c["n"], 4),
            "partial": c["partial"],
        }
        for k, c in sorted(rows.items())
    }
    return {
        "documents": len(docs),
        "characters": total,
        "recall": recall,
        "missed_examples": missed,
        "fp_chars": fp,
        "fp_rate": round(fp / max(total, 1), 6),
        "fp_strings": [{"type": t, "string": s, "count": n} for (t, s), n in fp_strings.most_common(60)],
    }


def score_clean(docs: list[dict], pred: list[list[tuple[int, int, str]]]) -> dict[str, Any]:
    total = fp = changed = 0
    fp_strings: Counter = Counter()
    for d, spans in zip(docs, pred):
        total += len(d["text"])
        fp += sum(b - a for a, b, _ in spans)
        changed += sum(_overlaps(g["start"], g["end"], spans) for g in d["spans"])
        for a, b, t in spans:
            fp_strings[(t, d["text"][max(0, a - 25) : a] + "[[" + d["text"][a:b] + "]]")] += 1
    return {
        "documents": len(docs),
        "characters": total,
        "negatives": sum(len(d["spans"]) for d in docs),
        "negatives_changed": changed,
        "fp_chars": fp,
        "fp_rate": round(fp / max(total, 1), 6),
        "fp_strings": [{"type": t, "string": s, "count": n} for (t, s), n in fp_strings.most_common(60)],
    }


def evaluate(seed: int, n_phones: int, n_clean: int) -> dict[str, Any]:
    import stages.pii

    t0 = time.perf_counter()
    built = build(seed, n_phones, n_clean)
    # the no-cue templates must hold no cue word the stage knows (a stage without cue words has none)
    cue_before = getattr(stages.pii, "_cue_before", None)
    for template in NO_CUE_TEMPLATES if cue_before else ():
        for name, city in zip(NAMES, CITIES):
            head = template.split("{v}")[0].format(name=name, city=city)
            assert not cue_before(head + "0", len(head)), template
    parts = {k: built[k] for k in ("planted", "clean", "cue_negatives")}
    print(
        f"seed {seed}: {len(parts['planted'])} planted documents, {len(parts['clean'])} clean, "
        f"{len(parts['cue_negatives'])} with cue-word negatives, built in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    out: dict[str, Any] = {
        "seed": seed,
        "faker_not_possible": built["faker_not_possible"],
        "faker_not_possible_examples": built["faker_not_possible_examples"],
        "planted_values": Counter(
            f"{g['validity']}/{'cue' if g['cue'] else 'no_cue'}" for d in parts["planted"] for g in d["spans"]
        ),
        "systems": {},
    }
    for name, fn in (("winnow", winnow_spans), ("phonenumbers_matcher_valid", reference_spans)):
        res: dict[str, Any] = {}
        for part, docs in parts.items():
            t0 = time.perf_counter()
            pred = fn([d["text"] for d in docs])
            seconds = time.perf_counter() - t0
            res[part] = (score_planted if part == "planted" else score_clean)(docs, pred)
            res[part]["seconds"] = round(seconds, 2)
        out["systems"][name] = res
        print(f"  {name}: done", flush=True)
    return out


def print_summary(out: dict[str, Any]) -> None:
    w, r = out["systems"]["winnow"], out["systems"]["phonenumbers_matcher_valid"]
    print(f"\nseed {out['seed']}: planted {dict(out['planted_values'])}")
    print(f"{'row':34s} {'n':>5s} {'winnow':>8s} {'typed':>7s} {'reference':>10s}")
    keys = sorted(w["planted"]["recall"], key=lambda k: (k != "all", k.split(":")[0], k))
    for k in keys:
        a, b = w["planted"]["recall"][k], r["planted"]["recall"][k]
        print(f"{k:34s} {a['n']:5d} {a['recall']:8.4f} {a['recall_typed']:7.4f} {b['recall']:10.4f}")
    print("\ncharacters replaced outside planted values (goal <= 0.1 %):")
    for part in ("planted", "clean", "cue_negatives"):
        a, b = w[part], r[part]
        extra = f", negatives changed {a['negatives_changed']}/{a['negatives']}" if "negatives" in a else ""
        extra_r = f" ({b['negatives_changed']})" if "negatives" in b else ""
        print(
            f"  {part:14s} winnow {a['fp_chars']:5d} = {100 * a['fp_rate']:.4f}%{extra}   reference "
            f"{b['fp_chars']:5d} = {100 * b['fp_rate']:.4f}%{extra_r}"
        )
    print("\nwinnow misses (first 25):")
    for m in w["planted"]["missed_examples"][:25]:
        print("  ", m.replace("\n", " "))
    for part in ("clean", "cue_negatives", "planted"):
        if w[part]["fp_strings"]:
            print(f"\nwinnow replacements outside planted values, {part}:")
            for fp in w[part]["fp_strings"][:15]:
                print(f"  {fp['count']:3d} {fp['type']:8s} {fp['string']!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--phones", type=int, default=1500, help="planted phone numbers")
    ap.add_argument(
        "--clean", type=int, default=2000, help="clean documents (and a quarter as many with cue words)"
    )
    ap.add_argument("--json", type=Path, help="default: bench/results/pii_phone_eval[-seedN].json")
    args = ap.parse_args()
    out = {
        "machine": benchutil.machine_info(["faker", "phonenumbers", "python-stdnum"]),
        "goals": GOALS,
        "reference_regions": REFERENCE_REGIONS,
        **evaluate(args.seed, args.phones, args.clean),
    }
    print_summary(out)
    path = args.json or BENCH / "results" / (
        "pii_phone_eval.json" if args.seed == 1 else f"pii_phone_eval-seed{args.seed}.json"
    )
    benchutil.write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
