"""WARC reader: ``response`` records with an HTML payload -> rows (``id``, ``url``, ``warc_date``, ``html``).

warcio parses each record's headers and HTTP layer; the framing around it is ours, because
warcio's ``ArchiveIterator`` stops at the first corrupt gzip member or stray byte and cannot start
in the middle of a file.  Here:

* A gzip file is read member by member (one member per record, as the WARC spec recommends;
  a whole-file gzip is one big member and is streamed, never held in memory).  A member that
  fails to inflate or whose CRC is wrong is counted (``gzip_corrupt``, or ``gzip_truncated`` at
  end of file) and reading resynchronises at the next offset that starts a valid gzip member
  holding a WARC record.  Bytes skipped that way are counted in ``extra.garbage_bytes``.
* A multi-member gzip file larger than ``split_bytes`` becomes several shards (Ray tasks).  A
  shard owns the members that *start* inside its byte range; it syncs to the first member at or
  after its start and reads past its end to finish its last member, so every record is read by
  exactly one task.  Plain (uncompressed) WARCs are one shard each: a payload may itself contain
  the text ``WARC/1.0``, so a byte offset cannot be resynchronised safely.
* Charset: the HTTP ``Content-Type`` charset, then a ``<meta>`` declaration in the first 4 KiB,
  then detection (charset-normalizer).  Labels are mapped as browsers do (WHATWG: ISO-8859-1
  and ASCII mean windows-1252; GB2312 means GB18030).  Bytes that still do not decode are
  replaced (U+FFFD) and counted in ``extra.decode_replaced``.
"""

from __future__ import annotations

import io
import os
import re
import zlib
from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.registry import register_source
from pipeline.source import BatchBuilder, InputParams, MiB, Shard, Source, byte_range_shards

GZIP_MAGIC = b"\x1f\x8b\x08"
CHUNK = 1 * MiB
HTML_MIMES = {"text/html", "application/xhtml+xml", "application/xml+xhtml"}
# WHATWG encoding labels that differ from Python's codec of the same name.
CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "x-sjis": "shift_jis",
    "utf8": "utf-8",
}
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("warc_date", pa.string()),
        ("charset", pa.string()),
        ("html", pa.string()),
    ]
)


class WarcParams(InputParams):
    format: Literal["warc"] = "warc"
    split_bytes: int = Field(32 * MiB, ge=4096, description="target compressed bytes per task")
    max_payload_bytes: int = Field(
        64 * MiB, ge=1024, description="larger HTTP payloads are dropped as too_large without being held"
    )
    only_2xx: bool = Field(True, description="drop responses whose HTTP status is not 2xx")


class _BadMember(Exception):
    """The gzip member being read does not inflate (bad data or CRC)."""


class _Truncated(_BadMember):
    """The file ends inside a gzip member."""


class _GzipMember(io.RawIOBase):
    """The inflated bytes of one gzip member starting at ``start``, streamed."""

    def __init__(self, f: io.BufferedReader, start: int) -> None:
        f.seek(start)
        self.f = f
        self.start = start
        self.fed = 0
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = len(b)
        while True:
            if self.d.eof:
                return 0
            try:
                if self.d.unconsumed_tail:
                    out = self.d.decompress(self.d.unconsumed_tail, n)
                else:
                    chunk = self.f.read(CHUNK)
                    if not chunk:
                        raise _Truncated()
                    self.fed += len(chunk)
                    out = self.d.decompress(chunk, n)
            except zlib.error as exc:
                raise _BadMember(str(exc)) from None
            if out:
                b[: len(out)] = out
                return len(out)

    @property
    def end(self) -> int:
        """File offset just past this member (valid once fully read)."""
        return self.start + self.fed - len(self.d.unused_data)


def _is_member_start(f: io.BufferedReader, pos: int) -> bool:
    """Does a gzip member holding a WARC record start at ``pos``?"""
    try:
        head = _GzipMember(f, pos).read(8)
    except (_BadMember, OSError):
        return False
    return head.startswith(b"WARC/")


def _next_member(f: io.BufferedReader, pos: int, limit: int | None) -> int | None:
    """First offset >= pos (and < limit) where a valid member starts, or None."""
    while limit is None or pos < limit:
        f.seek(pos)
        block = f.read(CHUNK + len(GZIP_MAGIC))
        if len(block) < len(GZIP_MAGIC):
            return None
        i = block.find(GZIP_MAGIC)
        while i != -1 and i < CHUNK:
            if limit is not None and pos + i >= limit:
                return None
            if _is_member_start(f, pos + i):
                return pos + i
            i = block.find(GZIP_MAGIC, i + 1)
        pos += CHUNK
    return None


