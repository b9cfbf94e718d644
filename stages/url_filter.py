"""``url_filter``: drop documents by URL: blocked domains, URL substrings, FineWeb's banned words.

Default lists (``default_lists: true``) are those FineWeb uses, read from the files the installed
``datatrove`` wheel ships (no download): the UT1 blocklist (4.56 M adult domains, 19.6 k URLs) and
FineWeb's banned words / soft-banned words / banned sub-words.  Users add their own lists inline
or as files (one entry per line, ``#`` comments), and allow-lists exempt domains from every block
(``allow_only: true`` keeps *only* allow-listed domains).

Why not datatrove's ``URLFilter`` itself: it holds the 4.56 M domains in a Python set (~760 MB RSS
and ~4 CPU-s per worker).  We keep 64-bit hashes of them in one sorted numpy array (36 MB, built
in ~1.3 s once per worker process) and look a host up with a binary search.  A false match needs
a 64-bit hash collision with one of 4.6 M entries: probability ~2.5e-13 per URL.

Hosts are checked at every level from the full host name up to the registered domain, so
blocking ``example.com`` also blocks ``a.b.example.com`` and blocking ``ads.example.com`` does not
block ``example.com``; a leading ``www.`` is ignored and non-ASCII names are compared in IDNA form,
as the lists spell them.  UT1's URL entries are ``host/path`` (no scheme) and block what lies under
them, so a URL is looked up by its path prefixes (datatrove compares the whole URL, scheme
included, with them, which never matches).  tldextract runs on its bundled public-suffix
snapshot: no network attempt.
"""

from __future__ import annotations

import functools
import io
import re
import tarfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from pipeline.atomic import atomic_write_bytes
from pipeline.registry import register_stage
from pipeline.stage import FilterStage, Params, Resources

NON_ALNUM = re.compile(r"[^a-z0-9]+")
# a host name in ASCII (IDNA) form: dot-separated labels of letters, digits, "-" and "_"
HOST_NAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*")
INLINE_COMMENT = re.compile(r"\s+#.*$")


class UrlFilterParams(Params):
    path_fields: ClassVar[tuple[str, ...]] = (
        "block_domains_files",
        "block_url_substrings_files",
        "allow_domains_files",
    )

    default_lists: bool = Field(True, description="FineWeb's lists shipped in the datatrove wheel")
    block_domains: list[str] = Field(
        default_factory=list, description="domains to drop, with their subdomains (dropped as blocked_domain)"
    )
    block_domains_files: list[str] = Field(
        default_factory=list, description="files of domains to drop, one per line, # comments"
    )
    block_url_substrings: list[str] = Field(
        default_factory=list, description="drop URLs containing any of these (case-insensitive)"
    )
    block_url_substrings_files: list[str] = Field(
        default_factory=list, description="files of URL substrings to drop, one per line"
    )
    allow_domains: list[str] = Field(
        default_factory=list, description="domains exempt from every block (with their subdomains)"
    )
    allow_domains_files: list[str] = Field(
        default_factory=list, description="files of allowed domains, one per line"
    )
    allow_only: bool = Field(False, description="drop every domain not in the allow-list")
    soft_word_threshold: int = Field(2, ge=1, description="soft-banned words needed to drop a URL")
    drop_no_public_suffix: bool = Field(
        False,
        description="drop hosts without a public suffix (intranet names, reserved TLDs such as .test) "
        "as no_public_suffix; by default they are kept (as datatrove does) and counted in extra",
    )


def _datatrove_assets() -> Path:
    # Located through package metadata: importing datatrove itself is slow and not needed.
    return Path(str(metadata.distribution("datatrove").locate_file("datatrove/assets")))


def _hash(s: str) -> int:
    return xxhash.xxh3_64_intdigest(s.encode("utf-8", "surrogatepass"))


def _read_list(path: str | Path) -> list[str]:
    """One entry per line; blank lines, ``#`` lines and trailing `` # comments`` are ignored."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = (INLINE_COMMENT.sub("", line).strip() for line in f if not line.lstrip().startswith("#"))
        return [line for line in lines if line]


def _ascii_host(host: str) -> str:
    """IDNA (punycode) form of a non-ASCII host name, as block lists spell them."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _strip_www(host: str) -> str:
    rest = host.removeprefix("www.")
    return rest if "." in rest else host


def _clean_domain(d: str) -> str:
    return _ascii_host(_strip_www(d.strip().lower().strip("."))) if d.strip() else ""


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values.  numpy 2.4's ``np.unique`` takes a hash-table path that needs
    ~2.5 s for UT1's 4.56 M hashes; an in-place sort plus a neighbour compare needs ~0.3 s."""
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


UT1_DOMAINS = "ut1_domains.npy"  # sorted unique xxh3-64 hashes of the 4.56 M blocked domains
UT1_URLS = "ut1_urls.txt"


