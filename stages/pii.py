"""``pii``: finds personal data and secrets in ``text`` and replaces them; nothing else changes.

Every candidate a pattern finds is confirmed before it is replaced ("validation beats
pattern-matching"), so version strings, years, ISBNs and order numbers stay:

* ``email``: RFC-ish local part and a host whose last label is a real top-level domain (the
  public suffix list bundled with tldextract, read offline), also the obfuscated
  ``name [at] host [dot] com`` / ``(at)`` forms; not a Message-ID (``<20030112190404.GE29873@host>``).
* ``ip``: IPv4/IPv6 parsed by ``ipaddress``.  Public addresses only unless ``private_ip: true``
  (then also private, loopback, link-local and documentation ones); an IPv6 must be global
  unicast (``2000::/3``), or loopback/link-local/ULA with ``private_ip``, so Python slices such
  as ``a[::2]`` are never addresses.  A dotted quad is a version after ``v``/``version``, and
  also after a product's name with all octets < 32 (``[GCC 2.7.2.2]``, ``zlib 1.2.0.1``,
  ``Firefox/2.0.0.11``); it is a section number opening a line and followed by ``". "``
  (``3.3.2.1. Known issues``) or after ``section``/``chapter``/``§``/``#section-`` with parts
  < 100 (``see Section 9.2.1.4``).  An address followed by ``/N`` with its host bits zero is a
  network (``2002::/16``), not a machine; ``a.b.c.d.in-addr.arpa`` is read reversed.
* ``phone``: digit groups with phone punctuation, parsed and validated by ``phonenumbers`` (Google's
  libphonenumber metadata): international ``+``/``00`` forms for every country, national forms for
  the ``phone_regions`` (default: 24 countries; the row's ``language`` adds its main country),
  which must also be grouped as that country writes them (``STRICT_GROUPING``; ``EXACT_GROUPING``
  where numbers have no trunk prefix, as in DK, NO, ES, PL: there only the layout tells a number
  from a table cell).  Year ranges, dates, decimals, dotted quads, ISBNs/ISSNs, formatted counts,
  page ranges and national numbers of fewer than 8 digits never reach the parser; a number never
  starts right after a letter, ``-``, ``/``, ``<digit>.`` (a fraction), ``N x `` (a dimension) or
  a string prefix (``CVE-2018-7536``, UUIDs, ``b'0123456789'``), nor ends before ``-<letter>``
  (``03798958-b27f-...``, a UUID's first group).  An extension is part of its number
  (``555-201-4477x318``, ``+1 212 555 0142 ext. 7``); ``011`` and ``001`` are exit codes too.  Right
  after a cue word (``Call us at``, ``Tel.:``, ``Fax``, ``Telefon``, ``Tél.``, ``Llámenos al``,
  ``電話`` ... in about a dozen languages, as Presidio's context words), a bare digit run
  (``Phone: 6175550199``) and a number libphonenumber calls possible but not valid (an unallocated
  range, laid out as its country writes such numbers) are phone numbers too.
* ``credit_card``: 12-19 digits, compact or in groups of 4 (Amex 4-6-5, Diners 4-6-4, 19 digits
  4-4-4-4-3) with one kind of separator, a known card prefix (IIN range) and length, and a valid
  Luhn checksum (``python-stdnum``); not inside a longer token or a URL path, nor the fraction
  digits of a decimal (``827.5950000000001``).
* ``iban``: country code, check digits and BBAN validated by ``stdnum.iban`` (length per country,
  mod-97 checksum); a grouped IBAN followed by another token (``BIC``, ``EUR``, a year) is retried
  without it.
* ``us_ssn``: ``AAA-GG-SSSS`` (dashes or spaces) in the valid ranges (``stdnum.us.ssn``: no 000,
  666 or 9xx area, no 00 group, no 0000 serial, no advertised numbers), not right after a country
  code (``+81 893-85-6837`` is a phone number).
* ``secret``: API keys and tokens with well-known prefixes and exact formats (AWS, GitHub, GitLab,
  Slack, Stripe, Google, OpenAI, Anthropic, Hugging Face, SendGrid, Twilio, npm, PyPI), not inside
  a longer token, and PEM private key blocks (with a base64 body: ``... (key here) ...`` in
  documentation stays).

Replacement (``mode``): ``placeholder`` (``<EMAIL>``, ``<PHONE>``, ...; each overridable) or ``fake``:
a value of the same shape derived from a keyed hash of the original (the same original gets the
same fake everywhere, so the text stays natural and co-references survive; not reversible without
the key, which is the stage's ``seed``).  Text outside the replaced spans is untouched.

Speed (``bench/pii_eval.py``): a regex that starts with a character class is tried at every
position of the text (~0.06-0.1 s per 15.6 M characters each, ~0.3 s with a leading lookbehind or
an alternation), one that starts with a literal is a fast substring search (~0.006 s).  So the text
is scanned once for digit runs (``_NUMERIC_RUN``: cards, SSNs, IPv4s, phones and IBANs are all
looked for only inside or just before those), once per literal (``@``, ``::``-like colons, the
secrets' prefixes), and the precise patterns run on those few windows only.  libphonenumber is
called only for candidates whose digit count fits a region's number lengths (and memoised).
On the 2,256 dev-web texts: 3,766 docs/s per core cold, 5,755 warm (datatrove's two-type
``PIIFormatter``: 2,274).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from functools import cache, lru_cache
from importlib import metadata
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
Span = tuple[int, int, str]

# --- e-mail ---------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9_.+-])[A-Za-z0-9_.+-]{1,64}"
    r"(?:@|\s?[\[({]\s?at\s?[\])}]\s?)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.|\s?[\[({]\s?dot\s?[\])}]\s?))+"
    r"[A-Za-z]{2,24}(?![A-Za-z0-9_-])",
    re.IGNORECASE,
)
_DOT = re.compile(r"\s?[\[({]\s?dot\s?[\])}]\s?", re.IGNORECASE)
_AT = re.compile(r"\s?[\[({]\s?at\s?[\])}]\s?", re.IGNORECASE)
_AT_HINT = re.compile(r"[\[({]\s?at\s?[\])}]", re.IGNORECASE)  # no leading \s?: 10x faster scan
# an e-mail around an '@' lies within this window: local part <= 64, host <= 253 (+ "[dot]"s)
_EMAIL_BEFORE, _EMAIL_AFTER = 66, 400
# '<20030112190404.GE29873@epoch.metaslash.com>': a Message-ID (a timestamp, a dot, a random part),
# not a mailbox; no mailbox name starts with 12 digits and a dot
_MESSAGE_ID_LOCAL = re.compile(r"\d{12,}[.$]")

# --- IP addresses ---------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![A-Za-z0-9_.])(?:\d{1,3}\.){3}\d{1,3}(?![A-Za-z0-9_]|\.\d)")
_IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%[A-Za-z0-9_]+)?(?![A-Za-z0-9_:])"
)
_PREFIX_LENGTH = re.compile(r"/(\d{1,3})(?!\d)")
_REVERSE_DNS = ".in-addr.arpa"  # '1.0.0.127.in-addr.arpa' names 127.0.0.1 (octets reversed)
_IPV6_COLONS = re.compile(r":[0-9A-Fa-f]{0,4}:")  # every IPv6 address has one; a literal-first scan
_HEX_OR_COLON = frozenset("0123456789abcdefABCDEF:")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_ULA = ipaddress.ip_network("fc00::/7")
_VERSION_BEFORE = re.compile(r"(?<![A-Za-z])(?:v|version\s?|ver\.?\s?)[=:]?\s?$", re.IGNORECASE)
# A dotted quad of one- and two-digit parts that a document refers to as a section ('see Section
# 9.2.1.4', 'section 6.4.4.2 of the C99 standard', 'RFC 7231#section-7.1.1.1', '§ 4.1.2.6') numbers
# that section; a part of three digits is an address's ('the section 96.63.241.182 above').
_SECTION_BEFORE = re.compile(
    r"(?:(?<![A-Za-z])(?:sections?|sect?\.|chapters?|ch\.|clauses?|appendix|annex|paragraphs?|para\.)"
    r"[ \u00a0]|#section-|§[ \u00a0]?)$",
    re.IGNORECASE,
)
# A dotted quad whose octets are all < 32 right after a product's name and one space or '/' ('[GCC
# 2.7.2.2]', '(zlib 1.2.0.1)', 'Firefox/2.0.0.11') is that product's version: version parts are
# small, while only ~0.02 % of random public addresses have four octets < 32 (mostly well-known
# resolvers such as 1.1.1.1, which identify nobody).  A name is a word before '/', one with a
# capital or digit after its first letter (GCC, OpenSSL, X11), or a product usually written in
# lower case; ordinary words ('contact 8.8.8.8'), words that introduce an address in any case
# ('IP', 'DNS', 'VPN', 'FROM') and a label's ':' ('Host: 1.2.3.4') keep it an address.
_WORD_BEFORE = re.compile(r"(?<![A-Za-z0-9_.+-])([A-Za-z][A-Za-z0-9_.+-]{0,30})(?:[ \u00a0]|(?<!/)/)$")
_PRODUCTS = frozenset((
    "zlib", "gcc", "glibc", "libc", "openssl", "libssl", "bash", "perl", "python", "java", "jdk", "jre",
    "php", "ruby", "node", "nodejs", "mysql", "mariadb", "sqlite", "postgresql", "nginx", "apache",
    "httpd", "curl", "wget", "git", "firefox", "chrome", "chromium", "safari", "opera", "thunderbird",
    "windows", "linux", "kernel", "android", "build", "release", "rev", "revision", "update", "patch",
    "firmware", "bios", "driver", "sdk", "api", "libpng", "libxml2", "busybox", "samba", "squid",
))  # fmt: skip
_IP_WORDS = frozenset((
    "ip", "ips", "ipv4", "ip-address", "ip-adresse", "address", "addresses", "addr", "adresse",
    "adresa", "indirizzo", "dirección", "host", "hosts", "hostname", "server", "servers", "dns",
    "nameserver", "resolver", "gateway", "router", "proxy", "peer", "node", "client", "machine", "box",
    "interface", "nat", "vpn", "ping", "traceroute", "telnet", "ssh", "connect", "connecting",
    "connected", "connection", "from", "to", "at", "on", "via", "by", "through", "in", "into", "of",
    "for", "with", "and", "or", "is", "was", "are", "be", "as", "like", "use", "using", "set", "sets",
    "e.g.", "eg", "i.e.", "ie", "z.b.", "zb", "bzw.", "von", "an", "auf", "über", "unter", "nach",
    "de", "la", "le", "à", "vers", "sur", "por", "para",
))  # fmt: skip
_SMALL_OCTET = 32

# --- digit runs: cards, SSNs, IPv4s, phones (and IBANs just before/around them) ----------------
_NUMERIC_RUN = re.compile(r"\d[\d \u00a0.()/-]{5,}\d")
_DIGITS = re.compile(r"\d+")
# digits right after '<digit>.' are a fraction ('827.5950000000001'), never the start of a number
_CARD = re.compile(
    r"(?<![A-Za-z0-9_/-])(?<!\d\.)"
    r"(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?|\d{4}([ -]?)\d{6}\2\d{4,5})(?![A-Za-z0-9_-])"
)
# not followed by another group with the same separator: '011 39 0922 159970' is a phone number
_SSN = re.compile(r"(?<![\d-])(?<!\d\.)\d{3}([- ])\d{2}\1\d{4}(?![\d-]|\1\d)")
_COUNTRY_CODE_BEFORE = re.compile(r"(?:\+|(?<!\d)00)\d{1,3}[ .-]?$")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){10,30}(?![A-Za-z0-9])")
_IBAN_LOOKBACK, _IBAN_LOOKAHEAD = 40, 40  # an IBAN begins and ends within 40 characters of a digit run
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

# --- phones ---------------------------------------------------------------------------------------
# what may stand between two digit groups of one phone number (and ' / ', once, right after an
# area code: see _phone_spans)
_PHONE_INNER_SEP = re.compile(r"[ \u00a0]|[-./]|[ \u00a0]-[ \u00a0]|[ \u00a0]?\(|\)[ \u00a0.-]?")
_AREA_CODE_SLASH = re.compile(r"[ \u00a0]?/[ \u00a0]")  # '030 / 1234567', Belgian '03/ 776 51 72'
_AREA_CODE_DIGITS = 7  # "0049 (0)40 / 49 07 11 06": at most 4 + 1 + 2 digits before the slash
# national candidates that hold a date with a four-digit year or a year range, or that *are* a
# date, a dotted quad, an SSN or a decimal, are not phone numbers although a parser may accept
# their digits ('01.42.68.53.00' is a French number, '02.02.2022 10' a date and an hour)
_NOT_PHONE_INSIDE = re.compile(
    r"(?:1[6-9]|20)\d\d\s?[-/]\s?(?:1[6-9]|20)\d\d"  # year range
    r"|\d{4}[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])(?!\d)"  # dates
    r"|\d{1,2}[-./]\d{1,2}[-./](?:1[6-9]|20)\d\d(?!\d)"
)
_NOT_PHONE = re.compile(
    r"\d{1,2}[-./]\d{1,2}[-./]\d{2}"  # date with a two-digit year
    r"|(?:\d{1,3}\.){3}\d{1,3}"  # dotted quad (public ones are taken as IPs before)
    r"|\d{3}-\d{2}-\d{4}"  # US SSN shape
    r"|\d+\.\d+"  # a decimal number (38.971823)
)
# formatted quantities (6 500 000, 2.462.000, 38 433 600): groups of exactly three after the first;
# 3-3-3 with spaces is how Poland, Portugal, Czechia and Spain write mobiles, so it goes on to the
# parser, whose grouping check rejects it where that is not a phone layout
_QUANTITY = re.compile(r"\d{1,3}(?:([ .,])\d{3})(?:\1\d{3})*")
_MOBILE_3_3_3 = re.compile(r"\d{3} \d{3} \d{3}")
_MOBILE_3_2_3 = re.compile(r"\d{3}[ \u00a0]\d{2}[ \u00a0]\d{3}")  # Norway, with spaces only
# '110 x 88 1905-06 21' (a picture's size, then its years): a number right after 'N x ' is a dimension
_DIMENSION_BEFORE = re.compile(r"\d[ \u00a0]?[x×][ \u00a0]?$")
# '210-212 233': pages 210-212, then 233; not the first two groups of '552-554-7513'
_RANGE = re.compile(r"(?<!\d)(?<!\d-)(\d{2,4})-(\d{2,4})(?!-?\d)")
_BRACKETED_COUNTRY_CODE = re.compile(r"\(\d{1,3}\) ")
_ISBN_BEFORE = re.compile(r"IS[BS]N(?:-1[03])?:?\s*$", re.IGNORECASE)  # ISBN, ISSN
_ISBN_GROUPS = re.compile(r"\d+(?:([- ])\d+){2,3}\1\d")
# An extension belongs to the number it follows ('555-201-4477x318', '+1 212 555 0142 ext. 7'):
# replacing the number and leaving 'x318' would keep part of it.  'x' must touch its digits
# ('110 x 88' is a size); a German '-122' (Durchwahl) is left alone, it reads as a range too often.
_EXTENSION = re.compile(
    r"(?:[ \u00a0]?x|[ \u00a0]?,?[ \u00a0]?(?:ext|extn|extension)\.?[ \u00a0]?)\d{1,6}(?![0-9A-Za-z_])",
    re.IGNORECASE,
)
# Cue words (Presidio's "context words"): a number right after one of them, with at most four
# short connecting words between ('Call us at', 'Rufen Sie uns an unter', 'Appelez-nous au'), is
# a phone number even where its shape alone is not conclusive: a bare digit run ('Phone:
# 6175550199', an id elsewhere) or a number libphonenumber finds possible but not valid (an
# unallocated range).  Only looked at for candidates that failed the strict path, and by splitting
# the few words before them (a regex anchored at the number cost ~20 µs a candidate, 4x this).
# Words that also name other things stay out ('text', 'number', 'line'); a word between cue and
# number that is not a connector ('Call ID 4821937265', 'Contact order ...') ends the cue.
_PHONE_CUES = frozenset((
    # en
    "phone", "phones", "telephone", "tel", "tele", "ph", "call", "calling", "dial", "ring", "fax",
    "mobile", "mob", "cell", "cellphone", "contact", "whatsapp", "sms", "hotline", "helpline",
    # de, fr
    "telefon", "telefonnummer", "rufnummer", "fon", "handy", "mobil", "mobiltelefon", "telefax",
    "anrufen", "rufen", "erreichbar", "téléphone", "tél", "portable", "appelez", "appeler", "joindre",
    # es, it, nl
    "teléfono", "telefono", "tfno", "tlf", "móvil", "movil", "celular", "llame", "llámenos",
    "llamenos", "llamar", "cellulare", "chiamare", "chiamaci", "chiama", "telefoon", "bel", "bellen",
    "mobiel",
    # pt, pl, nordic, fi, ru
    "telefone", "ligue", "ligar", "telemóvel", "telemovel", "zadzwoń", "zadzwon", "komórka", "komorka",
    "ringe", "puh", "puhelin", "gsm", "тел", "телефон", "звоните", "моб", "факс",
))  # fmt: skip
_PHONE_CONNECTORS = frozenset((
    "us", "me", "at", "on", "to", "now", "toll", "free", "no", "nr", "num", "is", "our", "au", "al",
    "a", "el", "la", "unter", "der", "sie", "uns", "an", "op", "ons", "para", "o", "per", "ci", "na",
    "på", "pod", "numer", "nummer", "numéro", "número", "numero", "nous", "kom",
))  # fmt: skip
_PHONE_CJK_CUES = ("電話", "电话", "手机", "携帯", "傳真", "传真", "連絡先", "전화", "연락처")
_CUE_SEPARATORS = " \t\n\r\u00a0:：.,/–—-"  # between the cue (or its last connector) and the number
_CUE_TOKEN = re.compile(r"\w+")  # words and digit runs ('Call 2 at 12345678': '2' ends the cue)
_CUE_WINDOW = 48  # characters before a number searched for a cue
_CUE_CONNECTORS_MAX = 4


def _cue_before(text: str, start: int) -> bool:
    """Whether a phone cue word ends right before ``text[start]`` (see ``_PHONE_CUES``)."""
    window = text[max(0, start - _CUE_WINDOW) : start].rstrip(_CUE_SEPARATORS)
    if not window or not window[-1].isalpha():
        return False
    if window.endswith(_PHONE_CJK_CUES):
        return True
    words = _CUE_TOKEN.findall(window.lower())
    for k in range(len(words) - 1, max(-1, len(words) - 2 - _CUE_CONNECTORS_MAX), -1):
        if words[k] in _PHONE_CUES:
            return True
        if words[k] not in _PHONE_CONNECTORS:
            return False
    return False


# --- secrets: each pattern starts with a literal, so `re` finds candidates by a substring search
_SECRETS = tuple(
    re.compile(p)
    for p in (
        r"A(?:(?:KIA|SIA)[0-9A-Z]{16}(?![0-9A-Z])"  # AWS access key id
        r"|Iza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-]))",  # Google API key
        r"g(?:h[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9])"  # GitHub tokens
        r"|ithub_pat_[A-Za-z0-9_]{82}(?![A-Za-z0-9_])"
        r"|lpat-[A-Za-z0-9_-]{20}(?![A-Za-z0-9_-]))",  # GitLab
        r"xox[abposr]-[A-Za-z0-9-]{10,120}(?![A-Za-z0-9-])",  # Slack (user tokens reach ~76)
        r"sk(?:_live_[A-Za-z0-9]{20,99}(?![A-Za-z0-9])"  # Stripe secret key
        r"|-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"  # OpenAI
        r"|-proj-[A-Za-z0-9_-]{40,200}(?![A-Za-z0-9_-])"
        r"|-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,120}(?![A-Za-z0-9_-]))",  # Anthropic
        r"rk_live_[A-Za-z0-9]{20,99}(?![A-Za-z0-9])",  # Stripe restricted key
        r"hf_[A-Za-z]{34}(?![A-Za-z])",  # Hugging Face
        r"S(?:G\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"  # SendGrid
        r"|K[0-9a-f]{32}(?![0-9a-f]))",  # Twilio API key
        r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])",  # npm
        r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",  # PyPI
        # the body stops at the next '-----': a BEGIN without an END costs a short scan, not 20,000
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[^-]|-(?!----)){16,20000}?"
        r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    )
)
# a key block whose body has no base64 line is documentation ('... (private key in base64) ...')
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]{40,}")
# the fixed head of each token format, kept by fake values (the rest is random)
_SECRET_PREFIX = re.compile(
    r"AKIA|ASIA|gh[pousr]_|github_pat_|glpat-|xox[abposr]-|[sr]k_live_|AIza|sk-ant-(?:api|admin)\d\d-"
    r"|sk-(?:proj-|svcacct-)?|hf_|SG\.|SK|npm_|pypi-"
)


def _ascii_word_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


# --------------------------------------------------------------------------------------------------
# validators


@cache
def _public_suffixes() -> frozenset[str]:
    """Top-level labels of the public suffix list that tldextract bundles, read from its file (no
    network, and ~5 ms instead of ~80 ms for importing tldextract and building its trie)."""
    path = metadata.distribution("tldextract").locate_file("tldextract/.tld_set_snapshot")
    rules = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(r.rsplit(".", 1)[-1].lower() for r in rules if r and not r.startswith("//"))


def _valid_email(match: str) -> bool:
    host = _AT.split(match, maxsplit=1)[-1] if "@" not in match else match.rsplit("@", 1)[1]
    tld = _DOT.split(host)[-1].rsplit(".", 1)[-1].lower()
    return tld in _public_suffixes()


def _valid_ip(candidate: str, private: bool) -> bool:
    try:
        ip = ipaddress.ip_address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 4:
        return private or ip.is_global
    # ::/8 (where 'a[::2]' and '1::3' land) is reserved, not an address anybody has
    if private:
        return ip in _GLOBAL_UNICAST or ip in _ULA or ip.is_loopback or ip.is_link_local
    return ip in _GLOBAL_UNICAST and ip.is_global


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


@cache
def _region_info(region: str) -> tuple[frozenset[int] | None, str]:
    """A region's national number lengths (to skip regions a candidate cannot belong to before
    parsing; None where the trunk prefix is a pattern, as in JP, GB, BR, AU, KR, CN: always parsed)
    and its trunk prefix ('0', '1', '8', or '' in DK, NO, ES, PT, PL, CZ, IT, MX...)."""
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region)
    prefix = meta.national_prefix or ""
    if (meta.national_prefix_for_parsing or "") != prefix:
        return None, prefix
    return frozenset(meta.general_desc.possible_length), prefix


def _fits_region(digits: str, region: str) -> bool:
    possible, prefix = _region_info(region)
    if possible is None:
        return True
    n = len(digits)
    return n in possible or (bool(prefix) and digits.startswith(prefix) and n - len(prefix) in possible)


def _international_forms(candidate: str) -> tuple[str, ...]:
    """``candidate`` as ``+<country code>...`` for each way it may be dialled from abroad: '+' or
    '(+', the '00' exit code of most countries (Faker's and many US pages' '001-212-...' is '00' +
    country code 1, but '001' is itself an exit code in Asia: both readings are tried), the '011'
    of North America.  Empty for a national form."""
    if candidate.startswith(("+", "(+")):
        return (candidate,)
    if candidate.startswith("001"):
        return ("+" + candidate[2:], "+" + candidate[3:])
    if candidate.startswith("00"):
        return ("+" + candidate[2:],)
    if candidate.startswith("011"):
        return ("+" + candidate[3:],)
    return ()


def _accepts(number, possible: bool) -> bool:
    """Valid per libphonenumber or, with ``possible`` (after a cue word), of a possible length for
    its country (an unallocated range: ids rarely have an exact phone length *and* a cue word);
    a local-only length (a number without its area code) is not enough."""
    import phonenumbers

    if possible:
        reason = phonenumbers.is_possible_number_with_reason(number)
        return reason == phonenumbers.ValidationResult.IS_POSSIBLE
    return phonenumbers.is_valid_number(number)


@lru_cache(maxsize=65536)
def _valid_phone(candidate: str, regions: tuple[str, ...], possible: bool = False) -> bool:
    """Whether libphonenumber accepts ``candidate`` as a valid number: international forms for any
    country, national forms for one of ``regions``.  With ``possible`` (a cue word before it), a
    possible number (the right length, an unallocated range) is enough.  Memoised: web pages
    repeat their numbers."""
    import phonenumbers

    for plus in _international_forms(candidate):
        try:
            if _accepts(phonenumbers.parse(plus, None), possible):
                return True
        except phonenumbers.NumberParseException:
            pass
    if candidate.startswith(("+", "(+", "00")):
        return False  # international only; '011...' may also be national ('0117 496 0000', Bristol)
    digits = re.sub(r"\D", "", candidate)
    if _BRACKETED_COUNTRY_CODE.match(candidate) and _valid_phone("+" + digits, (), possible):
        return True  # '(351) 937 401 570'
    # National forms: valid for the region *and* grouped as that region writes its numbers, so
    # table cells and counts that happen to be valid digit strings stay.  Where numbers carry a
    # trunk prefix ('030 ...'), any grouping that keeps the region's groups whole will do
    # (STRICT_GROUPING: '0471 80 60 745'); where they carry none, nothing but the grouping tells a
    # number from a count, so it must be the region's own (EXACT_GROUPING: '93 19 19 13' is Danish,
    # '93 1919 13' in a catalogue table is not).  The matcher costs ~10x a parse, so it only
    # confirms numbers the parser calls valid.
    for region in regions:
        if not _fits_region(digits, region):
            continue
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        trunk = _region_info(region)[1]
        with_trunk = bool(trunk) and digits.startswith(trunk)
        if phonenumbers.is_valid_number(number):
            if possible and with_trunk:
                return True  # after a cue word, a valid '(0101) 486205' need not be grouped as NL does
            leniency = phonenumbers.Leniency.STRICT_GROUPING
            if not trunk:
                leniency = phonenumbers.Leniency.EXACT_GROUPING
            for match in phonenumbers.PhoneNumberMatcher(candidate, region, leniency=leniency):
                if match.start == 0 and match.end == len(candidate):
                    return True
            if _local_layout(candidate, number, region):
                return True
        elif possible and _accepts(number, True) and _laid_out_as(candidate, number, trunk, with_trunk):
            return True
    return False


# Layouts people use that libphonenumber's formats do not know: Norwegians write mobiles 3-2-3
# ('901 43 003'; libphonenumber groups them 2-2-2-2, so EXACT_GROUPING rejected every one).
_LOCAL_LAYOUTS = {"NO": (_MOBILE_3_2_3, 1)}  # region: (layout, libphonenumber's type: 1 = MOBILE)


def _local_layout(candidate: str, number, region: str) -> bool:
    layout = _LOCAL_LAYOUTS.get(region)
    if layout is None or not layout[0].fullmatch(candidate):
        return False
    import phonenumbers

    return phonenumbers.number_type(number) == layout[1]


def _laid_out_as(candidate: str, number, trunk: str, with_trunk: bool) -> bool:
    """Whether a possible (unallocated) national number is written as its country lays such numbers
    out: bare digits; the groups of libphonenumber's national format, merged or not, after an
    optional trunk prefix ('1 (871) 960-1929' in the US; '030 1234567' is not Japanese,
    '03-0123-4567'); or, where the country has no layout for the range, after its trunk prefix
    ('0744-727 28' in Sweden, not '8 (495) 123-45-67' in Italy or the Netherlands)."""
    import phonenumbers

    if candidate.isdigit():
        return True
    layout = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    if layout.isdigit():
        return with_trunk
    groups, want = _DIGITS.findall(candidate), _DIGITS.findall(layout)
    if with_trunk and "".join(want) != "".join(groups) and groups[0] == trunk:
        groups = groups[1:]
    if "".join(want) != "".join(groups):
        return False
    ends, pos = set(), 0
    for g in want:
        pos += len(g)
        ends.add(pos)
    pos = 0
    for g in groups:  # each group of the candidate ends where a group of the layout ends
        pos += len(g)
        if pos not in ends:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# finders: each returns (start, end, type) spans; overlaps are resolved in find_pii


def _secret_spans(text: str) -> list[Span]:
    spans = []
    for pattern in _SECRETS:
        for m in pattern.finditer(text):
            # a token inside a longer one (base64 data, a hash) is a coincidence, not a key
            if m.group().startswith("-----"):
                if _BASE64_LINE.search(m.group()):
                    spans.append((m.start(), m.end(), "secret"))
            elif not m.start() or not _ascii_word_char(text[m.start() - 1]):
                spans.append((m.start(), m.end(), "secret"))
    return spans


def _windows(centres: list[tuple[int, int]], before: int, after: int, size: int) -> list[tuple[int, int]]:
    """Merged ``[start - before, end + after)`` windows around sorted ``(start, end)`` centres."""
    merged: list[tuple[int, int]] = []
    for start, end in centres:
        lo, hi = max(0, start - before), min(size, end + after)
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _email_spans(text: str) -> list[Span]:
    """E-mails are looked for only around an '@' or an obfuscated ``[at]``."""
    centres = []
    at = text.find("@")
    while at >= 0:
        centres.append((at, at + 1))
        at = text.find("@", at + 1)
    centres += [m.span() for m in _AT_HINT.finditer(text)]
    spans = []
    for lo, hi in _windows(sorted(centres), _EMAIL_BEFORE, _EMAIL_AFTER, len(text)):
        for m in _EMAIL.finditer(text, lo, hi):
            if _valid_email(m.group()) and not _message_id(text, m):
                spans.append((m.start(), m.end(), "email"))
    return spans


def _message_id(text: str, m: re.Match) -> bool:
    return (
        text[m.start() - 1 : m.start()] == "<"
        and text[m.end() : m.end() + 1] == ">"
        and _MESSAGE_ID_LOCAL.match(m.group()) is not None
    )


def _ipv6_spans(text: str, private: bool) -> list[Span]:
    """IPv6 addresses are looked for only around a ``:x:`` or ``::``."""
    centres: list[tuple[int, int]] = []
    for m in _IPV6_COLONS.finditer(text):
        start = m.start()
        floor = max(centres[-1][0] if centres else 0, start - 40)  # an address has <= 45 characters
        while start > floor and text[start - 1] in _HEX_OR_COLON:
            start -= 1
        centres.append((start, m.end()))
    spans = []
    for lo, hi in _windows(centres, 0, 60, len(text)):
        for m in _IPV6.finditer(text, lo, hi):
            if (
                m.group().count(":") >= 2
                and _valid_ip(m.group(), private)
                and not _network_prefix(text, m.end(), m.group())
            ):
                spans.append((m.start(), m.end(), "ip"))
    return spans


def _not_an_ipv4(text: str, start: int, end: int) -> bool:
    """Whether the dotted quad ``text[start:end]`` is a version or a section number, not an address."""
    before = text[max(0, start - 32) : start]
    octets = [int(octet) for octet in text[start:end].split(".")]
    if _VERSION_BEFORE.search(before, len(before) - 10):
        return True
    if max(octets) < 100 and _SECTION_BEFORE.search(before, len(before) - 12):
        return True
    # a heading: opening a line and followed by '. ' ('3.3.2.1. Known issues')
    line_start = text.rfind("\n", 0, start) + 1
    if text.startswith((". ", ".\t", ".\u00a0"), end) and not text[line_start:start].strip():
        return True
    word = _WORD_BEFORE.search(before)
    if not word or max(octets) >= _SMALL_OCTET or word.group(1).lower() in _IP_WORDS:
        return False
    name = word.group(1)
    return (
        before.endswith("/")
        or name.lower() in _PRODUCTS
        or any(ch.isupper() or ch.isdigit() for ch in name[1:])
    )


def _network_prefix(text: str, ip_end: int, address: str) -> bool:
    """Whether ``address`` followed by ``/N`` names a network ('2002::/16', '203.0.113.0/24': host
    bits all zero, a prefix shorter than the address), which identifies a block, not a machine."""
    m = _PREFIX_LENGTH.match(text, ip_end)
    if not m:
        return False
    try:
        net = ipaddress.ip_network(f"{address.split('%', 1)[0]}/{m.group(1)}", strict=True)
    except ValueError:
        return False
    return net.prefixlen < net.max_prefixlen


def _iban_at(text: str, m: re.Match) -> tuple[int, int] | None:
    """The IBAN that ``m`` starts: the greedy match, or, when it took in a following token ('BIC',
    'EUR', a year) and fails the checksum, its longest prefix of whole groups that passes."""
    value = m.group()
    cut = len(value)
    while cut >= 15:  # the shortest IBANs (Norway) have 15 characters
        if _valid_iban(value[:cut]):
            return m.start(), m.start() + cut
        cut = value.rfind(" ", 0, cut)
    return None


def _phone_in_run(
    text: str, groups: list[tuple[int, int]], i: int, last: int, listed: bool, regions: tuple[str, ...]
) -> tuple[int, int] | None:
    """The ``(start, end)`` of the phone number that starts with digit group ``i`` and ends by group
    ``last``, or None.  The longest candidate is tried first.  An international number may also end
    at an earlier space (a run of digits and spaces may go on into the next number: '+61 3 9876 5432
    24 hours'); a national one may not ('4111 1111' of a card, '0532 0130 00' of an IBAN).  A national
    number among other numbers (``listed``: page ranges, tables) must open with its trunk prefix
    '0' or a bracketed area code."""
    start = groups[i][0]
    if text[start - 1 : start] == "+":
        start -= 1
    if text[start - 1 : start] == "(":
        start -= 1
    before = text[start - 1] if start else ""
    # not inside a word, an id ('CVE-2018-7536', a UUID), a path or a string literal (b'0123...')
    if before and (_ascii_word_char(before) or before in "+-/#№°"):
        return None
    if before in "'\"" and start >= 2 and _ascii_word_char(text[start - 2]):
        return None
    if before == "." and start >= 2 and text[start - 2].isdigit():
        return None
    if _DIMENSION_BEFORE.search(text, max(0, start - 4), start):
        return None
    exit_code = text.startswith("00", start) and not text.startswith("000", start)
    international = exit_code or text.startswith(("+", "(+"), start)
    isbn_context = _ISBN_BEFORE.search(text, max(0, start - 16), start) is not None
    # E.164 counts the country code, not the '00' or '011' exit code
    digits = -2 if exit_code else -3 if text.startswith("011", start) else 0
    counts = []
    for k in range(i, last + 1):
        digits += groups[k][1] - groups[k][0]
        counts.append(digits)
    shape = (text, groups, i, last, start, tuple(counts), international, listed, isbn_context, regions)
    found = _phone_candidate(*shape, cue=False)
    # the weaker reading only where the strict one failed and a cue word stands right before
    if found is None and _cue_before(text, start):
        found = _phone_candidate(*shape, cue=True)
    if found is None:
        return None
    ext = _EXTENSION.match(text, found[1])
    return (found[0], ext.end()) if ext else found


def _phone_candidate(
    text: str,
    groups: list[tuple[int, int]],
    i: int,
    last: int,
    start: int,
    counts: tuple[int, ...],
    international: bool,
    listed: bool,
    isbn_context: bool,
    regions: tuple[str, ...],
    cue: bool,
) -> tuple[int, int] | None:
    """The longest candidate from ``start`` to the end of a group ``j <= last`` that libphonenumber
    accepts (valid and well grouped; with ``cue``, possible, and a bare digit run may be one)."""
    for j in range(last, i - 1 if international else last - 1, -1):
        end = groups[j][1]
        if j < last and not text[end].isspace():
            continue  # a shorter candidate ends before a space, never inside '+49-30-123'
        if end < len(text) and _ascii_word_char(text[end]) and not _EXTENSION.match(text, end):
            continue  # '+49 89 1234567abc'
        if text[end : end + 1] == "-" and text[end + 1 : end + 2].isalpha():
            continue  # the head of a longer id: a UUID's first group ('03798958-b27f-4f0a-...')
        # E.164: at most 15 digits.  A national number has an area code: 8+ digits (7-digit local
        # numbers are ids, years and postcodes on web pages far more often).
        if not (7 if international else 8) <= counts[j - i] <= 15:
            continue
        lo = start
        if text.count("(", lo, end) != text.count(")", lo, end):
            if text[lo] != "(":
                continue
            lo += 1  # '(030 1234567)': the bracket wraps the number
            if text.count("(", lo, end) != text.count(")", lo, end):
                continue
        candidate = text[lo:end]
        # '011 351 922 584 917' dialled from North America: its groups may look like a count
        dialled_011 = candidate.startswith("011") and _valid_phone("+" + candidate[3:], (), cue)
        if not (international or dialled_011) and (
            (listed and candidate[0] not in "0(") or not _national_shape_ok(candidate, isbn_context, cue)
        ):
            continue
        if _valid_phone(candidate, regions, cue):
            return lo, end
    return None


def _national_shape_ok(candidate: str, isbn_context: bool, cue: bool = False) -> bool:
    """Cheap rejections of national candidates before libphonenumber sees them."""
    if candidate.isdigit() and not candidate.startswith("0") and not cue:
        return False  # a bare digit run is an id, an order or an account number unless trunk-prefixed
        # or right after a cue word ('Phone: 6175550199')
    if isbn_context or _NOT_PHONE.fullmatch(candidate) or _NOT_PHONE_INSIDE.search(candidate):
        return False
    if _QUANTITY.fullmatch(candidate) and not _MOBILE_3_3_3.fullmatch(candidate):
        return False
    if candidate[0] != "0" and any(_is_range(*m.groups()) for m in _RANGE.finditer(candidate)):
        return False
    # an ISBN written in its groups ends with a one-digit check group (phone numbers never do)
    if candidate[-2] in "- " and _ISBN_GROUPS.fullmatch(candidate):
        from stdnum import isbn

        return not isbn.is_valid(candidate)
    return True


def _is_range(a: str, b: str) -> bool:
    """'210-212', '534-536' (page ranges in a table), not '736-5000' or '912-345'."""
    return len(a) == len(b) and 0 < int(b) - int(a) <= 50


def _phone_spans(text: str, run_start: int, run_end: int, regions: tuple[str, ...]) -> list[Span]:
    """Phone numbers in a run of digits and punctuation.  The run is cut where its punctuation is
    not a phone's ('. ', ' / ', '--'); a number starts a piece or follows another number in it, so
    the inner digits of a card, an IBAN or a table row are never tried on their own."""
    groups = [m.span() for m in _DIGITS.finditer(text, run_start, run_end)]
    spans: list[Span] = []
    i = 0
    while i < len(groups):
        last, digits, slash = i, groups[i][1] - groups[i][0], False
        trunk = text[groups[i][0]] == "0" or text[groups[i][0] - 1 : groups[i][0]] == "+"
        while last + 1 < len(groups):
            sep = text[groups[last][1] : groups[last + 1][0]]
            if _PHONE_INNER_SEP.fullmatch(sep):
                pass
            elif not slash and digits <= _AREA_CODE_DIGITS and trunk and _AREA_CODE_SLASH.fullmatch(sep):
                slash = True  # '030 / 1234567': a slash after the area code
            else:
                break
            last += 1
            digits += groups[last][1] - groups[last][0]
        listed = i > 0 or last < len(groups) - 1  # other numbers around it: '206 / 248-253 232'
        found = _phone_in_run(text, groups, i, last, listed, regions)
        if found:
            spans.append((*found, "phone"))
            while i <= last and groups[i][0] < found[1]:
                i += 1
        else:
            i = last + 1
    return spans


def _numeric_spans(
    text: str, types: frozenset[str], regions: tuple[str, ...], private_ip: bool
) -> list[Span]:
    """Cards, SSNs, IPv4s, phones and IBANs, looked for only in and around runs of digits."""
    spans: list[Span] = []
    iban_end = 0
    for run in _NUMERIC_RUN.finditer(text):
        start, end = run.span()
        hi = min(len(text), end + 2)  # the patterns' lookaheads see the characters after the run
        if "credit_card" in types:
            for m in _CARD.finditer(text, start, hi):
                value = m.group()
                # '4111 1111 1111 1111 3.0': a fifth group may be the next number, not 19 digits
                if not _valid_card(value) and m.group(1) and value.count(m.group(1)) == 4:
                    value = value[: value.rfind(m.group(1))]
                if _valid_card(value):
                    spans.append((m.start(), m.start() + len(value), "credit_card"))
        if "us_ssn" in types:
            for m in _SSN.finditer(text, start, hi):
                # '+81 893-85-6837' is a phone number
                if _valid_ssn(m.group()) and not _COUNTRY_CODE_BEFORE.search(
                    text, max(0, m.start() - 7), m.start()
                ):
                    spans.append((m.start(), m.end(), "us_ssn"))
        if "ip" in types and "." in run.group():
            for m in _IPV4.finditer(text, start, hi):
                address = m.group()
                if text.startswith(_REVERSE_DNS, m.end()):
                    address = ".".join(reversed(address.split(".")))
                if (
                    _valid_ip(address, private_ip)
                    and not _not_an_ipv4(text, m.start(), m.end())
                    and not _network_prefix(text, m.end(), address)
                ):
                    spans.append((m.start(), m.end(), "ip"))
        if "iban" in types:
            pos = max(iban_end, start - _IBAN_LOOKBACK)
            stop = min(len(text), end + _IBAN_LOOKAHEAD)
            while m := _IBAN.search(text, pos, stop):
                found = _iban_at(text, m)
                if found:
                    spans.append((*found, "iban"))
                    iban_end = pos = found[1]
                else:
                    pos = m.start() + 1
        if "phone" in types:
            spans += _phone_spans(text, start, end, regions)
    return spans


def find_pii(
    text: str,
    types: set[str] | frozenset[str] | None = None,
    regions: Sequence[str] | None = None,
    private_ip: bool = False,
) -> list[Span]:
    """Validated PII in ``text``: sorted, non-overlapping ``(start, end, type)`` spans."""
    types = frozenset(PII_TYPES if types is None else types)
    regions = tuple(DEFAULT_PHONE_REGIONS if regions is None else regions)
    found: list[Span] = []
    if "secret" in types:
        found += _secret_spans(text)
    if "email" in types:
        found += _email_spans(text)
    if "ip" in types:
        found += _ipv6_spans(text, private_ip)
    if types & {"credit_card", "us_ssn", "ip", "iban", "phone"}:
        found += _numeric_spans(text, types, regions, private_ip)
    # resolve overlaps: by priority, then longest
    found.sort(key=lambda s: (PRIORITY[s[2]], s[0] - s[1], s[0]))
    taken: list[Span] = []
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
    email: bool = Field(True, description="replace e-mail addresses (also name [at] host [dot] tld forms)")
    ip: bool = Field(True, description="replace public IPv4 / IPv6 addresses")
    phone: bool = Field(True, description="replace phone numbers (libphonenumber-validated)")
    credit_card: bool = Field(True, description="replace Luhn-valid card numbers")
    iban: bool = Field(True, description="replace checksum-valid IBANs")
    us_ssn: bool = Field(True, description="replace US social security numbers in issued ranges")
    secret: bool = Field(True, description="replace API keys / tokens of known providers, PEM private keys")
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
