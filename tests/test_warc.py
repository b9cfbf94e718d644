"""WarcSource: framing (gzip members, plain records, garbage, corruption), record selection,
charsets, byte-range splitting, and the bundled real sample.

Every read goes through ``warcgen.read``, which checks on each shard and on the merged stats
that ``docs_in - docs_out == sum(dropped)``.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from pathlib import Path

import pytest
from warcgen import (
    check_byte_range_plan,
    date,
    gzip_member,
    http_block,
    other,
    page,
    raw_record,
    read,
    response,
    response_headers,
    rid,
    url,
    whole,
    write,
)

from pipeline.source import Shard
from stages.warc import SCHEMA, WarcSource, decode_html

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_web.warc.gz"
needs_sample = pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is not available")

GZ = pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])


def warc_path(tmp_path: Path, gz: bool, name: str = "test") -> Path:
    return tmp_path / (f"{name}.warc.gz" if gz else f"{name}.warc")


def stats_view(stats) -> dict:
    """Everything a merged stats entry holds except time."""
    d = stats.to_dict()
    d.pop("seconds")
    return d


# --- records and rows ------------------------------------------------------------------------------


@GZ
def test_response_rows_and_other_record_types(tmp_path, gz):
    parts = [
        other(0, "warcinfo", gzip=gz),
        other(1, "request", gzip=gz),
        response(2, gzip=gz),
        other(3, "metadata", gzip=gz),
        response(4, gzip=gz),
        other(5, "resource", gzip=gz),
        other(6, "conversion", gzip=gz),
    ]
    path, _ = write(warc_path(tmp_path, gz), parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(2), rid(4)]
    assert r.rows[0] == {
        "id": rid(2),
        "url": url(2),
        "warc_date": date(2),
        "charset": "utf-8",
        "html": page(2).decode(),
    }
    assert r.rows[1]["html"] == page(4).decode()
    s = r.stats
    assert (s.docs_in, s.docs_out) == (7, 2)
    assert dict(s.dropped) == {
        "record_type:warcinfo": 1,
        "record_type:request": 1,
        "record_type:metadata": 1,
        "record_type:resource": 1,
        "record_type:conversion": 1,
    }
    assert s.extra["record_types"] == {
        "warcinfo": 1,
        "request": 1,
        "response": 2,
        "metadata": 1,
        "resource": 1,
        "conversion": 1,
    }
    assert s.bytes_in == path.stat().st_size
    assert s.bytes_out == len(page(2)) + len(page(4))
    assert "garbage_bytes" not in s.extra


def test_batches_have_the_schema(tmp_path):
    path, _ = write(tmp_path / "a.warc.gz", [response(i) for i in range(5)])
    source = WarcSource(WarcSource.Params(paths=[str(path)]))
    batches = list(source.read(Shard(str(path))))
    assert [b.schema for b in batches] == [SCHEMA]
    assert batches[0].num_rows == 5


def test_batches_are_cut_at_batch_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(WarcSource, "BATCH_ROWS", 4)
    path, _ = write(tmp_path / "a.warc.gz", [response(i) for i in range(10)])
    source = WarcSource(WarcSource.Params(paths=[str(path)]))
    assert [b.num_rows for b in source.read(Shard(str(path)))] == [4, 4, 2]


@GZ
def test_only_html_payloads_become_rows(tmp_path, gz):
    doc = b"<!DOCTYPE html><html><body><p>sniffed</p></body></html>"
    parts = [
        response(1, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", content_type="image/png", gzip=gz),
        response(2, b"body { color: red }", content_type="text/css", gzip=gz),
        response(3, b'{"a": 1}', content_type="application/json", gzip=gz),
        response(4, b"just some plain text, no markup", content_type="text/plain", gzip=gz),
        response(5, b"\x00\x01binary", content_type=None, gzip=gz),
        response(6, doc, content_type="text/plain; charset=utf-8", gzip=gz),
        response(7, b"\n  <!-- a comment -->\n<html><body>x</body></html>", content_type=None, gzip=gz),
        response(8, doc, content_type="application/xhtml+xml", gzip=gz),
        response(9, doc, content_type="TEXT/HTML; Charset=UTF-8", gzip=gz),
        response(10, b"\xef\xbb\xbf" + doc, content_type="text/plain", gzip=gz),
    ]
    path, _ = write(warc_path(tmp_path, gz), parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(n) for n in (6, 7, 8, 9, 10)]
    assert dict(r.stats.dropped) == {"not_html": 5}
    assert r.stats.extra["not_html_mime"] == {
        "image/png": 1,
        "text/css": 1,
        "application/json": 1,
        "text/plain": 1,
        "none": 1,
    }
    assert r.rows[-1]["html"] == doc.decode()  # the byte-order mark is not part of the text


@GZ
def test_non_2xx_status_is_dropped(tmp_path, gz):
    parts = [
        response(1, gzip=gz),
        response(2, status="404 Not Found", gzip=gz),
        response(3, status="301 Moved Permanently", http_headers=[("Location", "https://x.org/")], gzip=gz),
        response(4, status="500 Internal Server Error", gzip=gz),
        response(5, status="206 Partial Content", gzip=gz),
    ]
    path, _ = write(warc_path(tmp_path, gz), parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(5)]
    assert dict(r.stats.dropped) == {"http_status": 3}
    assert r.stats.extra["http_status"] == {"404": 1, "301": 1, "500": 1}

    r = read(WarcSource, [path], only_2xx=False)
    assert r.ids == [rid(n) for n in range(1, 6)]
    assert not r.stats.dropped


@GZ
def test_empty_payload(tmp_path, gz):
    parts = [response(1, b"", gzip=gz), response(2, gzip=gz), response(3, b" \r\n\t \n", gzip=gz)]
    path, _ = write(warc_path(tmp_path, gz), parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(2)]
    assert dict(r.stats.dropped) == {"empty_payload": 2}


def test_http_transfer_and_content_encoding_are_decoded(tmp_path):
    body = "<html><body><p>Caf\u00e9 cr\u00e8me</p></body></html>".encode()
    packed = gzip.compress(body)
    chunked = b"%x\r\n" % len(packed) + packed + b"\r\n0\r\n\r\n"
    headers = [("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]
    parts = [response(1, chunked, http_headers=headers), response(2, packed, http_headers=headers[:1])]
    path, _ = write(tmp_path / "a.warc.gz", parts)
    r = read(WarcSource, [path])
    assert [row["html"] for row in r.rows] == [body.decode(), body.decode()]


def test_missing_record_id_gets_a_unique_stable_fallback(tmp_path):
    def no_id(n: int, gz: bool) -> bytes:
        block = http_block(page(n))
        headers = [h for h in response_headers(n, len(block)) if not h.startswith("WARC-Record-ID")]
        return raw_record(headers, block, gzip=gz)

    path, offsets = write(tmp_path / "a.warc.gz", [no_id(1, True), response(2), no_id(3, True)])
    r = read(WarcSource, [path])
    assert r.ids == [f"<winnow:a.warc.gz@{offsets[0]}#0>", rid(2), f"<winnow:a.warc.gz@{offsets[2]}#0>"]
    split = read(WarcSource, [path], shards=[Shard(str(path), 0, 200), Shard(str(path), 200, None)])
    assert split.ids == r.ids

    path, _ = write(tmp_path / "a.warc", [no_id(1, False), response(2, gzip=False), no_id(3, False)])
    assert read(WarcSource, [path]).ids == ["<winnow:a.warc#0>", rid(2), "<winnow:a.warc#2>"]


# --- payload size ------------------------------------------------------------------------------------


def test_50mb_page_is_read_with_the_default_limit(big_page_warc, big_page):
    r = read(WarcSource, [big_page_warc])
    assert r.ids == [rid(1), rid(2), rid(3)]
    assert len(r.rows[1]["html"].encode()) == len(big_page)
    assert r.rows[1]["html"] == big_page.decode()
    assert not r.stats.dropped


def test_50mb_page_over_a_smaller_limit_is_too_large(big_page_warc):
    r = read(WarcSource, [big_page_warc], max_payload_bytes=1024 * 1024)
    assert r.ids == [rid(1), rid(3)]
    assert r.rows[1]["html"] == page(3).decode()
    assert dict(r.stats.dropped) == {"too_large": 1}


@GZ
def test_max_payload_bytes_boundary(tmp_path, gz):
    limit = 4096
    exact = b"<html><body>" + b"a" * (limit - len(b"<html><body></body></html>")) + b"</body></html>"
    assert len(exact) == limit
    over = exact[:-14] + b"b</body></html>"
    assert len(over) == limit + 1
    big = b"<html>" + b"z" * (3 * 1024 * 1024) + b"</html>"
    parts = [response(1, exact, gzip=gz), response(2, over, gzip=gz), response(3, big, gzip=gz)]
    parts.append(response(4, gzip=gz))
    path, _ = write(warc_path(tmp_path, gz), parts)
    r = read(WarcSource, [path], max_payload_bytes=limit)
    assert r.ids == [rid(1), rid(4)]
    assert r.rows[0]["html"] == exact.decode()
    assert dict(r.stats.dropped) == {"too_large": 2}


# --- gzip framing -----------------------------------------------------------------------------------


def test_truncated_member_at_end_of_file(tmp_path):
    r1, r2, r3 = response(1), response(2, page(2, 400)), response(3, page(3, 400))
    path, _ = write(tmp_path / "a.warc.gz", [r1, r2, r3[: len(r3) // 2]])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2)]
    assert dict(r.stats.dropped) == {"gzip_truncated": 1}
    assert r.stats.docs_in == 3


def test_member_cut_after_its_record_keeps_the_record(tmp_path):
    """Only the gzip trailer is missing: nothing of the record is lost."""
    r1, r2 = response(1), response(2)
    path, _ = write(tmp_path / "a.warc.gz", [r1, r2[:-4]])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2)]
    assert not r.stats.dropped


def test_truncated_member_in_the_middle(tmp_path):
    r1, r2, r3, r4 = response(1), response(2, page(2, 400)), response(3), response(4)
    cut = r2[: len(r2) // 2]
    path, _ = write(tmp_path / "a.warc.gz", [r1, cut, r3, r4])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(3), rid(4)]
    assert dict(r.stats.dropped) == {"gzip_corrupt": 1}
    assert r.stats.extra["garbage_bytes"] == len(cut)
    assert r.stats.docs_in == 4


def test_member_missing_its_trailer_in_the_middle(tmp_path):
    """The next member's bytes are read as the CRC: the record is unverified and dropped once."""
    r1, r2, r3 = response(1), response(2), response(3)
    path, _ = write(tmp_path / "a.warc.gz", [r1, r2[:-8], r3])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(3)]
    assert dict(r.stats.dropped) == {"gzip_corrupt": 1}
    assert r.stats.docs_in == 3


