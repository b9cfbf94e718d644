"""The crawler's frontier: URL keys and scope, link extraction, robots.txt rules, and the journal
that makes a crawl resumable.

* **URL keys.**  A URL is fetched as found (made safe by w3lib's ``safe_url_string``) but
  deduplicated on ``url_key``: w3lib's ``canonicalize_url`` (lower-case scheme and host, sorted
  query, normalised percent-encoding, no fragment) plus the default port dropped.  So
  ``HTTP://Host:80/a?b=1&a=2#x`` and ``http://host/a?a=2&b=1`` are fetched once.
* **Scope.**  Only http(s); the host must equal an ``allowed_domains`` entry or be a subdomain of
  a name entry (IP literals match exactly; any port); optional include/exclude regexes.
* **Links.**  ``<a href>`` and ``<area href>`` from lxml's HTML parser, resolved against
  ``<base href>``; ``rel=nofollow`` links and every link of a page with ``<meta name=robots
  content=nofollow>`` (or ``none``) are skipped.
* **Journal** (``Journal``): an append-only JSON-lines file, one line per finished fetch, written
  after the fetch's WARC records.  A line says which frontier item finished, what it added
  (links, a retry, a redirect target), the size of each WARC file after its records and the
  counters.  Replaying it rebuilds the queue (in order), the seen set, the payload digests and
  the stats; a torn last line (a kill mid-write) is ignored.  Lines are written (not fsynced)
  per fetch and both files are fsynced together every ``SYNC_SECONDS``, WARC first: a killed
  process loses nothing (the page cache survives it), and after a power cut the replay stops at
  the first line whose WARC bytes did not reach the disk.  An fsync costs ~5.6 ms on this
  machine's disk (measured, 200 appends); two per page would cap a host group near 90 pages/s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url, safe_url_string

from pipeline.atomic import fsync_open

DEFAULT_PORTS = {"http": 80, "https": 443}


def url_key(url: str) -> str:
    """The dedup key of a URL (see the module docstring)."""
    canon = canonicalize_url(url, keep_fragments=False)
    parts = urlsplit(canon)
    host = (parts.hostname or "").lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, DEFAULT_PORTS.get(parts.scheme)) else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def fetchable(url: str) -> str | None:
    """The URL as it will be requested (percent-encoded, no fragment), or None if it is not
    http(s) or has no host."""
    try:
        safe = safe_url_string(url.strip())
        parts = urlsplit(safe)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, ""))


def hostname_of(url: str) -> str:
    """The lower-cased host name: the unit of politeness (http and https of one host, or two
    ports, share one pacer, since they are usually one server)."""
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def origin_of(url: str) -> str:
    """``scheme://host:port`` (default port made explicit): the unit of robots.txt (RFC 9309 2.3)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        port = 0
    return f"{parts.scheme.lower()}://{host}:{port}"


class Scope:
    """Which URLs may be fetched: allowed hosts, then the optional URL patterns."""

    def __init__(self, allowed: list[str], include: list[str], exclude: list[str]) -> None:
        self.allowed = {a.lower().strip("[]").rstrip(".") for a in allowed}
        self.include = [re.compile(p) for p in include]
        self.exclude = [re.compile(p) for p in exclude]

    def host_allowed(self, host: str) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        if host in self.allowed:
            return True
        return any(host.endswith("." + a) for a in self.allowed if not _is_ip(a))

    def check(self, url: str) -> str | None:
        """None when ``url`` is in scope, else the reason it is not (a stats key)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return "scheme"
        if not self.host_allowed(parts.hostname or ""):
            return "off_domain"
        if self.include and not any(p.search(url) for p in self.include):
            return "url_pattern"
        if any(p.search(url) for p in self.exclude):
            return "url_pattern"
        return None


def _is_ip(host: str) -> bool:
    return bool(re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host)) and any(c in host for c in ".:")


def extract_links(html: str | bytes, base_url: str) -> list[str]:
    """Followable links of an HTML page, absolute, in document order, duplicates removed."""
    import lxml.html

    try:
        doc = lxml.html.fromstring(html)
    except (ValueError, TypeError):  # a str with an XML encoding declaration
        if isinstance(html, str):
            return extract_links(html.encode("utf-8"), base_url)
        return []
    except Exception:  # lxml: empty or unparseable document
        return []
    for meta in doc.iter("meta"):
        if (meta.get("name") or "").strip().lower() == "robots":
            content = {t.strip() for t in (meta.get("content") or "").lower().split(",")}
            if "nofollow" in content or "none" in content:
                return []
    base = base_url
    for el in doc.iter("base"):
        if el.get("href"):
            base = urljoin(base_url, el.get("href").strip())
            break
    links: dict[str, None] = {}
    for el in doc.iter("a", "area"):
        href = el.get("href")
        if not href:
            continue
        if "nofollow" in (el.get("rel") or "").lower().split():
            continue
        try:
            url = fetchable(urljoin(base, href.strip()))
        except ValueError:
            continue
        if url:
            links[url] = None
    return list(links)


def sitemap_locs(body: bytes) -> list[str]:
    """``<loc>`` URLs of a sitemap or sitemap index (gzip allowed)."""
    import gzip

    if body[:2] == b"\x1f\x8b":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return []
    return [m.decode("utf-8", "replace").strip() for m in re.findall(rb"<loc>\s*([^<]+?)\s*</loc>", body)]


# --- journal -------------------------------------------------------------------------------------


class Journal:
    """Append-only, fsynced JSON lines (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = None

    def events(self) -> Iterator[tuple[int, dict]]:
        """``(offset of the line, event)`` for every whole line; a torn tail is cut off."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write
            try:
                event = json.loads(line)
            except ValueError:
                break
            yield good, event
            good += len(line)
        if good < len(data):  # drop the torn tail so that appends start on a line boundary
            self.truncate(good)

    def truncate(self, offset: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(offset)

    def append(self, event: dict) -> None:
        if self._f is None:
            self._f = open(self.path, "ab")  # noqa: SIM115 (kept open across appends)
        self._f.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
        self._f.flush()

    def sync(self) -> None:
        if self._f is not None:
            fsync_open(self._f)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
