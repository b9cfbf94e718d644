"""``format: crawl``: a polite web crawler that writes WARC files, then reads them as the input.

A pipeline whose input is a crawl first crawls (``Source.prepare``, on the driver, before the
plan), writing ``OUTPUT/warc/*.warc.gz``; the WARC reader (stages/warc.py) then reads those files
like any other WARC input, so rows carry ``url`` = the fetched URL and the same columns as
``format: warc``.  ``winnow crawl NAME`` runs the crawl alone.  Stats: a ``crawl`` entry before
``read``: ``docs_in`` = URLs considered, ``docs_out`` = responses stored, ``dropped`` = why the
others were not (every failure counted per reason), ``extra`` = requests, retries, redirects,
robots fetches, bytes.

Politeness (DESIGN "Crawl input"):

* One request in flight per host (host name: its schemes and ports share one pacer, being
  usually one server; robots.txt is per ``scheme://host:port``) and ``delay`` seconds at least between
  the starts of two requests to a host (retries, redirect hops and errors count; robots.txt
  does not).  robots.txt's Crawl-delay raises that minimum, never lowers it; a host asking for
  more than ``max_crawl_delay`` is skipped (``crawl_delay_too_long``), not crawled faster.
* The delay adapts as Scrapy's AutoThrottle does: after each response, delay = mean(delay,
  latency), clamped to [minimum, ``max_delay``]; a non-200 answer never lowers it.
* 429, 503 and network errors (connect, timeout, reset) are retried up to ``max_retries`` times
  after ``backoff * 2**attempt`` seconds or the server's ``Retry-After`` (seconds or HTTP-date),
  whichever is longer; the wait also holds back the whole host.  A ``Retry-After`` above
  ``retry_after_cap`` gives the URL up rather than ignoring the server's request.
* robots.txt (RFC 9309, parsed by Protego): the first 512 KiB are read, the rules are cached for
  at most ``robots_ttl`` (<= 24 h), up to 5 redirects are followed; 4xx = allow all, 5xx or a
  network error = disallow all: the host's pages are dropped as ``robots_unreachable`` (5xx) or
  under the network error's reason (``dns``, ``connect``, ``timeout``, ``private_address``).
  Sitemaps it names are optional seeds (``sitemaps: true``).

Safety: only http(s); hosts outside ``allowed_domains`` are never contacted (robots.txt
included); private, loopback, link-local and reserved addresses are refused at connect time
unless ``allow_private_addresses`` (crawl_fetch).

Scale: the hosts are partitioned into ``workers`` groups by a hash of the host; each group is
crawled by one ``GroupCrawler`` with its own threads, journal and WARC files.  With ``workers >
1`` each group is a Ray actor; the driver runs rounds of ``round_seconds``, hands every group a
share of the remaining ``max_pages`` and routes the links each group found to the group that
owns their host.  A host belongs to exactly one group, so politeness holds per host across the
cluster.  Resume: each group replays its journal (crawl_frontier.Journal) and cuts its WARC
files back to their committed sizes (crawl_warc.WarcOut), so a killed crawl refetches only the
fetches that were in flight and loses no queued URL; links routed between groups are re-sent
from the journals (the receiver ignores those it already has).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import logging
import math
import re
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from pydantic import Field, model_validator

from pipeline.atomic import atomic_write_json
from pipeline.registry import register_source
from pipeline.source import InputParams, MiB, Shard, Source
from pipeline.stage import RunFailed, StageStats
from stages.crawl_fetch import Fetcher, FetchError, Response
from stages.crawl_frontier import (
    Journal,
    Scope,
    extract_links,
    fetchable,
    hostname_of,
    origin_of,
    sitemap_locs,
    url_key,
)

log = logging.getLogger(__name__)

RETRYABLE_ERRORS = {"connect", "timeout", "network"}
RETRYABLE_STATUS = {429, 503}
ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309: at least 500 KiB
ROBOTS_MAX_REDIRECTS = 5
SYNC_SECONDS = 1.0  # WARC + journal fsync period: what a power cut (not a kill) may cost


class CrawlParams(InputParams):
    format: Literal["crawl"] = "crawl"
    paths: list[str] = Field(default_factory=list, description="not used by a crawl (pages come from seeds)")
    seeds: list[str] = Field(default_factory=list, description="start URLs")
    seeds_file: str | None = Field(
        None, description="a text file of start URLs, one a line (gzip allowed), relative to the config file"
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="host names (and their subdomains) or IP literals that may be contacted, any port; "
        "default: the seeds' hosts",
    )
    url_patterns: list[str] = Field(
        default_factory=list, description="regexes: a URL must match one (if any)"
    )
    exclude_patterns: list[str] = Field(
        default_factory=list, description="regexes: matching URLs are skipped"
    )
    max_pages: int = Field(1000, ge=1, description="stop after this many pages answered 2xx")
    max_depth: int = Field(3, ge=0, description="links followed from a seed (0: the seeds only)")
    delay: float = Field(1.0, ge=0, description="minimum seconds between request starts to one host")
    max_delay: float = Field(60.0, gt=0, description="the adaptive per-host delay's ceiling")
    concurrency: int = Field(8, ge=1, description="requests in flight at once, all hosts together")
    workers: int = Field(1, ge=1, description="host groups, each a Ray actor when > 1")
    round_seconds: float = Field(2.0, gt=0, description="with workers > 1: seconds between link exchanges")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to connect")
    read_timeout: float = Field(30.0, gt=0, description="seconds without a byte before giving up")
    total_timeout: float = Field(120.0, gt=0, description="seconds for a whole response")
    max_response_bytes: int = Field(
        10 * MiB, ge=1024, description="a larger body is aborted and counted too_large (not truncated)"
    )
    user_agent: str = Field(
        "winnow-crawler/0.1",
        description="User-Agent header: add a contact, e.g. 'mycrawler/1.0 (+https://my.site/crawler)' "
        "(a warning is printed without one); its first word is the robots.txt token",
    )
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml"],
        description="media types of 2xx pages kept; others are abandoned after their headers",
    )
    max_retries: int = Field(2, ge=0, description="retries of a 429, 503 or network error")
    backoff: float = Field(1.0, ge=0, description="first retry wait in seconds, doubled each retry")
    retry_after_cap: float = Field(120.0, ge=0, description="a longer Retry-After gives the URL up")
    max_redirects: int = Field(5, ge=0, description="redirect hops followed from one URL")
    max_crawl_delay: float = Field(30.0, ge=0, description="hosts whose Crawl-delay is longer are skipped")
    robots_ttl: float = Field(86400.0, gt=0, le=86400, description="seconds a robots.txt is cached (<= 24 h)")
    sitemaps: bool = Field(False, description="also seed from the sitemaps robots.txt names")
    warc_max_bytes: int = Field(1024 * MiB, ge=MiB, description="rotate WARC files past this size")
    allow_private_addresses: bool = Field(False, description="allow private/loopback addresses (tests only)")
    split_bytes: int = Field(4 * MiB, ge=4096, description="reading the WARC files: bytes per task")

    @model_validator(mode="after")
    def _some_input(self) -> CrawlParams:  # replaces InputParams' paths check
        # the file-input keys a crawl inherits (paths, paths_file, max_files, ...) have no meaning
        # here: setting one is an error, not silently ignored
        fields = type(self).model_fields
        inherited = [
            k
            for k in sorted(set(InputParams.model_fields) - {"format"})
            if getattr(self, k) != fields[k].get_default(call_default_factory=True)
        ]
        if inherited:
            raise ValueError(f"a crawl takes 'seeds' or 'seeds_file', not {', '.join(map(repr, inherited))}")
        if not self.seeds and not self.seeds_file:
            raise ValueError("set 'seeds' (URLs) or 'seeds_file' (a file of URLs)")
        for url in self.seeds:
            if fetchable(url) is None:
                raise ValueError(f"seed {url!r} is not an http(s) URL")
        return self


# --- frontier items and hosts --------------------------------------------------------------------


@dataclass
class Item:
    url: str
    key: str
    depth: int = 0
    hops: int = 0  # redirect hops that led here
    chain: list[str] = field(default_factory=list)  # keys of those hops (loop detection)
    attempt: int = 0
    not_before: float = 0.0  # wall-clock time before which it is not fetched (a retry's wait)
    kind: str = "page"  # or "sitemap"

    def to_json(self) -> dict:
        """Fields left at their defaults are left out (the journal holds one per queued URL)."""
        return {k: v for k, v in asdict(self).items() if k in ("url", "key") or v not in (0, [], "page")}

    @classmethod
    def from_json(cls, d: dict) -> Item:
        return cls(**d)


@dataclass
class Host:
    name: str  # host name: one pacer for all its schemes and ports
    min_delay: float
    delay: float
    queue: deque = field(default_factory=deque)
    busy: bool = False
    next_start: float = 0.0  # monotonic
    # per origin (scheme://host:port), as robots.txt is: Protego rules, "allow" or "deny"
    robots: dict[str, Any] = field(default_factory=dict)
    robots_time: dict[str, float] = field(default_factory=dict)
    dead: dict[str, str] = field(default_factory=dict)  # origin -> why all its pages are dropped
    sitemaps_done: set[str] = field(default_factory=set)


def group_of(host: str, groups: int) -> int:
    return zlib.crc32(host.encode()) % groups


def robots_token(user_agent: str) -> str:
    return user_agent.split("/", 1)[0].split()[0] if user_agent.strip() else "*"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --- one host group ------------------------------------------------------------------------------


class GroupCrawler:
    """Crawls the hosts of one group with ``threads`` workers; resumable from its journal."""

    def __init__(
        self, params: dict, state_dir: str, warc_dir: str, group: int, groups: int, threads: int
    ) -> None:
        self.p = CrawlParams(**params)
        self.group, self.groups, self.threads = group, groups, threads
        self.scope = Scope(self.p.allowed_domains, self.p.url_patterns, self.p.exclude_patterns)
        self.token = robots_token(self.p.user_agent)
        self.fetcher = Fetcher(
            self.p.user_agent,
            self.p.connect_timeout,
            self.p.read_timeout,
            self.p.total_timeout,
            self.p.max_response_bytes,
            self.p.allow_private_addresses,
        )
        from stages.crawl_warc import WarcOut  # warcio: only when crawling (winnow validate stays fast)

        info = {k: v for k, v in self.p.model_dump(mode="json").items() if k not in ("paths", "split_bytes")}
        self.warc = WarcOut(Path(warc_dir), f"crawl-g{group:03d}", self.p.warc_max_bytes, info)
        self.journal = Journal(Path(state_dir) / f"group-{group:03d}.jsonl")
        self.config_id = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
        self.hosts: dict[str, Host] = {}
        self.seen: set[str] = set()
        self.stats = StageStats("crawl")
        self.pages = 0  # 2xx answers to page items (max_pages)
        self.outbox: list[dict] = []  # items for other groups, every one ever found (re-sent on resume)
        self.cv = threading.Condition()
        self.inflight = 0
        self.inflight_pages = 0
        self.page_limit = self.p.max_pages
        self.deadline = math.inf
        self._synced = time.monotonic()
        self._restore()

    # --- state -----------------------------------------------------------------------------------
    def _restore(self) -> None:
        sizes: dict[str, int] = {}
        digests: dict[str, tuple[str, str]] = {}
        queued: dict[str, Item] = {}
        started = False
        on_disk = {p.name: p.stat().st_size for p in self.warc.folder.glob(f"{self.warc.prefix}-*.warc.gz")}
        for offset, ev in self.journal.events():
            if any(size > on_disk.get(name, 0) for name, size in ev.get("warc", {}).items()):
                # WARC bytes this line vouches for never reached the disk (a power cut between
                # two syncs): the crawl resumes from the line before, refetching what followed
                log.warning("crawl: %s: resume before offset %d (WARC unsynced)", self.journal.path, offset)
                self.journal.truncate(offset)
                break
            if "config" in ev:
                if ev["config"] != self.config_id:
                    raise RunFailed(
                        f"{self.journal.path} holds a crawl with another configuration: rerun with --fresh"
                    )
                started = True
            if ev.get("done"):
                queued.pop(ev["done"], None)
            for d in ev.get("add", []):
                item = Item.from_json(d)
                queued.pop(item.key, None)  # a retry goes back in, as a new item
                queued[item.key] = item
                self.seen.add(item.key)
            self.seen.update(ev.get("seen", []))
            for d in ev.get("out", []):
                self.outbox.append(d)
                self.seen.add(d["key"])
            sizes.update(ev.get("warc", {}))
            if ev.get("digest"):
                digest, uri, date = ev["digest"]
                digests[digest] = (uri, date)
            self.pages += ev.get("pages", 0)
            if ev.get("stats"):
                self.stats.merge(StageStats.from_dict({"name": "crawl", **ev["stats"]}))
        if not started:
            sizes, digests = {}, {}
        self.warc.restore(sizes, digests)
        if not started:
            self.journal.append({"config": self.config_id})
        for item in queued.values():
            self._host(item.url).queue.append(item)
        if started and queued:
            self.stats.count("resumed_queue", len(queued))

    def _host(self, url: str) -> Host:
        name = hostname_of(url)
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = Host(name, self.p.delay, self.p.delay)
        return host

    def restored_outbox(self) -> list[dict]:
        return list(self.outbox)

    def add(self, items: list[dict], seed: bool = False) -> int:
        """Enqueue items (seeds, or links another group found); known URLs are ignored."""
        new, ev = [], _Event()
        with self.cv:
            for d in items:
                item = Item.from_json(d)
                if item.key in self.seen:
                    continue
                self.seen.add(item.key)
                if seed:
                    reason = self.scope.check(item.url)
                    if reason:
                        ev.drop(reason, item.key)
                        continue
                new.append(item)
                self._host(item.url).queue.append(item)
            if new or ev.stats.docs_in:
                ev.add = new
                self.journal.append(ev.to_json())
                self.stats.merge(ev.stats)
            self.cv.notify_all()
        return len(new)

    # --- the run loop ----------------------------------------------------------------------------
    def run(self, page_limit: int | None = None, seconds: float | None = None) -> dict:
        """Crawl until the queue is empty, ``page_limit`` 2xx pages (total, this group) are done, or
        ``seconds`` pass (in-flight fetches finish); returns pages, outbox, idle and stats."""
        self.page_limit = self.p.max_pages if page_limit is None else page_limit
        self.deadline = time.monotonic() + seconds if seconds is not None else math.inf
        sent = len(self.outbox)
        workers = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        with self.cv:
            self._sync()
        with self.cv:
            idle = not any(h.queue for h in self.hosts.values())
        return {
            "pages": self.pages,
            "outbox": self.outbox[sent:],
            "idle": idle,
            "stats": self.stats.to_dict(),
            "files": [str(p) for p in self.warc.files()],
        }

    def _sync(self) -> None:
        """WARC first, then the journal that vouches for its bytes (see crawl_frontier)."""
        self.warc.sync()
        self.journal.sync()
        self._synced = time.monotonic()

    def close(self) -> None:
        self.warc.close()
        self.journal.sync()
        self.journal.close()

    def _take(self) -> tuple[Host, Item] | None:
        with self.cv:
            while True:
                now = time.monotonic()
                wall = time.time()
                if now >= self.deadline:
                    return None
                budget_left = self.pages + self.inflight_pages < self.page_limit
                best, best_t, wait = None, math.inf, 1.0
                for host in self.hosts.values():
                    if host.busy or not host.queue:
                        continue
                    item = host.queue[0]
                    dead = origin_of(item.url) in host.dead
                    if item.kind == "page" and not budget_left and not dead:
                        continue
                    t = max(host.next_start, now + item.not_before - wall)
                    if dead:
                        t = now  # dropped without a request
                    if t <= now and t < best_t:
                        best, best_t = host, t
                    elif t > now:
                        wait = min(wait, t - now)
                if best is not None:
                    item = best.queue.popleft()
                    best.busy = True
                    self.inflight += 1
                    self.inflight_pages += item.kind == "page"
                    return best, item
                if self.inflight == 0:
                    pending = any(
                        h.queue and (budget_left or h.queue[0].kind != "page") for h in self.hosts.values()
                    )
                    if not pending:
                        self.cv.notify_all()
                        return None
                self.cv.wait(timeout=min(wait, max(0.0, self.deadline - now)))

    def _worker(self) -> None:
        while True:
            got = self._take()
            if got is None:
                return
            host, item = got
            ev = _Event(done=item.key)
            try:
                self._process(host, item, ev)
            except Exception as exc:  # a bug or an unforeseen server: counted, never fatal
                log.exception("crawl: %s", item.url)
                ev.drop("internal_error", None)
                ev.stats.count(type(exc).__name__, group="internal_errors")
            with self.cv:
                for d in ev.out:
                    self.outbox.append(d)
                self.journal.append(ev.to_json())
                if time.monotonic() - self._synced > SYNC_SECONDS:
                    self._sync()
                self.stats.merge(ev.stats)
                self.pages += ev.pages
                host.busy = False
                self.inflight -= 1
                self.inflight_pages -= item.kind == "page"
                self.cv.notify_all()

    # --- one frontier item -----------------------------------------------------------------------
    def _process(self, host: Host, item: Item, ev: _Event) -> None:
        origin = origin_of(item.url)
        fetched = host.robots_time.get(origin, -math.inf)
        if origin not in host.dead and time.monotonic() - fetched > self.p.robots_ttl:
            self._load_robots(host, origin, ev)
        if origin in host.dead:
            ev.drop(host.dead[origin], None)
            return
        rules = host.robots[origin]
        if rules == "deny":
            ev.drop("robots_unreachable", None)
            return
        if rules != "allow" and not rules.can_fetch(item.url, self.token):
            ev.drop("robots_disallowed", None)
            return
        wait = host.next_start - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t0 = time.monotonic()
        host.next_start = t0 + host.delay
        ev.stats.count("requests")
        try:
            resp = self.fetcher.fetch(item.url, self.p.content_types if item.kind == "page" else None)
        except FetchError as exc:
            if exc.reason in RETRYABLE_ERRORS and item.attempt < self.p.max_retries:
                self._retry(host, item, ev, None, exc.reason)
            else:
                ev.drop(exc.reason, None)
            return
        self._adapt(host, resp, t0)
        ev.stats.count("bytes_received", len(resp.raw))
        ev.stats.bytes_in += len(resp.raw)
        ev.stats.count(str(resp.status), group="http_status")
        status = resp.status
        if status in RETRYABLE_STATUS and item.attempt < self.p.max_retries:
            self._record(resp, ev)
            if self._retry(host, item, ev, resp, f"http_{status}"):
                return
            ev.stats.count("retry_after_over_cap")
            ev.drop("http_4xx" if status < 500 else "http_5xx", None)
            return
        if 300 <= status < 400 and resp.header("Location"):
            self._record(resp, ev)
            self._redirect(item, resp, ev)
            return
        if 200 <= status < 300:
            written = self._record(resp, ev)
            if item.kind == "page":
                ev.pages = 1
            if written.get("revisit"):
                ev.drop("revisit", None)
                ev.stats.count("revisits")
            else:
                ev.stats.docs_in += 1
                ev.stats.docs_out += 1
                ev.stats.bytes_out += len(resp.body)
            self._follow(item, resp, ev)
            return
        self._record(resp, ev)
        ev.drop("http_4xx" if 400 <= status < 500 else "http_5xx" if status >= 500 else "http_other", None)

    def _record(self, resp: Response, ev: _Event) -> dict:
        with self.cv:  # one writer per WARC file
            written = self.warc.write_exchange(
                resp.url, resp.raw_request, resp.raw, resp.peer_ip, resp.started, resp.status
            )
        ev.warc.update(written["warc"])
        if "digest" in written:
            ev.digest = written["digest"]
        return written

    def _adapt(self, host: Host, resp: Response, t0: float) -> None:
        """AutoThrottle: move the delay halfway to the latency; a non-200 never lowers it."""
        new = (host.delay + resp.latency) / 2
        if resp.status != 200:
            new = max(new, host.delay)
        host.delay = min(max(new, host.min_delay), max(self.p.max_delay, host.min_delay))
        host.next_start = max(host.next_start, t0 + host.delay)

    def _retry(self, host: Host, item: Item, ev: _Event, resp: Response | None, why: str) -> bool:
        """Requeue ``item`` after a wait; False when the server asks for more than the cap."""
        wait = min(self.p.backoff * 2**item.attempt, self.p.retry_after_cap)
        asked = retry_after_seconds(resp.header("Retry-After")) if resp is not None else None
        if asked is not None:
            if asked > self.p.retry_after_cap:
                return False
            wait = max(wait, asked)
        ev.stats.count("retries")
        ev.stats.count(why, group="retry_reasons")
        host.next_start = max(host.next_start, time.monotonic() + wait)
        again = Item(**{**asdict(item), "attempt": item.attempt + 1, "not_before": time.time() + wait})
        ev.add.append(again)
        ev.retry = True
        with self.cv:
            host.queue.appendleft(again)
        return True

    def _redirect(self, item: Item, resp: Response, ev: _Event) -> None:
        ev.stats.count("redirects")
        target = fetchable(urljoin(resp.url, resp.header("Location") or ""))
        if target is None:
            ev.drop("bad_redirect", None)
            return
        key = url_key(target)
        if key == item.key or key in item.chain:
            ev.drop("redirect_loop", None)
            return
        if item.hops + 1 > self.p.max_redirects:
            ev.drop("too_many_redirects", None)
            return
        ev.drop("redirected", None)
        nxt = Item(target, key, item.depth, item.hops + 1, [*item.chain, item.key], kind=item.kind)
        self._discover(nxt, ev, front=True)

    def _follow(self, item: Item, resp: Response, ev: _Event) -> None:
        """Queue the links of an HTML page (or the URLs of a sitemap)."""
        if item.kind == "sitemap":
            for loc in sitemap_locs(resp.body):
                url = fetchable(loc)
                if url:
                    kind = "sitemap" if url.lower().endswith((".xml", ".xml.gz")) else "page"
                    self._discover(Item(url, url_key(url), 0, kind=kind), ev)
            return
        if item.depth >= self.p.max_depth or resp.mime not in ("text/html", "application/xhtml+xml"):
            return
        from stages.warc import _mime_and_charset, decode_html

        body = resp.body
        encoding = (resp.header("Content-Encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):  # sent although we asked for identity
            try:  # at most 4x the response limit inflated: a decompression bomb stops there
                inflater = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
                body = inflater.decompress(body, 4 * self.p.max_response_bytes)
            except zlib.error:
                ev.stats.count("links_undecodable")
                return
        html, _, _ = decode_html(body, _mime_and_charset(resp.header("Content-Type"))[1])
        links = extract_links(html, resp.url)
        ev.stats.count("links_found", len(links))
        for url in links:
            self._discover(Item(url, url_key(url), item.depth + 1), ev)

    def _discover(self, item: Item, ev: _Event, front: bool = False) -> None:
        with self.cv:
            if item.key in self.seen:
                if item.hops:  # a redirect to a URL already known: fetched (or queued) once
                    ev.stats.count("redirect_to_seen")
                return
            self.seen.add(item.key)
            reason = self.scope.check(item.url)
            if reason:
                ev.drop(reason, item.key)
                return
            if group_of(hostname_of(item.url), self.groups) != self.group:
                ev.out.append(item.to_json())
                return
            host = self._host(item.url)
            ev.add.append(item)
            host.queue.appendleft(item) if front else host.queue.append(item)
            self.cv.notify_all()

    # --- robots.txt ------------------------------------------------------------------------------
    def _load_robots(self, host: Host, origin: str, ev: _Event) -> None:
        from protego import Protego

        host.robots_time[origin] = time.monotonic()
        scheme, rest = origin.split("://", 1)
        hostname, port = rest.rsplit(":", 1)
        netloc = hostname if int(port) == (443 if scheme == "https" else 80) else f"{hostname}:{port}"
        url = f"{scheme}://{netloc}/robots.txt"
        ev.stats.count("robots_requests")
        for _hop in range(ROBOTS_MAX_REDIRECTS + 1):
            try:
                resp = self.fetcher.fetch(url, None, max_bytes=ROBOTS_MAX_BYTES, truncate=True)
            except FetchError as exc:
                # RFC 9309 2.3.1.4: unreachable means complete disallow; the host's pages are
                # dropped under the reason (dns, connect, timeout, private_address, ...)
                host.dead[origin] = exc.reason
                ev.stats.count(exc.reason, group="robots_errors")
                return
            ev.stats.count(str(resp.status), group="robots_status")
            location = resp.header("Location")
            if 300 <= resp.status < 400 and location:
                target = fetchable(urljoin(url, location))
                if target is None or self.scope.check(target):
                    host.robots[origin] = "allow"  # unavailable: RFC 9309 2.3.1.2 lets us assume allow
                    return
                url = target
                continue
            break
        else:
            host.robots[origin] = "allow"  # more than five redirects: unavailable
            return
        if 200 <= resp.status < 300:
            rules = Protego.parse(resp.body.decode("utf-8-sig", "replace"))
            host.robots[origin] = rules
            crawl_delay = rules.crawl_delay(self.token)
            if crawl_delay is not None:
                if crawl_delay > self.p.max_crawl_delay:
                    host.dead[origin] = "crawl_delay_too_long"
                    return
                host.min_delay = max(self.p.delay, float(crawl_delay))
                host.delay = max(host.delay, host.min_delay)
            if self.p.sitemaps and origin not in host.sitemaps_done:
                host.sitemaps_done.add(origin)
                for sm in rules.sitemaps:
                    url = fetchable(sm)
                    if url:
                        self._discover(Item(url, url_key(url), 0, kind="sitemap"), ev, front=True)
        elif 400 <= resp.status < 500:
            host.robots[origin] = "allow"
        else:
            host.robots[origin] = "deny"


@dataclass
class _Event:
    """One journal line: the item finished, what it added, the WARC sizes, the stats delta."""

    done: str | None = None
    add: list[Item] = field(default_factory=list)
    out: list[dict] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    warc: dict[str, int] = field(default_factory=dict)
    digest: list | None = None
    pages: int = 0
    retry: bool = False
    stats: StageStats = field(default_factory=lambda: StageStats("crawl"))

    def drop(self, reason: str, key: str | None) -> None:
        self.stats.docs_in += 1
        self.stats.dropped[reason] += 1
        if key is not None:
            self.seen.append(key)

    def to_json(self) -> dict:
        d: dict[str, Any] = {}
        if self.done:
            d["done"] = self.done
        for name in ("out", "seen", "warc", "digest", "pages"):
            if getattr(self, name):
                d[name] = getattr(self, name)
        if self.add:
            d["add"] = [i.to_json() for i in self.add]
        stats = self.stats.to_dict()
        stats.pop("name")
        d["stats"] = stats
        return d


# --- the whole crawl -----------------------------------------------------------------------------


def read_seeds(params: CrawlParams, base: Path) -> list[str]:
    seeds = list(params.seeds)
    if params.seeds_file:
        path = Path(params.seeds_file)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise RunFailed(f"crawl: seeds_file {str(path)!r} not found")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if fetchable(line) is None:
                    raise RunFailed(f"crawl: {path}, line {n}: {line!r} is not an http(s) URL")
                seeds.append(line)
    return seeds


def crawl_dirs(root: Path) -> tuple[Path, Path]:
    """(state folder, WARC folder) of the crawl of run directory ``root``."""
    return root / "_work" / "crawl", root / "warc"


def run_crawl(
    params: CrawlParams, root: Path, base: Path, start_ray: Callable[[], Callable[[], None]] | None = None
) -> dict:
    """Crawl (or resume, or skip if already finished) into ``root``; returns the ``crawl`` stats
    entry and the WARC files: ``{"stats": {...}, "files": [...]}`` (also in _work/crawl/done.json).
    ``start_ray`` (the executor's, see ``Source.start_ray``) starts Ray for ``workers > 1``."""
    state, warc_dir = crawl_dirs(root)
    done = state / "done.json"
    given = params.model_dump(mode="json")
    if done.exists():
        finished = json.loads(done.read_text())
        if finished.get("params") != given:
            raise RunFailed(f"{root} holds a finished crawl of another configuration: rerun with --fresh")
        return finished
    seeds = read_seeds(params, base)
    if not re.search(r"https?://|@", params.user_agent):
        print(
            f"winnow crawl: user_agent {params.user_agent!r} has no contact URL or e-mail address: "
            "site owners cannot reach you (set user_agent: 'name/version (+https://...)')",
            file=sys.stderr,
        )
    if not params.allowed_domains:
        hosts = sorted({urlsplit(fetchable(s) or "").hostname or "" for s in seeds} - {""})
        params = params.model_copy(update={"allowed_domains": hosts})
    state.mkdir(parents=True, exist_ok=True)
    seed_items = [Item(u, url_key(u), 0).to_json() for u in (fetchable(s) for s in seeds) if u]
    raw = params.model_dump(mode="json")
    threads = max(1, math.ceil(params.concurrency / params.workers))
    started = time.perf_counter()
    if params.workers == 1:
        crawler = GroupCrawler(raw, str(state), str(warc_dir), 0, 1, threads)
        try:
            crawler.add(seed_items, seed=True)
            result = crawler.run()
        finally:
            crawler.close()
        stats, files = StageStats.from_dict(result["stats"]), result["files"]
    else:
        stats, files = _run_groups(raw, state, warc_dir, seed_items, threads, start_ray)
    stats.seconds += time.perf_counter() - started
    out = {"stats": stats.to_dict(), "files": sorted(files), "params": given}
    atomic_write_json(done, out)
    return out


def _run_groups(
    raw: dict,
    state: Path,
    warc_dir: Path,
    seed_items: list[dict],
    threads: int,
    start_ray: Callable[[], Callable[[], None]] | None,
) -> tuple[StageStats, list[str]]:
    """``workers`` host groups as Ray actors, exchanging links every ``round_seconds``."""
    import ray

    params = CrawlParams(**raw)
    groups = params.workers
    if ray.is_initialized():
        stop: Callable[[], None] = lambda: None  # noqa: E731
    elif start_ray is not None:
        stop = start_ray()
    else:
        raise RunFailed("crawl: workers > 1 runs its host groups as Ray actors, and Ray is not started")
    try:
        actor_cls = ray.remote(num_cpus=0.25)(GroupCrawler)
        actors = [actor_cls.remote(raw, str(state), str(warc_dir), g, groups, threads) for g in range(groups)]
        inbox: list[list[dict]] = [[] for _ in range(groups)]
        for d in seed_items:
            inbox[group_of(hostname_of(d["url"]), groups)].append(d)
        for outbox in ray.get([a.restored_outbox.remote() for a in actors]):
            for d in outbox:
                inbox[group_of(hostname_of(d["url"]), groups)].append(d)
        ray.get([a.add.remote(inbox[g], seed=True) for g, a in enumerate(actors)])
        pages = [0] * groups
        results: list[dict] = []
        while True:
            remaining = params.max_pages - sum(pages)
            share = max(1, math.ceil(remaining / groups)) if remaining > 0 else 0
            results = ray.get(
                [a.run.remote(pages[g] + share, params.round_seconds) for g, a in enumerate(actors)]
            )
            pages = [r["pages"] for r in results]
            inbox = [[] for _ in range(groups)]
            for r in results:
                for d in r["outbox"]:
                    inbox[group_of(hostname_of(d["url"]), groups)].append(d)
            added = sum(ray.get([a.add.remote(inbox[g]) for g, a in enumerate(actors)]))
            if sum(pages) >= params.max_pages or (added == 0 and all(r["idle"] for r in results)):
                break
        ray.get([a.close.remote() for a in actors])
    finally:
        stop()
    stats = StageStats("crawl")
    for r in results:
        stats.merge(StageStats.from_dict(r["stats"]))
    return stats, [f for r in results for f in r["files"]]


# --- the input source ----------------------------------------------------------------------------


@register_source
class CrawlSource(Source):
    """Crawls in ``prepare`` (driver), then reads the WARC files with the WARC reader."""

    format = "crawl"
    Params = CrawlParams
    reads_files = False

    def _reader(self) -> Source:
        from stages.warc import WarcParams, WarcSource

        return WarcSource(WarcParams(paths=["crawl"], split_bytes=self.params.split_bytes))

    def prepare(self, run_root: str, config_dir: str, files: list[str]) -> list[str]:
        return run_crawl(self.params, Path(run_root), Path(config_dir), self.start_ray)["files"]

    def prepared_stats(self, run_root: str) -> list[dict]:
        done = crawl_dirs(Path(run_root))[0] / "done.json"
        return [json.loads(done.read_text())["stats"]] if done.exists() else []

    def plan(self, files: list[str]) -> list[Shard]:
        return self._reader().plan(files)

    def read(self, shard: Shard):
        reader = self._reader()
        reader.stats = self.stats  # the executor holds this object as the read stats
        yield from reader.read(shard)