def test_bad_crc_drops_the_record_once(tmp_path):
    r1, r2, r3 = response(1), bytearray(response(2)), response(3)
    r2[-8] ^= 0xFF  # first byte of the CRC32
    path, _ = write(tmp_path / "a.warc.gz", [r1, bytes(r2), r3])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(3)]
    assert dict(r.stats.dropped) == {"gzip_corrupt": 1}
    assert r.stats.docs_in == 3
    assert r.stats.extra["garbage_bytes"] == len(r2)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_corrupt_deflate_data(tmp_path, where):
    r1, r2, r3 = response(1), bytearray(response(2, page(2, 400))), response(3)
    at = int(len(r2) * where)
    for i in range(at, at + 16):
        r2[i] ^= 0x5A
    with pytest.raises((zlib.error, gzip.BadGzipFile)):
        gzip.decompress(bytes(r2))
    path, _ = write(tmp_path / "a.warc.gz", [r1, bytes(r2), r3])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(3)]
    assert dict(r.stats.dropped) == {"gzip_corrupt": 1}
    assert r.stats.docs_in == 3


def test_garbage_between_gzip_members(tmp_path):
    junk = [
        b"\x00" * 100,  # before the first member
        bytes(range(256)) * 2 + b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"nonsense",  # a fake header
        gzip_member(b"a gzip member that holds no WARC record\r\n"),
        b"trailing junk\n",  # after the last member
    ]
    parts = [junk[0], response(1), junk[1], response(2), junk[2], response(3), junk[3]]
    path, _ = write(tmp_path / "a.warc.gz", parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2), rid(3)]
    assert not r.stats.dropped
    assert r.stats.docs_in == 3
    assert r.stats.extra["garbage_bytes"] == sum(map(len, junk))


