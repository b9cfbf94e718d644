"""Loopback HTTP servers for the crawler tests: several hosts on distinct 127.0.0.x addresses,
serving real pages replayed from ``dev_web.warc.gz`` plus the hostile and special endpoints the
crawler must handle.  Every request is logged server-side with its arrival time, so tests can
check what was fetched and how requests to one host were spaced.

Started and stopped by the test that uses them (``Sites`` is a context manager); each server is
a ``ThreadingHTTPServer`` in a daemon thread of the test process.
"""

from __future__ import annotations

import gzip
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

DEV_WEB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_web.warc.gz"


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})
    delay: float = 0.0  # seconds before answering (a slow endpoint)
    chunks: int = 0  # stream the body in this many writes (a big page)
    no_length: bool = False  # no Content-Length: the body ends when the connection closes


Handler = Callable[[int], Page]  # the n-th request (0-based) to this path -> the answer


@dataclass
class Replayed:
    """A response record of dev_web.warc.gz: its URL, payload and Content-Type."""

    url: str
    body: bytes
    content_type: str
    record: bytes  # the record itself (gzip member), to build the reference WARC


def replayed_pages(n: int, skip: int = 0) -> list[Replayed]:
    """The first ``n`` 200 text/html responses of distinct registered hosts (after ``skip``)."""
    from warcio.warcwriter import WARCWriter

    out: list[Replayed] = []
    hosts: set[str] = set()
    with open(DEV_WEB, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type != "response" or record.http_headers.get_statuscode() != "200":
                continue
            ctype = record.http_headers.get_header("Content-Type") or ""
            if not ctype.startswith("text/html"):
                continue
            url = record.rec_headers.get_header("WARC-Target-URI")
            host = url.split("/")[2]
            if host in hosts:
                continue
            body = record.content_stream().read()
            if not 2000 < len(body) < 400_000:
                continue
            hosts.add(host)
            if len(hosts) <= skip:
                continue
            buf = io.BytesIO()
            writer = WARCWriter(buf, gzip=True)
            from warcio.statusandheaders import StatusAndHeaders

            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            writer.write_record(
                writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)
            )
            out.append(Replayed(url, body, ctype, buf.getvalue()))
            if len(out) == n:
                break
    return out


class _Server(ThreadingHTTPServer):
    """Stamps each connection when it is accepted, in the serving thread: a request's handler
    thread may start late on a loaded machine, which would blur the spacing the tests check."""

    daemon_threads = True

    def __init__(self, *args, **kw) -> None:
        self.accepted: dict = {}
        super().__init__(*args, **kw)

    def get_request(self):
        sock, addr = super().get_request()
        self.accepted[sock] = time.monotonic()
        return sock, addr


class Site:
    """One host: routes by path, a request log, a server on ``ip``."""

    def __init__(self, ip: str, log: list, lock: threading.Lock) -> None:
        self.ip = ip
        self.routes: dict[str, Handler] = {}
        self.counts: dict[str, int] = {}
        self.log = log
        self.lock = lock
        site = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                with site.lock:
                    n = site.counts.get(self.path, 0)
                    site.counts[self.path] = n + 1
                    arrived = site.server.accepted.pop(self.connection, time.monotonic())
                    site.log.append((arrived, site.ip, self.path, dict(self.headers)))
                handler = site.routes.get(self.path)
                page = handler(n) if handler else Page(404, b"<html><body>not found</body></html>")
                if page.delay:
                    time.sleep(page.delay)
                self.send_response(page.status)
                for k, v in page.headers.items():
                    self.send_header(k, v)
                if not page.no_length:
                    self.send_header("Content-Length", str(len(page.body)))
                self.end_headers()
                try:
                    if page.chunks:
                        step = max(1, len(page.body) // page.chunks)
                        for i in range(0, len(page.body), step):
                            self.wfile.write(page.body[i : i + step])
                    else:
                        self.wfile.write(page.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler aborted (too large)

            def log_message(self, *args) -> None:
                pass

        self.server = _Server((ip, 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def page(self, path: str, body: bytes | str, ctype: str = "text/html; charset=utf-8", **kw) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = lambda n: Page(body=data, headers={"Content-Type": ctype}, **kw)

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler


class Sites:
    """Several ``Site``s sharing one request log; a context manager that starts and stops them."""

    def __init__(self, ips: list[str]) -> None:
        self.log: list[tuple[float, str, str, dict]] = []
        self.lock = threading.Lock()
        self.sites = {ip: Site(ip, self.log, self.lock) for ip in ips}

    def __getitem__(self, ip: str) -> Site:
        return self.sites[ip]

    def __enter__(self) -> Sites:
        for s in self.sites.values():
            s.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.sites.values():
            s.server.shutdown()
            s.server.server_close()

    def requests(self, ip: str | None = None, robots: bool = False) -> list[tuple[float, str, str]]:
        with self.lock:
            return [
                (t, i, p)
                for t, i, p, _ in self.log
                if (ip is None or i == ip) and (robots or p != "/robots.txt")
            ]

    def paths(self, ip: str) -> list[str]:
        return [p for _, _, p in self.requests(ip)]


def html(title: str, links: list[str], extra: str = "") -> str:
    items = "".join(f'<li><a href="{u}">{u}</a></li>' for u in links)
    head = f"<!DOCTYPE html><html><head><title>{title}</title>{extra}</head>"
    return f"{head}<body><h1>{title}</h1><ul>{items}</ul></body></html>"


def http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


def sitemap(urls: list[str]) -> bytes:
    locs = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset>{locs}</urlset>'.encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)
