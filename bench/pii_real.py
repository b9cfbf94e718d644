"""PII scrubbing on real text: every replacement the ``pii`` stage (defaults) makes on ``english_dev``
(1,338 books and Python/Django/Debian documentation pages, what the ``english_lm`` pipeline scrubs)
and on the 2,256 dev-web texts, with its context and a verdict from a hand audit, plus an IPv4
context stress test of the rules that keep version and section numbers.

**Audit.** ``AUDIT`` holds the verdict for every distinct (type, string) the stage replaced when it
was last audited by hand (e-mails: by the rule in ``email_verdict``, after reading every distinct
address).  Verdicts:

* ``genuine``: a value of that type published by a person or an organisation (contact numbers,
  donation IBANs, mailing lists, addresses in log excerpts);
* ``example``: a well-formed value quoted as an example in documentation (``user@example.com``,
  ``123.45.67.89``); the stage cannot tell, and replacing it is right;
* ``other_pii``: personal data, but not of that type (an IRC ``ident@host`` mask read as an e-mail);
* ``fp``: not a value of that type at all (a version, a section number, a network).

A replacement not in the audit counts as ``unaudited``: the output shows what a change of the
stage added.

**IPv4 context stress.** A public IPv4 (Faker) is put after a random word of a random
``english_dev`` document (``word 1.2.3.4 next``) many times; recall, and each miss with the rule
that kept it.  It measures what the context rules cost on real prose, which the planted benchmark
(``pii_eval.py``) samples only 600 times.

Usage: ``python bench/pii_real.py [--json bench/results/pii_eval-real.json] [--stress 20000]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
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

ENGLISH_DEV = ROOT.parent / "shared" / "data" / "english_dev.jsonl.gz"
DEFAULT_TEXTS = Path("/tmp/winnow-bench/dev_texts")
CONTEXT = 80

CONTACT_PHONES = (
    "02382 59743", "089/99529727", "06106 70920", "+49 (0)40 / 49 07 11 06",
    "+49 (0)40 / 49 07 11 05", "501-601-0315", "0228-999582-5777", "0471 80 60 745",
    "212-306-6794", "0561 940 83-14", "1-800-273-8255", "0800 133 133", "050639010",
    "+49 (0)40-30030-1000", "0631-3692150", "1-876-499-0169", "040 374709-40",
    "(030) 78 95 47 78", "(030) 78 95 47 79", "05723 / 955-440", "0845 46 47",
    "0345 744 4422", "03456 005 165", "03457 078 051", "0344 811 0125", "0344 811 0126",
    "03457 125 678", "0800 138 1016", "0800 138 1018", "0800 0282 878", "0800 1971 329",
    "0344 811 0072", "0344 556 1400", "0800 058 2844", "0800 316 1323", "0800 304 7513",
    "0800 528 2100", "0800 692 0792", "0800 024 8997", "0343 222 1234", "0203 031 9331",
    "0800 0277 347", "0151 702 2071", "0800 138 5560", "0800 912 2901", "08007 834 524",
    "08007 834 548", "0343 222 3456", "0800 112 3456", "0800 107 2149", "03330 050 501",
    "08457 585 469", "0800 024 8998", "08000 736 734", "0201-2402-0", "0201.2402-403",
    "784-432-2223", "069 / 920 77 00", "069/297 89 22", "030/226 343 55", "+49 611 7878 394",
    "0211 77900 363", "(0341) 696290", "(0341) 6892826", "+41.31.322.55.11", "+4915208649244",
    "0345 122 99 84", "+49 4964 95816-120", "+49 4964 95816-29", "+49 (0)40 890 85-433",
    "02-751-1500",
)  # fmt: skip
DONATION_IBANS = (
    "DE54 5205 0353 0002 0650 69", "CH56 0900 0000 8952 1766 7", "DE30 6805 1207 0000 3701 71",
    "DE22 1005 0000 0190 0947 29", "DE10 4405 0199 0212 1545 63",
)  # fmt: skip
# (type, string) -> (verdict, note); audited by hand on 2026-11-22 (both corpora)
AUDIT: dict[tuple[str, str], tuple[str, str]] = {
    # IPs in documentation
    ("ip", "100.50.200.5"): ("example", "Python socket docs"),
    ("ip", "123.45.67.89"): ("example", "Python socket docs"),
    ("ip", "1.2.3.4"): ("example", "Django docs: 'To run on 1.2.3.4:7000'"),
    ("ip", "130.89.148.77"): ("genuine", "www.debian.org's address (Debian Handbook)"),
    ("ip", "2001:67c:2564:a119::77"): ("genuine", "www.debian.org's IPv6 address (Debian Handbook)"),
    ("ip", "213.244.11.247"): ("genuine", "www.eyrolles.com's address (Debian Handbook)"),
    ("ip", "82.50.72.202"): ("genuine", "an attacker's address in the Handbook's case study logs"),
    ("ip", "200.58.141.84"): ("genuine", "a client address in the Handbook's access.log excerpt"),
    ("ip", "192.0.0.9"): ("example", "IANA special-purpose address named in the ipaddress docs"),
    ("ip", "192.0.0.10"): ("example", "IANA special-purpose address named in the ipaddress docs"),
    ("ip", "193.168.1.2"): ("example", "http.cookiejar docs"),
    ("ip", "2001:db00::0"): ("fp", "a network written with a netmask: '2001:db00::0/ffff:ff00::'"),
    ("ip", "200a::1"): ("example", "Django runserver docs"),
    ("ip", "205.186.163.125"): ("example", "Django GeoIP2 docs (djangoproject.com's address then)"),
    ("ip", "2606:2800:220:1:248:1893:25c8:1946"): ("example", "example.org's address, socket docs"),
    ("ip", "93.184.216.34"): ("example", "example.org's address, socket docs"),
    ("ip", "2a02:42fe::4"): ("example", "Django GenericIPAddressField docs"),
    ("ip", "7.10.0.5"): ("example", "Python socket.inet_pton docs"),
    ("ip", "1.1.1.1"): ("genuine", "Cloudflare's resolver named in a forum post"),
    ("ip", "123.123.123.123"): ("example", "anonymisation example in a German privacy notice"),
    ("ip", "123.123.122.243"): ("example", "anonymisation example in a German privacy notice"),
    ("ip", "123.231.231.123"): ("example", "Python docs code sample"),
    ("ip", "126.255.255.255"): ("example", "ipaddress docs: IPv4Address('127.0.0.2') - 3"),
    ("ip", "192.0.3.6"): ("example", "ipaddress docs: IPv4Address('192.0.3.6') in a network"),
    # phones
    ("phone", "800-2655328"): ("example", "Django phone2numeric docs: 800-COLLECT (a real toll-free number)"),
    ("phone", "834.345.1254"): ("example", "Python re docs: a made-up phone book"),
    ("phone", "892.345.3428"): ("example", "Python re docs: a made-up phone book"),
    ("phone", "925.541.7625"): ("example", "Python re docs: a made-up phone book"),
    ("phone", "548.326.4584"): ("example", "Python re docs: a made-up phone book"),
    ("phone", "+44 1234 567 890"): ("example", "a placeholder number on a surf school's page"),
    ("phone", "+49 (0)40-30030"): ("genuine", "press contact; the extension after an en dash is left"),
    ("phone", "0221 / 9822"): ("genuine", "press contact; the extension after ' – ' is left"),
    ("phone", "030 / 2325 786"): ("genuine", "press contact; the extension ' -122' is left"),
    # the rest of the phones: contact numbers on German press releases, UK rail pages, US hotlines
    **{("phone", s): ("genuine", "a published contact number") for s in CONTACT_PHONES},
    # IBANs: donation and payment accounts of associations and shops
    **{("iban", s): ("genuine", "a published donation or payment account") for s in DONATION_IBANS},
    # e-mails that are not mailboxes (the others: see email_verdict)
    ("email", "sex@Rizon-2EDFBC28.pool8250.interbusiness.it"): ("other_pii", "IRC ident@host mask"),
    ("email", "SEX@RIZON-2EDFBC28.POOL8250.INTERBUSINESS.IT"): ("other_pii", "IRC ident@host mask"),
    ("email", "password@python.org"): ("other_pii", "URL userinfo 'joe:password@python.org'"),
    ("email", "password@example.com"): ("other_pii", "URL userinfo 'joe:password@example.com'"),
    ("email", "LL@li.org"): ("example", "gettext's placeholder team address 'LANGUAGE <LL@li.org>'"),
    ("email", "12345@bugs.debian.org"): ("example", "Debian BTS address of a placeholder bug number"),
    ("email", "12345-done@bugs.debian.org"): ("example", "Debian BTS address of a placeholder bug number"),
}
# RFC 2606/6761 example domains, and the made-up hosts the Python, Django and Debian docs use
EXAMPLE_DOMAINS = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|[a-z-]+\.(?:example|test|invalid)|host\.com|a\.com|"
    r"tiger\.net|evilsite\.com|falcot\.com|mailinator\.com|myorganization\.com|magic\.io)$",
    re.IGNORECASE,
)


def email_verdict(address: str) -> tuple[str, str]:
    """E-mails: every distinct address was read; all are mailboxes (mailing lists, MPs' offices,
    press contacts, maintainers) except those in AUDIT.  Example domains are examples."""
    if ("email", address) in AUDIT:
        return AUDIT["email", address]
    host = address.rsplit("@", 1)[-1] if "@" in address else address
    if "(at)" in address or "[at]" in address:
        return "genuine", "obfuscated mailbox"
    if EXAMPLE_DOMAINS.search(host):
        return "example", "example or made-up domain in documentation"
    return "genuine", "a mailbox"


def verdict(kind: str, value: str) -> tuple[str, str]:
    if kind == "email":
        return email_verdict(value)
    return AUDIT.get((kind, value), ("unaudited", ""))


def english_dev_texts() -> list[tuple[str, str]]:
    with gzip.open(ENGLISH_DEV, "rt", encoding="utf-8") as f:
        return [(d.get("title") or d.get("source_path") or "", d["text"]) for d in map(json.loads, f)]


def dev_web_texts(texts_dir: Path) -> list[tuple[str, str]]:
    from quality_filters import ensure_texts, load_table

    table = load_table(ensure_texts(texts_dir))
    return list(zip(table.column("id").to_pylist(), table.column("text").to_pylist()))


def replacements(docs: list[tuple[str, str]]) -> dict[str, Any]:
    """What the stage (defaults) replaces in ``docs``, each replacement with context and verdict."""
    from stages.pii import find_pii

    items = []
    docs_changed = 0
    t0 = time.process_time()
    for doc_id, text in docs:
        spans = find_pii(text)
        docs_changed += bool(spans)
        for a, b, kind in spans:
            v, note = verdict(kind, text[a:b])
            items.append(
                {
                    "type": kind,
                    "string": text[a:b],
                    "before": text[max(0, a - CONTEXT) : a],
                    "after": text[b : b + CONTEXT],
                    "doc": doc_id,
                    "verdict": v,
                    "note": note,
                }
            )
    cpu = time.process_time() - t0
    by_type: dict[str, Counter] = defaultdict(Counter)
    for it in items:
        by_type[it["type"]][it["verdict"]] += 1
    return {
        "documents": len(docs),
        "characters": sum(len(t) for _, t in docs),
        "docs_changed": docs_changed,
        "cpu_s": round(cpu, 2),
        "replaced": {k: sum(c.values()) for k, c in sorted(by_type.items())},
        "verdicts": {k: dict(c) for k, c in sorted(by_type.items())},
        "false_positives": {k: c["fp"] for k, c in sorted(by_type.items())},
        "items": items,
    }


def ipv4_context_stress(docs: list[tuple[str, str]], n: int, seed: int) -> dict[str, Any]:
    """Recall of public IPv4s placed after random words of real prose, and why each miss was kept."""
    from faker import Faker

    from stages.pii import _SECTION_BEFORE, _SMALL_OCTET, _VERSION_BEFORE, find_pii

    fake = Faker()
    fake.seed_instance(seed)
    rng = random.Random(seed)
    texts = [t for _, t in docs if len(t) > 1000]
    misses = []
    reasons: Counter = Counter()
    small = 0
    for _ in range(n):
        text = rng.choice(texts)
        lo = rng.randrange(0, len(text) - 500)
        window = text[lo : lo + 500]
        ends = [m.end() for m in re.finditer(r"\w+ ", window)]
        if not ends:
            continue
        cut = rng.choice(ends)
        ip = fake.ipv4_public()
        small += max(int(o) for o in ip.split(".")) < _SMALL_OCTET
        doc = window[:cut] + ip + " " + window[cut:]
        if any(a <= cut and b >= cut + len(ip) for a, b, _ in find_pii(doc, {"ip"})):
            continue
        before = doc[max(0, cut - 32) : cut]
        if _VERSION_BEFORE.search(before):
            reason = "after 'v'/'version'"
        elif _SECTION_BEFORE.search(before):
            reason = "after 'section'/'§' (all parts < 100)"
        else:
            reason = "after a product name (all octets < 32)"
        reasons[reason] += 1
        misses.append({"context": doc[max(0, cut - 40) : cut + len(ip) + 20], "kept_by": reason})
    return {
        "placed": n,
        "all_octets_below_32": small,
        "recall": round(1 - len(misses) / n, 5),
        "missed": len(misses),
        "missed_by_rule": dict(reasons.most_common()),
        "missed_examples": misses[:60],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="winnow run output of the dev texts")
    ap.add_argument("--stress", type=int, default=20000, help="IPv4s placed in english_dev prose")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=BENCH / "results" / "pii_eval-real.json")
    args = ap.parse_args()
    english = english_dev_texts()
    out: dict[str, Any] = {
        "machine": benchutil.machine_info(["phonenumbers", "python-stdnum", "tldextract", "faker"]),
        "corpora": {"english_dev": replacements(english), "dev_web": replacements(dev_web_texts(args.texts))},
        "ipv4_context_stress": ipv4_context_stress(english, args.stress, args.seed),
    }
    for name, r in out["corpora"].items():
        print(f"\n{name}: {r['documents']} documents, {r['docs_changed']} changed, {r['cpu_s']} CPU-s")
        for kind, verdicts in r["verdicts"].items():
            print(f"  {kind:12s} {r['replaced'][kind]:4d} replaced  {verdicts}")
        for it in r["items"]:
            if it["verdict"] in ("fp", "unaudited"):
                print(f"    {it['verdict']:9s} {it['type']:6s} ...{it['before'][-40:]!r}[[{it['string']}]]")
    s = out["ipv4_context_stress"]
    print(f"\nIPv4 after a random word of english_dev: recall {s['recall']} ({s['missed']} of {s['placed']})")
    print(f"  kept by: {s['missed_by_rule']}")
    benchutil.write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