def test_garbage_before_a_gzip_warc_named_gz(tmp_path):
    path, _ = write(tmp_path / "a.warc.gz", [b"WAR", response(1), response(2)])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2)]
    assert r.stats.extra["garbage_bytes"] == 3


def test_garbage_inside_a_member_after_its_record(tmp_path):
    record = response(1, gzip=False)
    parts = [gzip_member(record + b"stray bytes after the record\r\n"), response(2)]
    path, _ = write(tmp_path / "a.warc.gz", parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2)]
    assert not r.stats.dropped
    assert r.stats.extra["garbage_bytes"] == len(b"stray bytes after the record\r\n")


def test_whole_file_gzip_is_one_shard_and_reads_every_record(tmp_path):
    records = [response(n, page(n, 300), gzip=False) for n in range(1, 31)]
    plain = b"".join([other(0, "warcinfo", gzip=False), *records])
    path = tmp_path / "whole.warc.gz"
    path.write_bytes(gzip.compress(plain))
    assert path.stat().st_size > 3 * 4096
    shards = WarcSource(WarcSource.Params(paths=[str(path)], split_bytes=4096)).plan([str(path)])
    assert shards == [Shard(str(path))]
    r = read(WarcSource, [path], split_bytes=4096)
    assert r.ids == [rid(n) for n in range(1, 31)]
    assert dict(r.stats.dropped) == {"record_type:warcinfo": 1}


