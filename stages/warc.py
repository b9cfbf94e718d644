"""WARC reader: ``response`` records with an HTML payload -> rows (``id``, ``url``, ``warc_date``, ``html``).

warcio parses each record's headers and HTTP layer; the framing around it is ours, because
warcio's ``ArchiveIterator`` stops at the first corrupt gzip member or stray byte and cannot start
in the middle of a file.  Here:

* A gzip file is read member by member (one member per record, as the WARC spec recommends;
  a whole-file gzip is one big member and is streamed, never held in memory).  A member that
  fails to inflate or whose CRC is wrong is counted (``gzip_corrupt``, or ``gzip_truncated`` at
  end of file) and reading resynchronises at the next offset that starts a valid gzip member
  holding a WARC record.  The records of a member are passed on only once the member has been
  verified to its end (CRC), so a record is never both a document and a drop: a corrupt member
  drops the records it held under its reason.  A truncated member keeps its complete records
  (bytes before a cut inflate correctly) and counts the record the cut fell in.  Bytes skipped
  (stray bytes between members, the rest of a corrupt member) are counted in
  ``extra.garbage_bytes``.
* Inside a stream (a plain WARC or a member), bytes where a record should start that are not a
  ``WARC/`` version line are garbage: skipped up to the next version line and counted in
  ``extra.garbage_bytes``, not as a record.  A record whose headers do not parse (bad version
  line, missing or invalid ``Content-Length``, broken HTTP headers, ...) is ``corrupt_record``;
  a plain WARC resynchronises on the next version line, a gzip member is abandoned.
* A multi-member gzip file larger than ``split_bytes`` becomes several shards (Ray tasks).  A
  shard owns the members that *start* inside its byte range; it syncs to the first member at or
  after its start and reads past its end to finish its last member, so every record is read by
  exactly one task.  Plain (uncompressed) WARCs are one shard each: a payload may itself contain
  the text ``WARC/1.0``, so a byte offset cannot be resynchronised safely.
* ``split_bytes`` defaults to 4 MiB (``bench/split_size.py``, ``bench/README.md`` section 11).
  The plan depends only on the files, never on the cluster, because ``extract``'s trafilatura
  dedup memory lasts one task: the split changes the output a little.  On ``dev_web.warc.gz``
  (44.6 MB) on 2 cores, against the former 32 MiB (2 tasks of 29 and 61 CPU-s, one core idle
  for half the run): 4 MiB gives 11 tasks, 0.71-0.84x the wall time (modelled from per-task CPU;
  0.82x timed on a quieter day) and 4 more documents out of 2,252; 1 MiB is no faster on this
  file but keeps 52 more documents (weaker dedup) and makes ~1,000 parts per GB of input (4 MiB:
  ~250; 32 MiB: ~45).  Larger splits only pay on inputs with many files.
* Only ``response`` records with an HTML payload become rows; a non-HTML ``Content-Type`` is
  dropped (``not_html``) without reading its payload.  ``text/plain`` or a missing type is
  sniffed.  A record without ``WARC-Record-ID`` gets ``<winnow:FILE@MEMBER_OFFSET#N>`` (gzip)
  or ``<winnow:FILE#N>`` (plain), unique and stable across runs and splits.
* Charset: a byte-order mark, then the HTTP ``Content-Type`` charset, then a ``<meta>``
  declaration in the first 4 KiB, then strict UTF-8, then detection (uchardet through
  resiliparse, WHATWG names).  A payload declared as a single-byte charset that is valid,
  non-ASCII UTF-8 is UTF-8 (mislabelled pages are common; legacy text is practically never
  valid UTF-8).  Labels are mapped as browsers do (WHATWG: ISO-8859-1 and ASCII mean
  windows-1252; GB2312 means GB18030).  Bytes that still do not decode are replaced (U+FFFD)
  and counted in ``extra.decode_replaced``.
"""

from __future__ import annotations

import codecs
import functools
import importlib
import io
import os
import re
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline import storage
from pipeline.registry import register_source
from pipeline.source import InputParams, MiB, Shard, Source, byte_range_shards

