"""Builds small WARC files for the reader tests, and reads any input source back with its stats.

Records are built as bytes with warcio's ``WARCWriter`` (one gzip member each, or plain), so a
test can put garbage between them, cut one short or corrupt it, and knows every byte offset.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.source import Shard, Source
from pipeline.stage import StageStats

WORDS = [
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"),
    *("kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"),
    *("uniform", "victor", "whiskey", "xray", "yankee", "zulu", "river", "stone", "cloud", "garden"),
    *("window", "paper", "engine", "market", "summer", "winter", "harbour", "signal", "letter"),
]


def rid(n: int) -> str:
    return f"<urn:uuid:00000000-0000-4000-8000-{n:012d}>"


def url(n: int) -> str:
    return f"https://site{n}.example.org/articles/{n}.html"


def date(n: int) -> str:
    return f"2024-03-{1 + n % 28:02d}T10:{n % 60:02d}:00Z"


def page(n: int, words: int = 60, seed: int | None = None) -> bytes:
    """A small, distinct UTF-8 HTML page; ``words`` controls its size."""
    rng = random.Random(n if seed is None else seed)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return (
        f"<!DOCTYPE html><html><head><title>Page {n}</title></head>"
        f"<body><h1>Page {n}</h1><p>{body}</p></body></html>"
    ).encode()


def response(
    n: int,
    body: bytes | None = None,
    *,
    gzip: bool = True,
    content_type: str | None = "text/html; charset=utf-8",
    status: str = "200 OK",
    http_headers: Iterable[tuple[str, str]] = (),
    record_url: str | None = None,
) -> bytes:
    """One ``response`` record (``WARC-Record-ID`` = ``rid(n)``) as bytes."""
    headers = [("Content-Type", content_type)] if content_type is not None else []
    headers += list(http_headers)
    http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    body = page(n) if body is None else body
    return _write(
        gzip,
        lambda w: w.create_warc_record(
            record_url or url(n),
            "response",
            payload=io.BytesIO(body),
            length=len(body),  # a known length: warcio then needs no temporary file
            http_headers=http,
            warc_headers_dict={"WARC-Record-ID": rid(n), "WARC-Date": date(n)},
        ),
    )


def other(n: int, rec_type: str, *, gzip: bool = True) -> bytes:
    """A record of another type: warcinfo, request, metadata, resource, revisit, conversion."""
    headers = {"WARC-Record-ID": rid(n), "WARC-Date": date(n)}
    if rec_type == "warcinfo":
        info = b"software: winnow-tests\r\nformat: WARC File Format 1.0\r\n"
        return _write(
            gzip,
            lambda w: w.create_warc_record(
                None,
                "warcinfo",
                payload=io.BytesIO(info),
                length=len(info),
                warc_content_type="application/warc-fields",
                warc_headers_dict=headers,
            ),
        )
    if rec_type == "request":
        http = StatusAndHeaders("GET /x HTTP/1.1", [("Host", "example.org")], is_http_request=True)
        return _write(
            gzip,
            lambda w: w.create_warc_record(
                url(n),
                "request",
                payload=io.BytesIO(b""),
                length=0,
                http_headers=http,
                warc_headers_dict=headers,
            ),
        )
    # metadata / resource / conversion carry an HTML-looking block, to prove the type decides
    return _write(
        gzip,
        lambda w: w.create_warc_record(
            url(n),
            rec_type,
            payload=io.BytesIO(page(n)),
            length=len(page(n)),
            warc_content_type="text/html",
            warc_headers_dict=headers,
        ),
    )


def raw_record(headers: list[str], block: bytes, *, gzip: bool = True) -> bytes:
    """A record written by hand (for broken headers): version line + headers + block."""
    data = ("\r\n".join(headers) + "\r\n\r\n").encode() + block + b"\r\n\r\n"
    return gzip_member(data) if gzip else data


def http_block(body: bytes, content_type: str = "text/html; charset=utf-8", status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body


def response_headers(n: int, length: int, *, uri: bool = True) -> list[str]:
    lines = ["WARC/1.0", "WARC-Type: response", f"WARC-Record-ID: {rid(n)}", f"WARC-Date: {date(n)}"]
    if uri:
        lines.append(f"WARC-Target-URI: {url(n)}")
    lines += ["Content-Type: application/http; msgtype=response", f"Content-Length: {length}"]
    return lines


def gzip_member(data: bytes) -> bytes:
    import gzip as gz

    return gz.compress(data, mtime=0)


def _write(gzip: bool, make) -> bytes:
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=gzip, warc_version="1.0")
    writer.write_record(make(writer))
    return buf.getvalue()


def write(path: Path, parts: Iterable[bytes]) -> tuple[Path, list[int]]:
    """Write ``parts`` back to back; returns the path and each part's start offset."""
    offsets, pos = [], 0
    with open(path, "wb") as f:
        for part in parts:
            offsets.append(pos)
            f.write(part)
            pos += len(part)
    return path, offsets


# --- reading -----------------------------------------------------------------------------------


@dataclass
class Read:
    rows: list[dict]
    stats: StageStats
    shards: list[Shard]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]


def check_invariant(stats: StageStats) -> None:
    assert stats.docs_in - stats.docs_out == sum(stats.dropped.values()), stats
    assert all(v > 0 for v in stats.dropped.values()), stats.dropped


def read(source_cls: type[Source], paths: list, shards: list[Shard] | None = None, **params) -> Read:
    """Read every shard (``plan()``'s unless given) with a fresh source each, as tasks would;
    check the stats invariant per shard and merged, and return rows in shard order."""
    p = source_cls.Params(paths=[str(x) for x in paths], **params)
    if shards is None:
        shards = source_cls(p).plan(p.paths)
    total = StageStats("read")
    rows: list[dict] = []
    for shard in shards:
        source = source_cls(p)
        n = 0
        for batch in source.read(shard):
            assert batch.num_rows > 0
            rows += batch.to_pylist()
            n += batch.num_rows
        assert source.stats.docs_out == n
        check_invariant(source.stats)
        total.merge(source.stats)
    check_invariant(total)
    return Read(rows, total, shards)


def whole(path: Path) -> list[Shard]:
    return [Shard(str(path))]


def check_byte_range_plan(source_cls: type[Source], path: Path, split_bytes: int = 4096) -> None:
    """``plan()`` cuts ``path`` into contiguous ranges of ``split_bytes``; the default is one shard."""
    import itertools

    shards = source_cls(source_cls.Params(paths=[str(path)], split_bytes=split_bytes)).plan([str(path)])
    assert len(shards) == -(-path.stat().st_size // split_bytes)
    assert shards[0].start == 0 and shards[-1].end is None
    assert all(a.end == b.start for a, b in itertools.pairwise(shards))
    assert source_cls(source_cls.Params(paths=[str(path)])).plan([str(path)]) == [Shard(str(path))]