def test_truncated_whole_file_gzip_keeps_the_complete_records(tmp_path):
    records = [response(n, page(n, 200), gzip=False) for n in range(1, 31)]
    plain = b"".join(records)
    packed = gzip.compress(plain)
    cut = packed[: int(len(packed) * 0.7)]
    path = tmp_path / "whole.warc.gz"
    path.write_bytes(cut)
    inflated = len(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut))
    ends, pos = [], 0
    for rec in records:
        pos += len(rec)
        ends.append(pos - 4)  # a record is complete without its two trailing CRLFs
    complete = sum(end <= inflated for end in ends)
    assert 0 < complete < 30
    r = read(WarcSource, [path])
    assert r.ids == [rid(n) for n in range(1, complete + 1)]
    assert dict(r.stats.dropped) == {"gzip_truncated": 1}


# --- plain framing -----------------------------------------------------------------------------------


def test_garbage_between_plain_records(tmp_path):
    junk = [
        b"garbage before the first record\r\nand more of it\n",
        b"\x00\x01\x02 binary junk\r\n",
        b"junk without a newline before the next version line ",
    ]
    parts = [junk[0], response(1, gzip=False), junk[1], response(2, gzip=False), junk[2]]
    parts += [response(3, gzip=False)]
    path, _ = write(tmp_path / "a.warc", parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2), rid(3)]
    assert not r.stats.dropped
    assert r.stats.extra["garbage_bytes"] == sum(map(len, junk))


def test_plain_record_shorter_than_its_block(tmp_path):
    block = http_block(page(2))
    short = raw_record(response_headers(2, len(block) - 10), block, gzip=False)
    path, _ = write(tmp_path / "a.warc", [response(1, gzip=False), short, response(3, gzip=False)])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(2), rid(3)]
    assert r.rows[1]["html"] == page(2)[:-10].decode()
    assert r.stats.extra["garbage_bytes"] > 0
    assert not r.stats.dropped


# --- broken records ----------------------------------------------------------------------------------


def _corrupt(kind: str, gz: bool) -> bytes:
    block = http_block(page(2))
    headers = response_headers(2, len(block))
    if kind == "bad_version":
        headers[0] = "WARC/9.9"
    elif kind == "bad_length":
        headers[-1] = "Content-Length: twelve"
    elif kind == "no_length":
        headers = headers[:-1]
    elif kind == "no_target_uri":  # warcio itself fails with AttributeError on this one
        headers = response_headers(2, len(block), uri=False)
    elif kind == "bad_http":
        block = b"NOT AN HTTP STATUS LINE\r\nx: y\r\n\r\n" + page(2)
        headers = response_headers(2, len(block))
    return raw_record(headers, block, gzip=gz)