GZIP_MAGIC = b"\x1f\x8b\x08"
CHUNK = 1 * MiB
PROBE_CHUNK = 16 * 1024  # compressed bytes fed per step when only probing a member's first bytes
PROBE_BLOCK = 256 * 1024  # range-read size when planning a remote file (its first member only)
VERSION_LINES = (b"WARC/1.0", b"WARC/1.1")
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
NOT_WEB_CHARSETS = {"unicode-escape", "raw-unicode-escape", "punycode", "idna", "utf-7", "undefined"}
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
HTML_SNIFF = re.compile(
    rb"^(\xef\xbb\xbf)?\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)
DETECT_BYTES = 128 * 1024

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
    split_bytes: int = Field(
        4 * MiB, ge=4096, description="target compressed bytes per task (see bench/README.md section 11)"
    )
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

    def __init__(self, f: io.BufferedReader, start: int, chunk: int = CHUNK) -> None:
        f.seek(start)
        self.f = f
        self.start = start
        self.chunk = chunk
        self.fed = 0
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        # Set when a corrupt record was already counted for this member and the rest of it
        # then failed to inflate: the member is bad, but needs no second drop.
        self.broken = False

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
                    chunk = self.f.read(self.chunk)
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
    f.seek(pos)
    if f.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
        return False
    member = _GzipMember(f, pos, PROBE_CHUNK)
    head = b""
    try:
        while len(head) < 5 and (more := member.read(5 - len(head))):
            head += more
    except (_BadMember, OSError):
        return False
    return head == b"WARC/"


def _next_member(f: io.BufferedReader, pos: int, limit: int | None, chunk: int = CHUNK) -> int | None:
    """First offset >= pos (and < limit) where a valid member starts, or None (scans ``chunk``
    bytes at a time)."""
    while limit is None or pos < limit:
        f.seek(pos)
        block = f.read(chunk + len(GZIP_MAGIC))
        if len(block) < len(GZIP_MAGIC):
            return None
        i = block.find(GZIP_MAGIC)
        while i != -1 and i < chunk:
            if limit is not None and pos + i >= limit:
                return None
            if _is_member_start(f, pos + i):
                return pos + i
            i = block.find(GZIP_MAGIC, i + 1)
        pos += chunk
    return None


def _is_multi_member(path: str) -> bool:
    """Is this gzip file split into members small enough to shard on (first one ends early)?"""
    with storage.open_input(path, block_size=PROBE_BLOCK) as f:
        member = _GzipMember(f, 0)  # type: ignore[arg-type]
        try:
            while member.fed < 8 * MiB and member.read(CHUNK):
                pass
        except _BadMember:
            return False
        return member.d.eof and member.end < storage.size(path)


def _normalise_charset(label: str | bytes | None) -> str | None:
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    label = label.strip().strip("'\"").lower()
    label = CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    # Python also has codecs that no web page can be in (base64, zlib, unicode_escape, utf-7...).
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_WEB_CHARSETS:
        return None
    return "utf-8" if info.name == "utf-8-sig" else info.name


@functools.lru_cache(maxsize=64)
def _is_single_byte(charset: str) -> bool:
    """Is ``charset`` a one-byte-per-character table (windows-125x, ISO-8859-x, KOI8, mac-*, ...)?"""
    try:
        module = importlib.import_module("encodings." + charset.replace("-", "_"))
    except ImportError:
        return False
    return hasattr(module, "decoding_table")


def decode_html(payload: bytes, header_charset: str | None) -> tuple[str, str, bool]:
    """Decode an HTML payload; returns (text, charset used, whether bytes had to be replaced)."""
    for bom, charset in BOMS:
        if payload.startswith(bom):
            text = payload[len(bom) :].decode(charset, errors="replace")
            return text, charset, "\ufffd" in text
    declared: list[str] = []
    meta = META_CHARSET.search(payload[:4096])
    for label, from_meta in ((header_charset, False), (meta.group(1) if meta else None, True)):
        charset = _normalise_charset(label)
        if charset and charset.startswith(("utf-16", "utf-32")) and (from_meta or b"\x00" not in payload):
            # A <meta> read as ASCII cannot be UTF-16 (WHATWG: it means UTF-8); nor can NUL-free bytes.
            charset = "utf-8"
        if charset and charset not in declared:
            declared.append(charset)
    candidates = list(declared)
    if declared and _is_single_byte(declared[0]) and not payload.isascii():
        candidates.insert(0, "utf-8")  # valid non-ASCII UTF-8 under a legacy label is mislabelled
    candidates.append("utf-8")
    tried: set[str] = set()
    for charset in candidates:
        if charset in tried:
            continue
        tried.add(charset)
        try:
            return payload.decode(charset), charset, False
        except UnicodeError:
            pass
    from resiliparse.parse.encoding import detect_encoding

    charset = _normalise_charset(detect_encoding(payload, max_len=DETECT_BYTES)) or "utf-8"
    try:
        return payload.decode(charset), charset, False
    except UnicodeError:
        return payload.decode(charset, errors="replace"), charset, True


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
        """Byte ranges of multi-member gzip WARCs, whole files otherwise.

        A remote ``*.warc.gz`` is taken to be multi-member without probing it (the WARC spec's
        recommendation, and Common Crawl's layout), and the sizes of remote files are asked 16 at
        a time: planning 90,000 Common Crawl files costs one HEAD each, not three sequential
        requests.  Were such a file one whole-file gzip member, shard 0 would still read all of it
        (a shard finishes the member it starts) and the others would find no member to start:
        the same documents, with wasted reads."""
        remote = [f for f in files if storage.is_remote(f)]
        if remote:
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(storage.size, remote))  # cached for byte_range_shards below
        shards: list[Shard] = []
        for path in files:
            assumed = storage.is_remote(path) and path.endswith(".warc.gz")
            if assumed or (_is_gzip(path) and _is_multi_member(path)):
                shards += byte_range_shards(path, self.params.split_bytes)
            else:
                shards.append(Shard(path))
        return shards

    def read(self, shard: Shard) -> Iterator[pa.RecordBatch]:
        from warcio.recordloader import ArcWarcRecordLoader

        self._loader = ArcWarcRecordLoader()
        self.stats.bytes_in += (shard.end or storage.size(shard.path)) - shard.start
        if _is_gzip(shard.path):
            records = self._gzip_records(shard)
        elif shard.start > 0:  # a plain WARC planned as ranges by its name (remote): shard 0 reads it all
            return
        else:
            records = self._plain_records(shard)

        def counted(rows: Iterator[dict]) -> Iterator[dict]:
            for row in rows:
                self.stats.docs_out += 1
                self.stats.bytes_out += len(row["html"].encode("utf-8", "surrogatepass"))
                yield row

        yield from self.batches(
            counted(records), "html", lambda rows: pa.RecordBatch.from_pylist(rows, SCHEMA)
        )

    # --- framing -------------------------------------------------------------------------------

    _in_record = False  # inside a record of the member being read (for a failure's accounting)
    _record_mark = 0  # docs_in when that record started

    def _drop(self, reason: str) -> None:
        self.stats.docs_in += 1
        self.stats.dropped[reason] += 1

    def _gzip_records(self, shard: Shard) -> Iterator[dict]:
        size = storage.size(shard.path)
        end = size if shard.end is None else shard.end
        name = os.path.basename(shard.path)
        # Range reads of about half a shard (1 MiB at most): a task fetches its range plus the
        # rest of its last member, not a fixed 1 MiB per tiny shard.
        block = min(storage.READ_BLOCK, max(16 * 1024, (end - shard.start) // 2))
        chunk = block if storage.is_remote(shard.path) else CHUNK  # inflate no further ahead than that
        with self.open(shard.path, block_size=block) as f:
            if shard.start == 0:
                pos = 0 if _is_member_start(f, 0) else self._resync(f, 0)
            else:
                pos = _next_member(f, shard.start, end, chunk)
            while pos is not None and pos < end:
                member = _GzipMember(f, pos, chunk)
                stream = io.BufferedReader(member, CHUNK)
                pending: list[dict] = []
                mark = self.stats.docs_in  # records counted since rows were last passed on
                self._in_record = False
                failure: _BadMember | None = None
                try:
                    for row in self._records_in(stream, f"{name}@{pos}"):
                        if row is not None:
                            pending.append(row)
                        if len(pending) >= self.BATCH_ROWS:
                            # A whole-file gzip is one member: do not hold a file's worth of rows.
                            yield from pending
                            pending, mark = [], self.stats.docs_in
                    while stream.read(CHUNK):  # finish the member: its CRC, and where it ends
                        pass
                except _BadMember as exc:
                    failure = exc
                if failure is None and not member.broken:
                    yield from pending
                    pos = member.end
                    if pos < size and not _is_member_start(f, pos):
                        pos = self._resync(f, pos)
                    continue
                truncated = isinstance(failure, _Truncated)
                reason = "gzip_truncated" if truncated else "gzip_corrupt"
                if truncated:
                    yield from pending  # bytes before a cut inflate correctly: complete records stand
                else:
                    self.stats.dropped[reason] += len(pending)  # unverified; docs_in counted them
                cut_record = self._in_record and self.stats.docs_in == self._record_mark
                if cut_record or (not pending and self.stats.docs_in == mark):
                    self._drop(reason)  # the record the failure fell in, or the member itself
                if truncated:
                    return
                pos = self._resync(f, pos, search_from=pos + 1)

    def _resync(self, f: io.BufferedReader, pos: int, search_from: int | None = None) -> int | None:
        """Skip bytes from ``pos`` to the next valid member (which may lie past the shard's end)."""
        nxt = _next_member(f, pos if search_from is None else search_from, None)
        stop = nxt if nxt is not None else storage.size(f.name)
        if stop > pos:
            self.stats.count("garbage_bytes", stop - pos)
        return nxt

    def _plain_records(self, shard: Shard) -> Iterator[dict]:
        with self.open(shard.path, raw=True) as f:
            stream = io.BufferedReader(f, CHUNK)  # type: ignore[arg-type]
            for row in self._records_in(stream, os.path.basename(shard.path)):
                if row is not None:
                    yield row

    # --- records -------------------------------------------------------------------------------

    def _records_in(self, stream: io.BufferedReader, where: str) -> Iterator[dict | None]:
        """Parse consecutive records from ``stream`` until it ends (``None`` for a dropped one)."""
        in_member = isinstance(stream.raw, _GzipMember)
        n = 0
        line = b""
        while True:
            if not line:
                line = _first_line(stream)
                if not line:
                    return
            if not line.startswith(b"WARC/"):
                line = self._skip_garbage(stream, line)
                continue
            self._in_record, self._record_mark = True, self.stats.docs_in
            try:
                record = self._loader.parse_record_stream(stream, statusline=line, known_format="warc")
                length = record.rec_headers.get_header("Content-Length")
                if length is None or not length.strip().isdigit():
                    raise ValueError(f"invalid Content-Length {length!r}")
            except _BadMember:
                raise
            except Exception:  # warcio raises ValueError, AttributeError, ... on broken headers
                self._in_record = False
                self._drop("corrupt_record")
                if in_member:
                    # Members are the reliable framing: the rest of this one is the broken record.
                    try:
                        while stream.read(CHUNK):
                            pass
                    except _BadMember:
                        stream.raw.broken = True  # type: ignore[attr-defined]
                    return
                line = self._skip_garbage(stream, b"")
                continue
            yield self._row(record, f"{where}#{n}")
            n += 1
            _drain(record.raw_stream)
            self._in_record = False
            line = b""

    def _skip_garbage(self, stream: io.BufferedReader, line: bytes) -> bytes:
        """Skip lines up to the next WARC version line (returned), counting the bytes skipped."""
        skipped = 0
        while True:
            if not line:
                line = stream.readline(CHUNK)
                if not line:
                    break
            body = line.rstrip(b"\r\n")
            version = next((v for v in VERSION_LINES if body.endswith(v)), None)
            if version is not None and line.endswith(b"\n"):
                cut = len(body) - len(version)
                skipped += cut
                line = line[cut:]
                break
            skipped += len(line)
            line = b""
        if skipped:
            self.stats.count("garbage_bytes", skipped)
        return line

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
        sniff = mime is None or mime == "text/plain"
        if mime not in HTML_MIMES and not sniff:
            self._drop("not_html")  # decided on the header alone: the payload is never read
            self.stats.count(mime or "none", group="not_html_mime")
            return None
        limit = self.params.max_payload_bytes
        try:
            payload = record.content_stream().read(limit + 1)
        except _BadMember:
            raise
        except Exception:  # a broken chunked/gzip transfer encoding inside the record
            self._drop("corrupt_payload")
            return None
        if getattr(record.raw_stream, "limit", 0) > 0 and len(payload) <= limit:
            # Content-Length promised more bytes than the record holds.
            self._drop("truncated_record")
            return None
        if len(payload) > limit:
            self._drop("too_large")
            return None
        if sniff and not HTML_SNIFF.match(payload[:1024]):
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


def _first_line(stream: io.BufferedReader) -> bytes:
    """The next line that is not blank (records are separated by CRLF CRLF), or b"" at the end."""
    while True:
        line = stream.readline(CHUNK)
        if not line or line.strip(b"\r\n"):
            return line


def _drain(raw) -> None:
    while raw.read(CHUNK):
        pass


def _is_gzip(path: str) -> bool:
    """gzip magic at the start, or a ``.gz`` name on a file that does not start as a plain WARC
    (a gzip WARC whose first bytes are garbage)."""
    with storage.open_input(path, block_size=PROBE_BLOCK) as f:
        head = f.read(5)
    return head[:2] == GZIP_MAGIC[:2] or (path.endswith(".gz") and not head.startswith(b"WARC/"))
