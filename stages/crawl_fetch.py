"""The crawler's HTTP layer: one GET over a socket we open ourselves, recorded byte for byte.

Why not requests/httpx: a WARC ``response`` record must hold the bytes on the wire (status line,
headers as sent, chunked framing, compressed body), and the private-address rule must be checked
on the address actually connected to.  Both are awkward through a pooled client (requests exposes
``raw`` only after header normalisation; httpx decodes and pools).  Here:

* The host is resolved once (``RESOLVER``, patchable in tests), *every* address is checked
  against the private / loopback / link-local / reserved ranges, and the socket connects to the
  first checked address (no second lookup a DNS-rebinding server could answer differently); the
  peer address is checked again after ``connect``.
* The request bytes are built here, so the WARC ``request`` record is exactly what was sent.
* The response is parsed by ``http.client.HTTPResponse`` over a reader that records every byte
  it receives (``_Recorder``): the WARC ``response`` record is those bytes.  One request per
  connection (``Connection: close``), so nothing after the response is read.
* Limits: connect and read timeouts are separate (``socket.create_connection`` timeout, then
  ``settimeout``), a total deadline stops a slow drip that never trips the read timeout, and
  the body is aborted past ``max_bytes`` (``Content-Length`` checked before reading, the stream
  counted while reading): a page over the limit is a counted ``too_large``, never a silently
  truncated record.
* ``Accept-Encoding: identity``: bodies arrive uncompressed, so link extraction and the WARC
  reader see the payload as stored (a server may still compress; the record keeps its bytes).

Cost: the whole crawler uses ~12.5 ms of CPU per ~130 KB page (bench/crawl_speed.py), mostly
link extraction and WARC compression, not this layer.  No connection reuse: each request pays a
TCP (and TLS) handshake, which a polite crawler (one request per host per ``delay``) barely
notices.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# host, port -> addresses; tests patch this to map a fake name to a private address
RESOLVER: Callable[[str, int], list[str]] = lambda host, port: [  # noqa: E731
    info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
]

HEADER_ALLOWANCE = 256 * 1024  # status line + headers: larger is a broken or hostile server
READ_CHUNK = 64 * 1024


class FetchError(Exception):
    """A fetch that produced no usable response; ``reason`` is the stats key it is counted under."""

    def __init__(self, reason: str, detail: str = "", raw_request: bytes = b"") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.raw_request = raw_request


@dataclass
class Response:
    url: str
    status: int
    headers: list[tuple[str, str]]
    raw_request: bytes  # the request as sent
    raw: bytes  # the response as received: status line, headers, body (transfer framing included)
    body: bytes  # the payload, transfer encoding removed (content encoding kept)
    peer_ip: str
    started: float  # wall-clock time the request was sent (WARC-Date)
    latency: float  # seconds from connecting to the end of the response headers
    truncated: bool = False  # only when the caller asked to keep the first bytes (robots.txt)
    extra: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def mime(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()


def is_public(ip: str) -> bool:
    """Routable on the public internet: not private, loopback, link-local, multicast, reserved
    or unspecified (``ipaddress``'s ``is_global`` covers RFC 6890's special-purpose table)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class _Recorder(io.RawIOBase):
    """A socket reader that keeps every byte received, with a byte cap and a deadline."""

    def __init__(self, sock: socket.socket, cap: int, deadline: float) -> None:
        self.sock = sock
        self.cap = cap
        self.deadline = deadline
        self.data = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if time.monotonic() > self.deadline:
            raise TimeoutError("total time limit")
        if len(self.data) >= self.cap:
            raise _TooLarge
        n = self.sock.recv_into(b, min(len(b), self.cap - len(self.data)))
        self.data += memoryview(b)[:n]
        return n


class _TooLarge(Exception):
    pass


class _Conn:
    """What ``HTTPResponse`` needs of a socket: ``makefile``."""

    def __init__(self, reader: io.BufferedReader) -> None:
        self.reader = reader

    def makefile(self, mode: str) -> io.BufferedReader:
        return self.reader


