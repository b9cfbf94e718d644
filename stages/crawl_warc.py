"""The crawler's WARC output: gzip member per record, committed sizes, rotation, revisits.

* Each fetch's records (``request`` + ``response``, or ``request`` + ``revisit``) are built in
  memory with warcio's ``WARCWriter`` (gzip: one member per record, the WARC spec's
  recommendation, which lets winnow's reader split and resynchronise), then appended to the
  current file in one ``write``.  The size after the write is the *committed* size, which the
  crawl journal records once the fetch is done (``sync`` fsyncs before the journal is; see
  crawl_frontier).  On resume every file is truncated to its committed size (a file the journal
  never committed is removed), so a kill mid-write leaves no partial record and no record of a
  fetch the journal does not know about.
* Files are named ``PREFIX-NNNNN.warc.gz`` and rotated once a file passes ``max_bytes``; each
  starts with a ``warcinfo`` record holding the crawl's configuration.
* The ``response`` record's block is the raw bytes received (see crawl_fetch); the ``request``
  record is the bytes sent; both carry ``WARC-IP-Address`` and the request names the response
  in ``WARC-Concurrent-To``.
* Revisits: warcio's payload digest (sha1, base32) of every stored 2xx response is remembered
  with its URI and date; a later response with the same digest is stored as a ``revisit``
  record (profile identical-payload-digest, ``WARC-Refers-To-Target-URI`` / ``-Date``, the HTTP
  headers only) instead of a second copy.
"""

from __future__ import annotations

import io
import json
from datetime import UTC
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date
from warcio.warcwriter import WARCWriter

from pipeline.atomic import fsync_open, fsync_path


def _iso(ts: float) -> str:
    from datetime import datetime

    return datetime_to_iso_date(datetime.fromtimestamp(ts, tz=UTC).replace(tzinfo=None), use_micros=True)


class WarcOut:
    def __init__(self, folder: Path, prefix: str, max_bytes: int, info: dict) -> None:
        self.folder = folder
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.info = info
        self.sizes: dict[str, int] = {}  # file name -> committed size
        self.digests: dict[str, tuple[str, str]] = {}  # payload digest -> (uri, WARC-Date)
        self.current: str | None = None
        self._f = None
        self._new_entry = False

    # --- resume ----------------------------------------------------------------------------------
    def restore(self, sizes: dict[str, int], digests: dict[str, tuple[str, str]]) -> None:
        """Cut every file back to its committed size; remove files never committed."""
        folder_files = sorted(p.name for p in self.folder.glob(f"{self.prefix}-*.warc.gz"))
        for name in folder_files:
            path = self.folder / name
            if sizes.get(name, 0) == 0:
                path.unlink()
            elif path.stat().st_size != sizes[name]:
                with open(path, "r+b") as f:
                    f.truncate(sizes[name])
        self.sizes = {k: v for k, v in sizes.items() if v > 0}
        self.digests = dict(digests)
        if self.sizes:
            self.current = max(self.sizes)

    # --- writing ---------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.current is None or self.sizes.get(self.current, 0) >= self.max_bytes:
            seq = 1 + max((int(n.rsplit("-", 1)[1].split(".")[0]) for n in self.sizes), default=-1)
            self.current = f"{self.prefix}-{seq:05d}.warc.gz"
            if self._f is not None:
                self.sync()  # the finished file is durable before the journal moves on
                self._f.close()
            self._f = None
        if self._f is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._f = open(self.folder / self.current, "ab")  # noqa: SIM115 (kept open)

    def write_exchange(
        self,
        url: str,
        raw_request: bytes,
        raw_response: bytes | None,
        peer_ip: str,
        started: float,
        status: int,
    ) -> dict:
        """Append the records of one fetch; returns what the journal keeps: ``{"warc": {name:
        committed size}}`` plus ``digest`` ([digest, uri, date]) for a newly stored 2xx payload,
        and ``revisit: True`` when the payload was a duplicate."""
        self._open()
        assert self.current is not None
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=True, warc_version="1.1")
        if self.sizes.get(self.current, 0) == 0:
            writer.write_record(
                writer.create_warcinfo_record(
                    self.current,
                    {
                        "software": "winnow crawl",
                        "format": "WARC File Format 1.1",
                        "winnow-crawl-config": json.dumps(self.info, sort_keys=True),
                    },
                )
            )
        date = _iso(started)
        out: dict = {}
        headers = {"WARC-Date": date, "WARC-IP-Address": peer_ip}
        response = None
        if raw_response is not None:
            response = writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(raw_response),
                length=len(raw_response),
                warc_headers_dict=dict(headers),
            )
            writer.ensure_digest(response, block=True, payload=True)
            digest = response.rec_headers.get_header("WARC-Payload-Digest")
            if 200 <= status < 300 and digest:
                if digest in self.digests:
                    ref_uri, ref_date = self.digests[digest]
                    head = raw_response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                    http_headers = _parse_http_headers(head)
                    response = writer.create_revisit_record(
                        url, digest, ref_uri, ref_date, http_headers=http_headers
                    )
                    response.rec_headers.replace_header("WARC-Date", date)
                    response.rec_headers.add_header("WARC-IP-Address", peer_ip)
                    out["revisit"] = True
                else:
                    self.digests[digest] = (url, date)
                    out["digest"] = [digest, url, date]
        request = writer.create_warc_record(
            url,
            "request",
            payload=io.BytesIO(raw_request),
            length=len(raw_request),
            warc_headers_dict=dict(headers),
        )
        if response is not None:
            request.rec_headers.add_header(
                "WARC-Concurrent-To", response.rec_headers.get_header("WARC-Record-ID")
            )
            writer.write_record(response)
        writer.write_record(request)
        data = buf.getvalue()
        assert self._f is not None
        self._f.write(data)
        self._f.flush()
        if self.sizes.get(self.current, 0) == 0:
            self._new_entry = True
        self.sizes[self.current] = self.sizes.get(self.current, 0) + len(data)
        out["warc"] = {self.current: self.sizes[self.current]}
        return out

    def sync(self) -> None:
        """fsync the current file (and the folder after a new file): before the journal's fsync."""
        if self._f is not None:
            fsync_open(self._f)
        if self._new_entry:
            fsync_path(self.folder)
            self._new_entry = False

    def close(self) -> None:
        if self._f is not None:
            self.sync()
            self._f.close()
            self._f = None

    def files(self) -> list[Path]:
        return [self.folder / n for n in sorted(self.sizes)]


def _parse_http_headers(head: bytes) -> StatusAndHeaders:
    from warcio.recordloader import StatusAndHeadersParser

    return StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"], verify=False).parse(io.BytesIO(head))