def _is_multi_member(path: str) -> bool:
    """Is this gzip file split into members small enough to shard on (first one ends early)?"""
    with open(path, "rb") as f:
        member = _GzipMember(f, 0)
        try:
            while member.fed < 8 * MiB and member.read(CHUNK):
                pass
        except _BadMember:
            return False
        return member.d.eof and member.end < os.path.getsize(path)


def _normalise_charset(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("'\"").lower()
    label = CHARSET_ALIASES.get(label, label)
    try:
        import codecs

        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_html(payload: bytes, header_charset: str | None) -> tuple[str, str, bool]:
    """Decode an HTML payload; returns (text, charset used, whether bytes had to be replaced)."""
    tried = []
    meta = META_CHARSET.search(payload[:4096])
    for label in (header_charset, meta.group(1).decode("ascii", "replace") if meta else None):
        charset = _normalise_charset(label)
        if charset and charset not in tried:
            tried.append(charset)
            try:
                return payload.decode(charset), charset, False
            except UnicodeDecodeError:
                pass
    if "utf-8" not in tried:
        try:
            return payload.decode("utf-8"), "utf-8", False
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(payload[: 256 * 1024]).best()
    charset = _normalise_charset(best.encoding) if best else None
    if charset:
        text = payload.decode(charset, errors="replace")
        return text, charset, "\ufffd" in text
    return payload.decode("utf-8", errors="replace"), "utf-8", True


def _mime_and_charset(content_type: str | None) -> tuple[str | None, str | None]:
    if not content_type:
        return None, None
    parts = [p.strip() for p in content_type.split(";")]
    charset = None
    for p in parts[1:]:
        if p.lower().startswith("charset="):
            charset = p.split("=", 1)[1]
    return parts[0].lower() or None, charset


@register_source
class WarcSource(Source):
    format = "warc"
    Params = WarcParams

    def plan(self, files: list[str]) -> list[Shard]:
        shards: list[Shard] = []
        for path in files:
            if _is_gzip(path) and _is_multi_member(path):
                shards += byte_range_shards(path, self.params.split_bytes)
            else:
                shards.append(Shard(path))
        return shards

    def read(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        from warcio.recordloader import ArcWarcRecordLoader

        self._loader = ArcWarcRecordLoader()
        builder = BatchBuilder(SCHEMA, self.BATCH_ROWS, self.BATCH_BYTES)
        self.stats.bytes_in += (shard.end or os.path.getsize(shard.path)) - shard.start
        records = self._gzip_records(shard) if _is_gzip(shard.path) else self._plain_records(shard)
        for row in records:
            if row is None:
                continue
            self.stats.docs_out += 1
            self.stats.bytes_out += len(row["html"].encode("utf-8", "surrogatepass"))
            batch = builder.add(row, len(row["html"]))
            if batch is not None:
                yield batch
        batch = builder.flush()
        if batch is not None:
            yield batch

    # --- framing -------------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.stats.docs_in += 1
        self.stats.dropped[reason] += 1

    def _gzip_records(self, shard: Shard) -> Iterator[dict | None]:
        size = os.path.getsize(shard.path)
        end = size if shard.end is None else shard.end
        with open(shard.path, "rb") as f:
            pos = 0 if shard.start == 0 else _next_member(f, shard.start, end)
            if pos == 0 and not _is_member_start(f, 0):
                pos = self._resync(f, 0, end)
            while pos is not None and pos < end:
                member = _GzipMember(f, pos)
                stream = io.BufferedReader(member, CHUNK)
                try:
                    yield from self._records_in(stream, f"{shard.path}@{pos}")
                    while stream.read(CHUNK):  # finish the member to learn where it ends
                        pass
                except _Truncated:
                    self._drop("gzip_truncated")
                    return
                except _BadMember:
                    self._drop("gzip_corrupt")
                    pos = self._resync(f, pos + 1, end)
                    continue
                pos = member.end
                if pos < size:
                    f.seek(pos)
                    if f.read(len(GZIP_MAGIC)) != GZIP_MAGIC or not _is_member_start(f, pos):
                        pos = self._resync(f, pos, end)

    def _resync(self, f: io.BufferedReader, pos: int, end: int) -> int | None:
        """Skip garbage from ``pos`` to the next valid member (which may lie past ``end``)."""
        nxt = _next_member(f, pos, None)
        stop = nxt if nxt is not None else os.path.getsize(f.name)
        self.stats.count("garbage_bytes", max(0, stop - pos))
        return nxt

    def _plain_records(self, shard: Shard) -> Iterator[dict | None]:
        with open(shard.path, "rb") as f:
            stream: io.BufferedReader = io.BufferedReader(f, CHUNK)  # type: ignore[arg-type]
            while True:
                try:
                    yield from self._records_in(stream, shard.path)
                    return
                except _CorruptRecord:
                    # Resync on the next line that is a WARC record's version line.
                    skipped = 0
                    while (line := stream.readline()) and line.rstrip() not in (b"WARC/1.0", b"WARC/1.1"):
                        skipped += len(line)
                    self.stats.count("garbage_bytes", skipped)
                    if not line:
                        return
                    stream = _Prepend(line, stream)

    # --- records -------------------------------------------------------------------------------

    def _records_in(self, stream: io.BufferedReader, where: str) -> Iterator[dict | None]:
        """Parse consecutive records from ``stream`` until it ends."""
        from warcio.recordloader import ArchiveLoadFailed
        from warcio.statusandheaders import StatusAndHeadersParserException

        while True:
            _skip_blank_lines(stream)
            if not stream.peek(1):
                return
            try:
                record = self._loader.parse_record_stream(stream, known_format="warc")
            except (ArchiveLoadFailed, StatusAndHeadersParserException, ValueError) as exc:
                self._drop("corrupt_record")
                if not isinstance(stream.raw, _GzipMember):
                    raise _CorruptRecord() from exc
                while stream.read(CHUNK):  # the rest of this member is the broken record
                    pass
                return
            yield self._row(record, where)
            _drain(record.raw_stream)

    def _row(self, record, where: str) -> dict | None:
        rec_type = record.rec_type or "unknown"
        self.stats.count(rec_type, group="record_types")
        if rec_type != "response":
            self._drop(f"record_type:{rec_type}")
            return None
        http = record.http_headers
        if http is None:
            self._drop("no_http_headers")
            return None
        status = http.get_statuscode() or ""
        if self.params.only_2xx and not status.startswith("2"):
            self._drop("http_status")
            self.stats.count(status or "none", group="http_status")
            return None
        mime, charset = _mime_and_charset(http.get_header("Content-Type"))
        limit = self.params.max_payload_bytes
        try:
            payload = record.content_stream().read(limit + 1)
        except _BadMember:
            raise
        except Exception:  # a broken chunked/gzip transfer encoding inside the record
            self._drop("corrupt_payload")
            return None
        if record.raw_stream.limit > 0 and len(payload) <= limit:
            # Content-Length promised more bytes than the record holds.
            self._drop("truncated_record")
            return None
        if len(payload) > limit:
            self._drop("too_large")
            return None
        if mime not in HTML_MIMES and not (mime in (None, "text/plain") and HTML_SNIFF.match(payload[:1024])):
            self._drop("not_html")
            self.stats.count(mime or "none", group="not_html_mime")
            return None
        if not payload.strip():
            self._drop("empty_payload")
            return None
        html, used, replaced = decode_html(payload, charset)
        self.stats.count(used, group="charsets")
        if replaced:
            self.stats.count("decode_replaced")
        self.stats.docs_in += 1
        rec_id = record.rec_headers.get_header("WARC-Record-ID") or f"<winnow:{where}>"
        return {
            "id": rec_id,
            "url": record.rec_headers.get_header("WARC-Target-URI"),
            "warc_date": record.rec_headers.get_header("WARC-Date"),
            "charset": used,
            "html": html,
        }


class _CorruptRecord(Exception):
    """A record in a plain WARC did not parse; the reader resyncs on the next version line."""


class _Prepend(io.BufferedReader):
    """A stream with ``head`` pushed back in front of ``stream`` (used after a resync)."""

    def __init__(self, head: bytes, stream: io.BufferedReader) -> None:
        super().__init__(_Concat(head, stream), CHUNK)  # type: ignore[arg-type]


class _Concat(io.RawIOBase):
    def __init__(self, head: bytes, stream: io.BufferedReader) -> None:
        self.head = head
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.stream.read1(len(b))
        b[: len(data)] = data
        return len(data)


def _skip_blank_lines(stream: io.BufferedReader) -> None:
    while True:
        head = stream.peek(2)[:2]
        if head == b"\r\n":
            stream.read(2)
        elif head[:1] == b"\n":
            stream.read(1)
        else:
            return


def _drain(raw) -> None:
    while raw.read(CHUNK):
        pass


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC[:2]