class Fetcher:
    """GET one URL.  ``fetch`` returns a ``Response`` (any status) or raises ``FetchError``."""

    def __init__(
        self,
        user_agent: str,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        total_timeout: float = 120.0,
        max_bytes: int = 10 * 1024 * 1024,
        allow_private: bool = False,
    ) -> None:
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes
        self.allow_private = allow_private
        self._tls = ssl.create_default_context()

    def connect(self, host: str, port: int, https: bool) -> socket.socket:
        try:
            addrs = list(dict.fromkeys(RESOLVER(host, port)))
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError("dns", str(exc)) from None
        if not addrs:
            raise FetchError("dns", "no address")
        if not self.allow_private:
            bad = [a for a in addrs if not is_public(a)]
            if bad:  # one private answer is enough: a rebinding server alternates answers
                raise FetchError("private_address", f"{host} resolves to {bad[0]}")
        ip = addrs[0]
        try:
            sock = socket.create_connection((ip, port), timeout=self.connect_timeout)
        except TimeoutError:
            raise FetchError("timeout", f"connect to {ip}:{port}") from None
        except OSError as exc:
            raise FetchError("connect", f"{ip}:{port}: {exc}") from None
        peer = sock.getpeername()[0]
        if not self.allow_private and not is_public(peer):
            sock.close()
            raise FetchError("private_address", f"connected to {peer}")
        sock.settimeout(self.read_timeout)
        if https:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise FetchError("tls", str(exc)) from None
        return sock

    def request_bytes(self, url: str) -> tuple[bytes, str, int, bool]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError("scheme", parts.scheme)
        host = parts.hostname or ""
        if not host:
            raise FetchError("bad_url", url)
        https = parts.scheme == "https"
        try:
            port = parts.port or (443 if https else 80)
        except ValueError:
            raise FetchError("bad_url", url) from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        netloc = host if ":" not in host else f"[{host}]"
        if parts.port and parts.port != (443 if https else 80):
            netloc += f":{parts.port}"
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {netloc}",
            f"User-Agent: {self.user_agent}",
            "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
            "Accept-Encoding: identity",
            "Connection: close",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "strict"), host, port, https

    def fetch(
        self,
        url: str,
        keep_types: list[str] | None = None,
        max_bytes: int | None = None,
        truncate: bool = False,
    ) -> Response:
        """GET ``url``.  A 2xx whose media type is not in ``keep_types`` (when given) is abandoned
        after its headers (``content_type``).  Past ``max_bytes`` of body the download stops:
        ``too_large``, or with ``truncate`` the first ``max_bytes`` are kept (robots.txt)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        try:
            raw_request, host, port, https = self.request_bytes(url)
        except UnicodeEncodeError:
            raise FetchError("bad_url", url) from None
        t0 = time.monotonic()
        started = time.time()
        sock = self.connect(host, port, https)
        try:
            return self._exchange(sock, url, raw_request, limit, keep_types, truncate, t0, started)
        except FetchError as exc:
            exc.raw_request = raw_request
            raise
        finally:
            sock.close()

    def _exchange(
        self,
        sock: socket.socket,
        url: str,
        raw_request: bytes,
        limit: int,
        keep_types: list[str] | None,
        truncate: bool,
        t0: float,
        started: float,
    ) -> Response:
        peer = sock.getpeername()[0]
        recorder = _Recorder(sock, limit + HEADER_ALLOWANCE, t0 + self.total_timeout)
        resp = http.client.HTTPResponse(_Conn(io.BufferedReader(recorder, READ_CHUNK)), method="GET")  # type: ignore[arg-type]
        try:
            sock.sendall(raw_request)
            resp.begin()
            latency = time.monotonic() - t0
            out = Response(url, resp.status, resp.getheaders(), raw_request, b"", b"", peer, started, latency)
            if 200 <= resp.status < 300 and keep_types is not None and out.mime not in keep_types:
                raise FetchError("content_type", out.mime or "none")
            length = out.header("Content-Length")
            if length and length.strip().isdigit() and int(length) > limit and not truncate:
                raise FetchError("too_large", f"Content-Length {length}")
            body = bytearray()
            while True:
                chunk = resp.read(READ_CHUNK)
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    if truncate:
                        out.truncated = True
                        del body[limit:]
                        break
                    raise FetchError("too_large", f"over {limit} bytes")
        except _TooLarge:
            if not truncate:
                raise FetchError("too_large", f"over {limit} bytes") from None
            raise FetchError("too_large", "headers") from None
        except TimeoutError as exc:
            raise FetchError("timeout", str(exc) or "read") from None
        except http.client.IncompleteRead:
            raise FetchError("network", "connection closed before the end of the body") from None
        except (http.client.HTTPException, ValueError) as exc:
            raise FetchError("bad_response", f"{type(exc).__name__}: {exc}") from None
        except ssl.SSLError as exc:
            raise FetchError("tls", str(exc)) from None
        except OSError as exc:
            raise FetchError("network", str(exc)) from None
        out.raw = bytes(recorder.data)
        out.body = bytes(body)
        return out