def _build_ut1() -> tuple[np.ndarray, list[str]]:
    """Parse UT1 from datatrove's tarball: ~1.3-4 CPU-s, most of it hashing 4.56 M domains."""
    domains = np.empty(0, dtype=np.uint64)
    urls: list[str] = []
    with tarfile.open(_datatrove_assets() / "url_filterblacklistsv0_3_0.tar.gz", "r:gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            lines = tar.extractfile(member).read().split(b"\n")  # type: ignore[union-attr]
            if member.name.endswith("domains"):
                domains = sorted_unique(
                    np.fromiter(
                        (xxhash.xxh3_64_intdigest(line.strip().lower()) for line in lines if line.strip()),
                        dtype=np.uint64,
                    )
                )
            elif member.name.endswith("urls"):
                # "host/path" entries (no scheme, no www.), matched as prefixes: see _url_prefixes
                urls = [line.decode("utf-8", "replace").strip().rstrip("/") for line in lines if line.strip()]
    return domains, urls


def prepare_ut1(cache: Path) -> None:
    """Write the parsed UT1 lists to ``cache`` once per run (on the driver, while Ray starts), so
    that each worker maps the 36 MB hash array instead of spending seconds rebuilding it."""
    if (cache / UT1_DOMAINS).exists() and (cache / UT1_URLS).exists():
        return
    domains, urls = _build_ut1()
    buf = io.BytesIO()
    np.save(buf, domains)
    atomic_write_bytes(cache / UT1_DOMAINS, buf.getvalue())
    atomic_write_bytes(cache / UT1_URLS, "\n".join(urls).encode())


@functools.lru_cache(maxsize=2)
def _ut1(cache: Path | None) -> tuple[np.ndarray, frozenset[str]]:
    if cache is not None and (cache / UT1_DOMAINS).exists() and (cache / UT1_URLS).exists():
        # mmap: workers on one machine share the pages instead of each holding a copy
        domains = np.load(cache / UT1_DOMAINS, mmap_mode="r")
        return domains, frozenset((cache / UT1_URLS).read_text(encoding="utf-8").splitlines())
    domains, urls = _build_ut1()
    return domains, frozenset(urls)


@functools.lru_cache(maxsize=1)
def _fineweb_words() -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    """(banned words, soft-banned words, banned sub-words), normalised as FineWeb does."""
    assets = _datatrove_assets()

    def words(name: str) -> frozenset[str]:
        return frozenset(NON_ALNUM.sub("", w.lower()) for w in _read_list(assets / name))

    return (
        words("banned_words.txt"),
        words("soft_banned_words.txt"),
        tuple(sorted(words("banned_subwords.txt"))),
    )


@functools.lru_cache(maxsize=1)
def tld_extractor():
    import tldextract

    # suffix_list_urls=() -> the snapshot bundled with tldextract; cache_dir=False -> no disk cache.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=False, fallback_to_snapshot=True)


class DomainSet:
    """A set of domains as sorted 64-bit hash arrays (the shared default list is kept apart from a
    user's few names, so that no task re-sorts 4.6 M hashes); ``contains`` checks hashed keys."""

    def __init__(self, *sorted_hashes: np.ndarray) -> None:
        self.parts = [h for h in sorted_hashes if len(h)]

    @classmethod
    def from_names(cls, names: Iterable[str], default: np.ndarray | None = None) -> DomainSet:
        """``default`` must already be sorted and unique (``_build_ut1`` makes it so)."""
        mine = np.fromiter((_hash(d) for d in map(_clean_domain, names) if d), dtype=np.uint64)
        return cls(sorted_unique(mine), *([] if default is None else [default]))

    def __len__(self) -> int:
        return sum(len(h) for h in self.parts)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        for hashes in self.parts:
            idx = np.searchsorted(hashes, keys)
            idx[idx == len(hashes)] = 0
            found |= hashes[idx] == keys
        return found


def _url_prefixes(url: str) -> list[str]:
    """``https://www.a.com/x/y?q`` -> [a.com/x, a.com/x/y]: the forms UT1's URL list uses (no scheme,
    port, ``www.``, query or fragment), cut at each path segment, since an entry blocks what is under it."""
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
        host = parts.hostname
    except ValueError:
        return []
    if not host:
        return []
    host = _ascii_host(_strip_www(host.strip(".")))
    segments = [s for s in parts.path.split("/") if s]
    return [host + "/" + "/".join(segments[:k]) for k in range(1, len(segments) + 1)]


def _url_host(url: str) -> str | None:
    """The host name of ``url`` (lower case, no trailing dot), None when it has none."""
    try:
        host = urlsplit(url if "://" in url else "//" + url).hostname
    except ValueError:
        return None
    host = _ascii_host((host or "").strip("."))
    return host if host and HOST_NAME.fullmatch(host) else None


def host_levels(fqdn: str, registered: str) -> list[str]:
    """``a.b.example.com`` -> [a.b.example.com, b.example.com, example.com] (a leading ``www.``
    label is dropped, non-ASCII names are IDNA-encoded).  Without a registered domain (a host with
    no public suffix: ``a.b.intranet``) every level down to the last label is checked."""
    fqdn = fqdn.lower()
    if fqdn != registered.lower():
        fqdn = _strip_www(fqdn)
    fqdn = _ascii_host(fqdn)
    if not fqdn:
        return []
    parts = fqdn.split(".")
    n = registered.count(".") + 1 if registered else 1
    return [".".join(parts[i:]) for i in range(0, max(1, len(parts) - n + 1))]


@register_stage
class UrlFilter(FilterStage):
    name = "url_filter"
    Params = UrlFilterParams
    resources = Resources(cpus=1, memory_mb=1024)

    def prepare(self) -> None:
        if self.params.default_lists and self.work is not None:
            prepare_ut1(self.work)

    def setup(self) -> None:
        p = self.params
        block_names = list(p.block_domains) + [d for f in p.block_domains_files for d in _read_list(f)]
        allow_names = list(p.allow_domains) + [d for f in p.allow_domains_files for d in _read_list(f)]
        substrings = list(p.block_url_substrings) + [
            s for f in p.block_url_substrings_files for s in _read_list(f)
        ]
        dom_hashes: np.ndarray | None = None
        self.blocked_urls: frozenset[str] = frozenset()
        self.banned: frozenset[str] = frozenset()
        self.soft_banned: frozenset[str] = frozenset()
        subwords: tuple[str, ...] = ()
        if p.default_lists:
            dom_hashes, self.blocked_urls = _ut1(self.work)
            self.banned, self.soft_banned, subwords = _fineweb_words()
        self.blocked = DomainSet.from_names(block_names, dom_hashes)
        self.allowed = DomainSet.from_names(allow_names)
        self.substrings = tuple(s.lower() for s in substrings if s)
        # One alternation regex beats a Python loop over ~100 sub-words (and needs no extra package).
        self.subword_re = re.compile("|".join(map(re.escape, subwords))) if subwords else None
        self.tld = tld_extractor()

    def decide(self, batch: pa.RecordBatch) -> Sequence[str | None]:
        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else [None] * batch.num_rows
        reasons: list[str | None] = [None] * len(urls)
        levels: list[list[str]] = []
        for i, url in enumerate(urls):
            if not url:
                reasons[i] = "no_url"
                levels.append([])
                continue
            ext = self.tld(url)
            if ext.suffix or ext.ipv4 or ext.ipv6:
                levels.append(host_levels(ext.fqdn or ext.domain, ext.top_domain_under_public_suffix))
                continue
            # No public suffix: a URL without a host is invalid; a host such as ``intranet`` or
            # ``server.test`` is a real (non-public) name, kept by default and checked at every level.
            host = _url_host(url)
            if host is None:
                reasons[i] = "invalid_url"
                levels.append([])
                continue
            self.stats.count("no_public_suffix")
            if self.params.drop_no_public_suffix:
                reasons[i] = "no_public_suffix"
                levels.append([])
                continue
            levels.append(host_levels(host, ""))
        flat = [h for lv in levels for h in lv]
        keys = np.fromiter((_hash(h) for h in flat), dtype=np.uint64, count=len(flat))
        blocked = self.blocked.contains(keys)
        allowed = self.allowed.contains(keys)
        pos = 0
        for i, lv in enumerate(levels):
            n = len(lv)
            if reasons[i] is None:
                hit_allow = bool(allowed[pos : pos + n].any())
                if self.params.allow_only and not hit_allow:
                    reasons[i] = "not_allowed"
                elif not hit_allow:
                    reasons[i] = self._url_reason(urls[i], blocked[pos : pos + n])
            pos += n
        return reasons

    def _url_reason(self, url: str, blocked_levels: np.ndarray) -> str | None:
        if blocked_levels.any():
            # the last level is the registered domain (datatrove: "domain"), others subdomains
            return "blocked_domain" if blocked_levels[-1] else "blocked_subdomain"
        if self.blocked_urls and not self.blocked_urls.isdisjoint(_url_prefixes(url)):
            return "blocked_url"
        lower = url.lower()
        if any(s in lower for s in self.substrings):
            return "blocked_substring"
        words = set(NON_ALNUM.split(lower))
        if not words.isdisjoint(self.banned):
            return "banned_word"
        if self.soft_banned and len(words & self.soft_banned) >= self.params.soft_word_threshold:
            return "soft_banned_words"
        if self.subword_re is not None and self.subword_re.search(NON_ALNUM.sub("", lower)):
            return "banned_subword"
        return None