@GZ
@pytest.mark.parametrize("kind", ["bad_version", "bad_length", "no_length", "no_target_uri", "bad_http"])
def test_corrupt_record(tmp_path, gz, kind):
    parts = [response(1, gzip=gz), _corrupt(kind, gz), response(3, gzip=gz)]
    path, _ = write(warc_path(tmp_path, gz), parts)
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(3)]
    assert dict(r.stats.dropped) == {"corrupt_record": 1}
    assert r.stats.docs_in == 3


def test_content_length_longer_than_the_data_gzip(tmp_path):
    block = http_block(page(2))
    bad = raw_record(response_headers(2, len(block) + 100), block)
    path, _ = write(tmp_path / "a.warc.gz", [response(1), bad, response(3)])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1), rid(3)]
    assert dict(r.stats.dropped) == {"truncated_record": 1}


def test_content_length_longer_than_the_data_plain_at_end(tmp_path):
    block = http_block(page(2))
    bad = raw_record(response_headers(2, len(block) + 100), block, gzip=False)
    path, _ = write(tmp_path / "a.warc", [response(1, gzip=False), bad])
    r = read(WarcSource, [path])
    assert r.ids == [rid(1)]
    assert dict(r.stats.dropped) == {"truncated_record": 1}


# --- charsets ----------------------------------------------------------------------------------------

FRENCH = (
    "<html><head><title>Le caf\u00e9</title></head><body><p>\u00c9l\u00e8ve \u00e0 l'\u00e9cole, "
    "tr\u00e8s pr\u00e9occup\u00e9 par la for\u00eat; o\u00f9 est le gar\u00e7on? No\u00ebl approche, "
    "\u00e7a c'est s\u00fbr. Les \u00e9l\u00e8ves \u00e9tudient le fran\u00e7ais \u00e0 la "
    "biblioth\u00e8que pr\u00e8s de la rivi\u00e8re. Ce co\u00fbte 5 \u20ac.</p></body></html>"
)
POLISH = (
    "<html><body><p>Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144. \u0141\u00f3d\u017a "
    "jest pi\u0119knym miastem, a Krak\u00f3w te\u017c. \u015awi\u0119tokrzyskie g\u00f3ry s\u0105 "
    "niskie.</p></body></html>"
)
UTF16_META = '<html><head><meta charset="utf-16"></head><body>caf\u00e9 \u65e5\u672c</body></html>'
QUOTES = "<html><body><p>Fr\u00e4ulein M\u00fcller sagt \u201eja\u201c und \u201cyes\u201d.</p></body></html>"


def _meta(html: str, tag: str) -> str:
    return html.replace("<html>", f"<html><head>{tag}</head>", 1)


CHARSET_CASES = {
    # name: (Content-Type, payload, expected text, expected charset)
    "header_windows_1252": ("text/html; charset=windows-1252", FRENCH.encode("cp1252"), FRENCH, "cp1252"),
    "header_iso_8859_1_is_windows_1252": (
        "text/html; charset=ISO-8859-1",
        QUOTES.encode("cp1252"),
        QUOTES,
        "cp1252",
    ),
    "header_quoted_label": (
        'text/html; charset="iso-8859-2"',
        POLISH.encode("iso-8859-2"),
        POLISH,
        "iso8859-2",
    ),
    "meta_charset": (
        "text/html",
        _meta(QUOTES, '<meta charset="iso-8859-1">').encode("cp1252"),
        _meta(QUOTES, '<meta charset="iso-8859-1">'),
        "cp1252",
    ),
    "meta_http_equiv": (
        None,
        _meta(FRENCH, '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">').encode(
            "cp1252"
        ),
        _meta(FRENCH, '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'),
        "cp1252",
    ),
    "undeclared_french_detected": ("text/html", FRENCH.encode("cp1252"), FRENCH, "cp1252"),
    "undeclared_polish_detected": ("text/html", POLISH.encode("cp1250"), POLISH, "cp1250"),
    "undeclared_utf8": ("text/html", POLISH.encode(), POLISH, "utf-8"),
    "mislabelled_utf8": ("text/html; charset=iso-8859-1", FRENCH.encode(), FRENCH, "utf-8"),
    "utf8_bom_overrides_label": (
        "text/html; charset=windows-1252",
        b"\xef\xbb\xbf" + FRENCH.encode(),
        FRENCH,
        "utf-8",
    ),
    "meta_utf16_means_utf8": ("text/html", UTF16_META.encode(), UTF16_META, "utf-8"),
    "header_utf16le": (
        "text/html; charset=utf-16le",
        UTF16_META.encode("utf-16-le"),
        UTF16_META,
        "utf-16-le",
    ),
}


