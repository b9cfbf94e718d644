"""``pii``: finds personal data and secrets in ``text`` and replaces them; nothing else changes.

Every candidate a pattern finds is confirmed before it is replaced ("validation beats
pattern-matching"), so version strings, years, ISBNs and order numbers stay:

* ``email``: RFC-ish local part and a host whose last label is a real public suffix
  (tldextract's offline list), also the obfuscated ``name [at] host [dot] com`` / ``(at)`` forms.
* ``ip``: IPv4/IPv6 parsed by ``ipaddress``; only public (``is_global``) addresses unless
  ``private_ip: true``; an IPv4 preceded by ``v``/``version`` is a version string and stays.
* ``phone``: digit runs with phone punctuation, parsed and validated by ``phonenumbers`` (Google's
  libphonenumber metadata): international ``+``/``00`` forms for every country, national forms for
  the ``phone_regions`` (default: 24 countries; the row's ``language`` adds its main country).
  Year ranges and numbers of fewer than 7 digits never reach the parser.
* ``credit_card``: 13-19 digits in groups of 4 (Amex 4-6-5) with one kind of separator, a known
  card prefix and a valid Luhn checksum (``python-stdnum``).
* ``iban``: country code, check digits and BBAN validated by ``stdnum.iban`` (length per country,
  mod-97 checksum).
* ``us_ssn``: ``AAA-GG-SSSS`` (dashes or spaces) in the valid ranges (``stdnum.us.ssn``: no 000,
  666 or 9xx area, no 00 group, no 0000 serial, no advertised numbers).
* ``secret``: API keys and tokens with well-known prefixes and exact formats (AWS, GitHub, GitLab,
  Slack, Stripe, Google, OpenAI, Anthropic, Hugging Face, SendGrid, Twilio, npm, PyPI) and PEM
  private key blocks.

Replacement (``mode``): ``placeholder`` (``<EMAIL>``, ``<PHONE>``, ...; each overridable) or ``fake``:
a value of the same shape derived from a keyed hash of the original (the same original gets the
same fake everywhere, so the text stays natural and co-references survive; not reversible without
the key, which is the stage's ``seed``).  Text outside the replaced spans is untouched.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.registry import register_stage
from pipeline.stage import Params, Resources, Stage

PII_TYPES = ("email", "ip", "phone", "credit_card", "iban", "us_ssn", "secret")
# When two findings overlap, the earlier type in this order wins (a key block contains digits
# that look like phones; an e-mail's host may be an IP).
PRIORITY = {t: i for i, t in enumerate(("secret", "email", "iban", "credit_card", "us_ssn", "ip", "phone"))}
PLACEHOLDERS = {
    "email": "<EMAIL>",
    "ip": "<IP>",
    "phone": "<PHONE>",
    "credit_card": "<CREDIT_CARD>",
    "iban": "<IBAN>",
    "us_ssn": "<US_SSN>",
    "secret": "<SECRET>",
}
DEFAULT_PHONE_REGIONS = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PL", "SE",
    "NO", "DK", "FI", "PT", "BR", "MX", "IN", "JP", "AU", "CA", "IE", "CZ",
)  # fmt: skip
# the main country of a language, to read national phone formats of rows in that language
LANGUAGE_REGION = {
    "en": "US", "de": "DE", "fr": "FR", "es": "ES", "it": "IT", "nl": "NL", "pl": "PL", "pt": "BR",
    "sv": "SE", "nb": "NO", "da": "DK", "fi": "FI", "cs": "CZ", "ja": "JP", "ru": "RU", "uk": "UA",
    "tr": "TR", "el": "GR", "hu": "HU", "ro": "RO", "ko": "KR", "zh": "CN", "hi": "IN", "ar": "SA",
}  # fmt: skip

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9_.+-])[A-Za-z0-9_.+-]{1,64}"
    r"(?:@|\s?[\[({]\s?at\s?[\])}]\s?)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.|\s?[\[({]\s?dot\s?[\])}]\s?))+"
    r"[A-Za-z]{2,24}(?![A-Za-z0-9_-])",
    re.IGNORECASE,
)
_DOT = re.compile(r"\s?[\[({]\s?dot\s?[\])}]\s?", re.IGNORECASE)
_AT = re.compile(r"\s?[\[({]\s?at\s?[\])}]\s?", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![A-Za-z0-9_.])(?:\d{1,3}\.){3}\d{1,3}(?![A-Za-z0-9_]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?(?![\w:])")
_VERSION_BEFORE = re.compile(r"\b(?:v|version\s?|ver\.?\s?)$", re.IGNORECASE)
# digits with phone punctuation, optionally +/00-prefixed, 7-20 digits in all
_PHONE = re.compile(r"(?<![A-Za-z0-9_+])(?:\+|00)?\(?\d[\d\s().\-/]{5,22}\d(?![A-Za-z0-9_])")
# shapes that are never phone numbers although a parser may accept their digits somewhere
_NOT_PHONE = re.compile(
    r"(?:1\d{3}|20\d\d)\s?[-/–]\s?(?:1\d{3}|20\d\d)"  # year range
    r"|\d{4}[-./]\d{1,2}[-./]\d{1,3}\b|\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"  # dates, DOI-like
    r"|(?:\d{1,3}\.){3}\d{1,3}"  # IPv4 (public ones are taken as IPs before)
    r"|\d{3}-\d{2}-\d{4}"  # US SSN shape
)
_CARD = re.compile(r"(?<![\d-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -]?)\d{6}\2\d{4,5})(?![\d-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){10,30}(?![A-Za-z0-9])")
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_SECRETS = re.compile(
    "|".join(
        (
            r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])",  # AWS access key id
            r"gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])",  # GitHub tokens
            r"github_pat_[A-Za-z0-9_]{82}(?![A-Za-z0-9_])",
            r"glpat-[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-])",  # GitLab
            r"xox[abposr]-[A-Za-z0-9-]{10,72}(?![A-Za-z0-9-])",  # Slack
            r"(?:sk|rk)_live_[A-Za-z0-9]{20,99}(?![A-Za-z0-9])",  # Stripe
            r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",  # Google API key
            r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}",  # OpenAI
            r"sk-proj-[A-Za-z0-9_-]{40,200}(?![A-Za-z0-9_-])",
            r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,120}(?![A-Za-z0-9_-])",  # Anthropic
            r"hf_[A-Za-z]{34}(?![A-Za-z])",  # Hugging Face
            r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])",  # SendGrid
            r"SK[0-9a-f]{32}(?![0-9a-f])",  # Twilio API key
            r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])",  # npm
            r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",  # PyPI
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{16,20000}?"
            r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        )
    )
)
_SECRET_HINTS = (
    "AKIA", "ASIA", "gh", "github_pat_", "glpat-", "xox", "_live_", "AIza", "sk-", "hf_", "SG.",
    "SK", "npm_", "pypi-", "-----BEGIN",
)  # fmt: skip
# the fixed head of each token format, kept by fake values (the rest is random)
_SECRET_PREFIX = re.compile(
    r"AKIA|ASIA|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|[sr]k_live_|AIza|sk-ant-(?:api|admin)\d\d-"
    r"|sk-(?:proj-|svcacct-)?|hf_|SG\.|SK|npm_|pypi-"
)
_IPV6_HINT = re.compile(r"::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}")
# Issuer prefixes (IIN ranges) of the card networks, with their lengths
_CARD_BRANDS = (
    (re.compile(r"4"), (13, 16, 19)),  # Visa
    (re.compile(r"5[1-5]|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)"), (16,)),  # Mastercard
    (re.compile(r"3[47]"), (15,)),  # Amex
    (re.compile(r"6(?:011|5|4[4-9]|22)"), (16, 19)),  # Discover
    (re.compile(r"35(?:2[89]|[3-8]\d)"), (16, 19)),  # JCB
    (re.compile(r"3(?:0[0-5]|[689])"), (14, 16, 19)),  # Diners
    (re.compile(r"62"), (16, 17, 18, 19)),  # UnionPay
    (re.compile(r"(?:50|5[6-9]|6)"), (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
)


@cache
def _public_suffixes() -> frozenset[str]:
    """Top-level labels of the public suffix list bundled with tldextract (no network)."""
    from stages.url_filter import tld_extractor

    return frozenset(s.rsplit(".", 1)[-1].lower() for s in tld_extractor().tlds)


def _valid_email(match: str) -> bool:
    host = _AT.split(match, maxsplit=1)[-1] if "@" not in match else match.rsplit("@", 1)[1]
    tld = _DOT.split(host)[-1].rsplit(".", 1)[-1].lower()
    return tld in _public_suffixes()


def _valid_ip(candidate: str, private: bool) -> bool:
    try:
        ip = ipaddress.ip_address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    return private or ip.is_global


def _valid_card(candidate: str) -> bool:
    from stdnum import luhn

    digits = re.sub(r"\D", "", candidate)
    if not 12 <= len(digits) <= 19 or not luhn.is_valid(digits):
        return False
    return any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_BRANDS)


def _valid_iban(candidate: str) -> bool:
    from stdnum import iban

    return iban.is_valid(candidate)


def _valid_ssn(candidate: str) -> bool:
    from stdnum.us import ssn

    return ssn.is_valid(candidate.replace(" ", "-"))


# formatted quantities (6 500 000, 2.462.000, 1,299,000): groups of exactly three after the first
_QUANTITY = re.compile(r"\d{1,3}(?:([ .,])\d{3})(?:\1\d{3})*")


@lru_cache(maxsize=65536)
def _valid_phone(candidate: str, regions: tuple[str, ...]) -> bool:
    """Whether libphonenumber accepts ``candidate`` as a valid number: international forms for any
    country, national forms for one of ``regions``.  Memoised: web pages repeat their numbers."""
    import phonenumbers

    if candidate.startswith(("+", "00")):
        try:
            number = phonenumbers.parse(
                "+" + candidate[2:] if candidate.startswith("00") else candidate, None
            )
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_valid_number(number)
    # National forms: valid for the region *and* grouped as that region writes its numbers
    # (STRICT_GROUPING), so table cells and counts that happen to be valid digit strings stay.
    strict = phonenumbers.Leniency.STRICT_GROUPING
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(candidate, region, leniency=strict):
            if match.start == 0 and match.end == len(candidate):
                return True
    return False


def _phone_spans(text: str, regions: tuple[str, ...]) -> list[tuple[int, int]]:
    spans = []
    for m in _PHONE.finditer(text):
        candidate = m.group().rstrip(" ./-(")
        if candidate.count("(") != candidate.count(")"):
            candidate = candidate.lstrip("(")
            if candidate.count("(") != candidate.count(")"):
                continue
        digits = sum(ch.isdigit() for ch in candidate)
        international = candidate.startswith(("+", "00"))
        # A national number has an area code: 8+ digits (7-digit local numbers are ids, years and
        # postcodes on web pages far more often).  A bare digit run is an id, an order or an
        # account number unless trunk-prefixed (0...).
        if not (7 if international else 8) <= digits <= 15:
            continue
        if not international and candidate.isdigit() and not candidate.startswith("0"):
            continue
        if _NOT_PHONE.search(candidate) or _QUANTITY.fullmatch(candidate):
            continue
        start = m.start() + m.group().index(candidate)
        if start and text[start - 1] in "#№":
            continue
        if _valid_phone(candidate, regions):
            spans.append((start, start + len(candidate)))
    return spans


def find_pii(
    text: str,
    types: set[str] | frozenset[str] | None = None,
    regions: Sequence[str] | None = None,
    private_ip: bool = False,
) -> list[tuple[int, int, str]]:
    """Validated PII in ``text``: sorted, non-overlapping ``(start, end, type)`` spans."""
    types = set(PII_TYPES) if types is None else set(types)
    regions = DEFAULT_PHONE_REGIONS if regions is None else regions
    found: list[tuple[int, int, str]] = []

    def scan(kind: str, pattern: re.Pattern, valid) -> None:
        if kind in types:
            found.extend((m.start(), m.end(), kind) for m in pattern.finditer(text) if valid(m))

    # Cheap substring tests first: each pattern costs ~0.3 s per 16 MB of text when it runs.
    if any(hint in text for hint in _SECRET_HINTS):
        scan("secret", _SECRETS, lambda m: True)  # the formats are exact; see the module docstring
    if "@" in text or _AT.search(text):
        scan("email", _EMAIL, lambda m: _valid_email(m.group()))
    scan("iban", _IBAN, lambda m: _valid_iban(m.group()))
    scan("credit_card", _CARD, lambda m: _valid_card(m.group()))
    scan("us_ssn", _SSN, lambda m: _valid_ssn(m.group()))
    scan(
        "ip",
        _IPV4,
        lambda m: (
            not _VERSION_BEFORE.search(text, max(0, m.start() - 8), m.start())
            and _valid_ip(m.group(), private_ip)
        ),
    )
    if _IPV6_HINT.search(text):
        scan("ip", _IPV6, lambda m: m.group().count(":") >= 2 and _valid_ip(m.group(), private_ip))
    if "phone" in types and any(ch.isdigit() for ch in text):
        found.extend((a, b, "phone") for a, b in _phone_spans(text, tuple(regions)))
    # resolve overlaps: by priority, then longest
    found.sort(key=lambda s: (PRIORITY[s[2]], -(s[1] - s[0]), s[0]))
    taken: list[tuple[int, int, str]] = []
    for span in found:
        if all(span[1] <= a or span[0] >= b for a, b, _ in taken):
            taken.append(span)
    return sorted(taken)


def fake_value(kind: str, original: str, key: bytes) -> str:
    """A value shaped like ``original`` from a keyed hash of it: deterministic, not reversible."""
    digest = hashlib.blake2b(original.encode("utf-8", "surrogatepass"), key=key, digest_size=32).digest()
    stream = iter(digest * 8)

    def digit() -> str:
        return str(next(stream) % 10)

    if kind == "email":
        return f"user{digest.hex()[:8]}@example.com"
    if kind == "ip":
        if ":" in original:
            return "2001:db8:" + ":".join(digest[i : i + 2].hex() for i in range(0, 12, 2))
        return "192.0.2." + str(1 + digest[0] % 254)  # RFC 5737 documentation range
    if kind == "secret":
        if original.startswith("-----BEGIN"):
            return "-----BEGIN PRIVATE KEY-----\n<redacted>\n-----END PRIVATE KEY-----"
        prefix = _SECRET_PREFIX.match(original)
        head = prefix.group() if prefix else ""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return head + "".join(
            alphabet[next(stream) % len(alphabet)] for _ in range(len(original) - len(head))
        )
    if kind == "us_ssn":  # area 9xx is never issued: a fake can never be someone's number
        return (
            "9"
            + digit()
            + digit()
            + original[3]
            + digit()
            + digit()
            + original[6]
            + "".join(digit() for _ in range(4))
        )
    # phone, card, IBAN: same layout, digits replaced (letters of an IBAN kept)
    return "".join(digit() if ch.isdigit() else ch for ch in original)


def scrub(
    text: str,
    spans: Sequence[tuple[int, int, str]],
    mode: str = "placeholder",
    placeholders: dict[str, str] | None = None,
    key: bytes = b"winnow-pii",
) -> str:
    """``text`` with every span replaced; everything between spans is copied as is."""
    marks = {**PLACEHOLDERS, **(placeholders or {})}
    out, pos = [], 0
    for start, end, kind in spans:
        out.append(text[pos:start])
        out.append(marks[kind] if mode == "placeholder" else fake_value(kind, text[start:end], key))
        pos = end
    out.append(text[pos:])
    return "".join(out)


class PIIParams(Params):
    mode: Literal["placeholder", "fake"] = Field(
        "placeholder", description="typed placeholders, or a consistent fake value per original"
    )
    email: bool = True
    ip: bool = True
    phone: bool = True
    credit_card: bool = True
    iban: bool = True
    us_ssn: bool = True
    secret: bool = True
    private_ip: bool = Field(False, description="also replace private, loopback and documentation IPs")
    phone_regions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PHONE_REGIONS),
        description="countries whose national phone formats are recognised (ISO 3166 alpha-2)",
    )
    placeholders: dict[Literal["email", "ip", "phone", "credit_card", "iban", "us_ssn", "secret"], str] = (
        Field(default_factory=dict, description="replacement text per type in placeholder mode")
    )
    seed: str = Field("winnow-pii", description="key of the fake values (same key, same fakes)")


# how much context the before/after samples show around the first replaced span
SAMPLE_CONTEXT = 80


@register_stage
class PII(Stage):
    name = "pii"
    Params = PIIParams
    resources = Resources(cpus=1, memory_mb=1024)

    def setup(self) -> None:
        p = self.params
        self._types = frozenset(t for t in PII_TYPES if getattr(p, t))
        self._key = p.seed.encode()
        self._sampled: dict[str, int] = {}
        if "phone" in self._types:
            import phonenumbers

            unknown = [r for r in p.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
            if unknown:
                raise ValueError(f"pii: unknown phone_regions {unknown} (ISO 3166 alpha-2 codes)")
        if "email" in self._types:
            _public_suffixes()

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[str | None]]:
        names = batch.schema.names
        if "text" not in names:
            raise ValueError("stage 'pii' needs a 'text' column: put it after 'extract'")
        p = self.params
        texts = batch.column("text").to_pylist()
        languages = batch.column("language").to_pylist() if "language" in names else [None] * len(texts)
        ids = batch.column("id").to_pylist() if "id" in names else [None] * len(texts)
        out, changed = [], 0
        for text, language, doc_id in zip(texts, languages, ids):
            if not text:
                out.append(text)
                continue
            regions = p.phone_regions
            extra_region = LANGUAGE_REGION.get(language or "")
            if extra_region and extra_region not in regions:
                regions = [extra_region, *regions]
            spans = find_pii(text, self._types, regions, p.private_ip)
            if not spans:
                out.append(text)
                continue
            new = scrub(text, spans, p.mode, p.placeholders, self._key)
            out.append(new)
            changed += 1
            for _, _, kind in spans:
                self.stats.count(kind, group="replaced")
            self._sample(doc_id, text, new, spans)
        if changed:
            self.stats.count("docs_changed", changed)
            batch = batch.set_column(names.index("text"), "text", pa.array(out, pa.string()))
        return batch, [None] * len(texts)

    def _sample(self, doc_id: str | None, before: str, after: str, spans: list[tuple[int, int, str]]) -> None:
        """Keep a before/after snippet around the first span of each type (bounded per type)."""
        limit = self.sample_limit
        for kind in dict.fromkeys(k for _, _, k in spans):
            if self._sampled.get(kind, 0) >= limit:
                continue
            self._sampled[kind] = self._sampled.get(kind, 0) + 1
            start, end, _ = next(s for s in spans if s[2] == kind)
            p = self.params
            # where that span landed in the new text: earlier spans changed the lengths before it
            new_start = len(
                scrub(before[:start], [s for s in spans if s[1] <= start], p.mode, p.placeholders, self._key)
            )
            new_end = new_start + len(
                scrub(before[start:end], [(0, end - start, kind)], p.mode, p.placeholders, self._key)
            )
            lo = max(0, start - SAMPLE_CONTEXT)
            self.changed_samples.append(
                {
                    "id": doc_id,
                    "reason": f"changed:{kind}",
                    "before": before[lo : end + SAMPLE_CONTEXT],
                    "after": after[max(0, new_start - (start - lo)) : new_end + SAMPLE_CONTEXT],
                    "text_chars": len(before),
                }
            )
