"""The ``pii`` stage: each type found and replaced, near-misses kept, text outside spans untouched."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from pipeline.stage import StageRunner
from stages.pii import PII, find_pii, scrub

POSITIVES = {
    "email": ["mail john.doe@example.com now", "write to jane [at] mail [dot] co [dot] uk please"],
    "ip": ["server 8.8.8.8 is up", "resolver 2001:4860:4860::8888 answered"],
    "phone": ["call +49 30 901820 today", "call (212) 555-0198 today", "UK office 020 7946 0958 open"],
    "credit_card": ["card 4111 1111 1111 1111 charged", "card 5500-0000-0000-0004 charged"],
    "iban": ["pay to DE89 3704 0044 0532 0130 00 now", "IBAN GB82WEST12345698765432 here"],
    "us_ssn": ["SSN 123-45-6789 on file"],
    "secret": ["key AKIAIOSFODNN7EXAMPLE leaked", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked"],
}
NEAR_MISSES = [
    "released v1.2.3.4 today",
    "ISBN 978-3-16-148410-0 in print",
    "from 1990-2005 and 1721-1782",
    "date 2023-10-05 at 12:30:45",
    "price $1,299.99 or 6 500 000 units",
    "order #123456789 shipped",
    "card 4111 1111 1111 1112 declined",  # Luhn-invalid
    "IBAN DE89 3704 0044 0532 0130 01 wrong",  # bad checksum
    "SSN 666-12-3456 and 000-12-3456 and 912-34-5678",  # never issued
    "LAN 192.168.1.1 and 127.0.0.1 and 2001:db8::1",  # private, loopback, documentation
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
]


@pytest.mark.parametrize("kind, text", [(k, t) for k, ts in POSITIVES.items() for t in ts])
def test_each_type_is_found(kind, text):
    spans = find_pii(text)
    assert [k for _, _, k in spans] == [kind], spans


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_stay(text):
    assert find_pii(text) == []


def test_private_ips_only_when_asked():
    text = "LAN 192.168.1.1 and 127.0.0.1"
    assert find_pii(text) == []
    assert [k for _, _, k in find_pii(text, private_ip=True)] == ["ip", "ip"]


def test_text_outside_spans_is_untouched_and_fakes_are_consistent():
    text = "Ünïcode ✓ mail a.b@example.org, again a.b@example.org; call +44 20 7946 0958.\n\tend"
    spans = find_pii(text)
    out = scrub(text, spans)
    assert out == "Ünïcode ✓ mail <EMAIL>, again <EMAIL>; call <PHONE>.\n\tend"
    fake = scrub(text, spans, "fake")
    fake_email = scrub("a.b@example.org", [(0, 15, "email")], "fake")
    assert fake.count(fake_email) == 2  # the same original, the same fake
    assert "a.b@example.org" not in fake and "+44 20 7946 0958" not in fake
    assert re.sub(r"\d", "9", fake).endswith("call +99 99 9999 9999.\n\tend")  # a fake keeps the shape


def test_stage_counts_types_and_keeps_before_after_samples():
    stage = PII(PII.Params(phone=False))
    stage.setup()
    runner = StageRunner(stage, sample_per_reason=1)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b", "c"],
            "text": ["mail x@example.com", "nothing here", "mail y@example.com, call +49 30 901820"],
        }
    )
    out = runner(batch)
    assert out.column("text").to_pylist() == [
        "mail <EMAIL>",
        "nothing here",
        "mail <EMAIL>, call +49 30 901820",
    ]
    assert stage.stats.extra == {"replaced": {"email": 2}, "docs_changed": 2}
    (sample,) = stage.changed_samples  # one per type at most (sample_per_reason=1)
    assert (
        sample["id"] == "a" and sample["before"] == "mail x@example.com" and sample["after"] == "mail <EMAIL>"
    )