@pytest.mark.parametrize("case", list(CHARSET_CASES))
def test_decode_html(case):
    content_type, payload, expected, charset = CHARSET_CASES[case]
    label = content_type.split("charset=")[1] if content_type and "charset=" in content_type else None
    text, used, replaced = decode_html(payload, label)
    assert text == expected
    assert used == charset
    assert not replaced


@pytest.mark.parametrize("label", ["base64", "zlib", "unicode_escape", "utf-7", "no-such-charset", ""])
def test_labels_that_are_no_web_charset_are_ignored(label):
    assert decode_html(FRENCH.encode(), label) == (FRENCH, "utf-8", False)
    assert decode_html(FRENCH.encode("cp1252"), label) == (FRENCH, "cp1252", False)


def test_mostly_utf8_with_a_bad_byte_stays_utf8():
    payload = POLISH.encode().replace(b"miastem", b"miast\xe9m")
    text, used, replaced = decode_html(payload, "utf-8")
    assert used == "utf-8" and replaced
    assert text == POLISH.replace("miastem", "miast\ufffdm")


def test_charsets_through_the_reader(tmp_path):
    parts = [
        response(n, payload, content_type=content_type)
        for n, (content_type, payload, _, _) in enumerate(CHARSET_CASES.values())
    ]
    path, _ = write(tmp_path / "a.warc.gz", parts)
    r = read(WarcSource, [path])
    assert [row["html"] for row in r.rows] == [c[2] for c in CHARSET_CASES.values()]
    assert [row["charset"] for row in r.rows] == [c[3] for c in CHARSET_CASES.values()]
    assert "\u00e9l\u00e8ves \u00e9tudient le fran\u00e7ais" in r.rows[0]["html"]
    assert r.stats.extra["charsets"] == dict(Counter(c[3] for c in CHARSET_CASES.values()))
    assert r.stats.extra["charsets"]["cp1252"] == 5
    assert "decode_replaced" not in r.stats.extra


# --- planning and byte-range splitting ----------------------------------------------------------------


def _clean_file(tmp_path: Path, n: int = 80) -> Path:
    parts = [other(0, "warcinfo")] + [response(i, page(i, 20 + (i * 37) % 400)) for i in range(1, n + 1)]
    path, _ = write(tmp_path / "clean.warc.gz", parts)
    return path


def test_plan(tmp_path):
    check_byte_range_plan(WarcSource, _clean_file(tmp_path))

    plain, _ = write(tmp_path / "p.warc", [response(i, gzip=False) for i in range(40)])
    assert plain.stat().st_size > 4096
    params = WarcSource.Params(paths=[str(plain)], split_bytes=4096)
    assert WarcSource(params).plan([str(plain)]) == [Shard(str(plain))]


@pytest.mark.parametrize("split", [4096, 4097, 5000, 6151, 9999, 16384])
def test_split_reading_equals_whole_reading(tmp_path, split):
    path = _clean_file(tmp_path)
    one = read(WarcSource, [path], shards=whole(path))
    assert one.ids == [rid(i) for i in range(1, 81)]
    many = read(WarcSource, [path], split_bytes=split)
    assert len(many.shards) > 2
    assert many.ids == one.ids
    assert many.rows == one.rows
    assert stats_view(many.stats) == stats_view(one.stats)


def _damaged_file(tmp_path: Path) -> tuple[Path, list[tuple[int, int]], list[str]]:
    """Valid members around damaged regions; returns the path, the damaged byte ranges and the
    ids a correct reader returns."""
    good = iter(range(100, 200))
    parts: list[tuple[bytes, bool]] = []  # (bytes, damaged)
    kept: list[str] = []

    def add_good(k: int) -> None:
        for _ in range(k):
            n = next(good)
            parts.append((response(n, page(n, 150)), False))
            kept.append(rid(n))

    bad_crc = bytearray(response(1, page(1, 300)))
    bad_crc[-8] ^= 0xFF
    add_good(8)
    parts.append((bytes(range(256)) * 12, True))  # 3 KiB of garbage
    add_good(4)
    truncated = response(2, page(2, 600))
    parts.append((truncated[: len(truncated) // 2], True))  # truncated member
    add_good(3)
    parts.append((bytes(bad_crc), True))
    add_good(3)
    parts.append((_corrupt("bad_length", True), True))
    add_good(2)
    parts.append((gzip_member(b"not a warc record\r\n" * 100) + b"\x00" * 700, True))
    add_good(3)
    last = response(3, page(3, 600))
    parts.append((last[: len(last) // 2], True))  # truncated at end of file
    path, offsets = write(tmp_path / "damaged.warc.gz", [p for p, _ in parts])
    regions = [(off, off + len(p)) for off, (p, bad) in zip(offsets, parts) if bad]
    return path, regions, kept


def test_damaged_file_whole_reading(tmp_path):
    path, _, kept = _damaged_file(tmp_path)
    r = read(WarcSource, [path], shards=whole(path))
    assert r.ids == kept
    assert dict(r.stats.dropped) == {"gzip_corrupt": 2, "corrupt_record": 1, "gzip_truncated": 1}
    assert r.stats.docs_in == len(kept) + 4


def test_split_reading_with_damage_straddling_shard_boundaries(tmp_path):
    path, regions, kept = _damaged_file(tmp_path)
    one = read(WarcSource, [path], shards=whole(path))
    assert one.ids == kept
    splits = {a + (b - a) // 2 for a, b in regions if a + (b - a) // 2 >= 4096}
    splits |= {a + 1 for a, _ in regions if a >= 4096} | {b - 1 for _, b in regions if b > 4097}
    splits |= set(range(4096, 14000, 641))
    straddled = set()
    for split in sorted(splits):
        many = read(WarcSource, [path], split_bytes=split)
        for start in (s.start for s in many.shards):
            straddled |= {(a, b) for a, b in regions if a < start < b}
        assert many.ids == one.ids, split
        assert stats_view(many.stats) == stats_view(one.stats), split
    assert straddled == {r for r in regions if r[1] > 4096 + 1}


# --- the bundled real sample ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_whole():
    return read(WarcSource, [SAMPLE], shards=whole(SAMPLE))


@needs_sample
def test_sample_reads_every_html_page(sample_whole):
    r = sample_whole
    assert len(r.rows) == 2371
    assert len(set(r.ids)) == 2371
    assert all(i.startswith("<urn:uuid:") for i in r.ids)
    assert r.stats.docs_in == 2400
    assert dict(r.stats.dropped) == {"not_html": 28, "record_type:warcinfo": 1}
    assert r.stats.extra["record_types"] == {"warcinfo": 1, "response": 2399}
    assert "garbage_bytes" not in r.stats.extra
    assert all(row["url"].startswith("http") and row["warc_date"] for row in r.rows)


@needs_sample
def test_sample_legacy_charsets_decode(sample_whole):
    charsets = sample_whole.stats.extra["charsets"]
    assert charsets["cp1252"] >= 20 and charsets["gb18030"] == 1
    assert not set(charsets) - {"utf-8", "cp1252", "cp1250", "iso8859-2", "gb18030"}
    by_url = {row["url"]: row for row in sample_whole.rows}
    polish = next(row for u, row in by_url.items() if "radiomaryja.pl" in u)
    assert polish["charset"] == "utf-8"  # declared UTF-8 with one stray byte: not re-detected
    assert "\u0142" in polish["html"]  # ł


@needs_sample
def test_sample_split_reading_equals_whole_reading(sample_whole):
    many = read(WarcSource, [SAMPLE], split_bytes=4 * 1024 * 1024)
    assert len(many.shards) >= 10
    assert many.ids == sample_whole.ids
    assert stats_view(many.stats) == stats_view(sample_whole.stats)
