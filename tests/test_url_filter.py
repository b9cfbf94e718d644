"""UrlFilter: FineWeb's default lists from the datatrove wheel, domain levels, user lists,
allow-lists, word rules, bad URLs, and that it never touches the network or warns."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.stage import StageRunner
from stages.url_filter import UT1_DOMAINS, UrlFilter, UrlFilterParams, _fineweb_words, _ut1, tld_extractor

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_web.warc.gz"


def make(**params) -> UrlFilter:
    f = UrlFilter(UrlFilterParams(**params))
    f.setup()
    return f


def reasons(f: UrlFilter, urls: list[str | None]) -> list[str | None]:
    return list(f.decide(pa.RecordBatch.from_pydict({"url": pa.array(urls, pa.string())})))


@pytest.fixture(scope="module")
def default_filter() -> UrlFilter:
    return make()


# --- default lists (UT1 + FineWeb words, read from the datatrove wheel) ------------------------------


def test_default_lists_are_loaded():
    domains, urls = _ut1(None)
    banned, soft, subwords = _fineweb_words()
    assert len(domains) > 4_500_000
    assert len(urls) > 19_000
    assert {"2g1c", "porn", "xxx"} <= banned
    assert "mong" not in banned  # commented out ("#mong") in FineWeb's list
    assert {"sex", "anus", "babes"} <= soft
    assert "2girls1cup" in subwords


def test_default_lists_block_known_adult_domains(default_filter):
    urls = [
        "https://pornhub.com/view_video.php?viewkey=1",
        "https://www.pornhub.com/",
        "http://de.pornhub.com/categories",
        "https://xvideos.com/",
        "https://docs.python.org/3/library/os.html",
        "https://en.wikipedia.org/wiki/Gzip",
    ]
    assert reasons(default_filter, urls) == ["blocked_domain"] * 4 + [None, None]


def test_default_url_list_blocks_what_is_under_an_entry(default_filter):
    # UT1 lists "home.tiscali.cz/retyguf/public" (no scheme); its domain is not blocked.
    urls = [
        "http://home.tiscali.cz/retyguf/public",
        "https://www.home.tiscali.cz/retyguf/public/index.html?x=1",
        "http://home.tiscali.cz/retyguf/publication",
        "http://home.tiscali.cz/other/page.html",
    ]
    assert reasons(default_filter, urls) == ["blocked_url", "blocked_url", None, None]


def test_banned_words(default_filter):
    urls = [
        "https://example.org/videos/2g1c-original",  # a hard-banned word
        "https://example.org/2G1C",  # case does not matter
        "https://example.org/videos/sexy-pics",  # "sexy" is a word, "sex" is not there
        "https://example.org/sex/education",  # one soft-banned word: kept
        "https://example.org/sex/babes",  # two soft-banned words
        "https://example.org/watch-2-girls-1-cup-now",  # a banned sub-word after normalising
        "https://example.org/scunthorpe-united",
    ]
    assert reasons(default_filter, urls) == [
        "banned_word",
        "banned_word",
        None,
        None,
        "soft_banned_words",
        "banned_subword",
        None,
    ]


def test_soft_word_threshold():
    f = make(soft_word_threshold=3)
    urls = ["https://example.org/sex/babes", "https://example.org/sex/babes/nude"]
    assert reasons(f, urls) == [None, "soft_banned_words"]


# --- domain levels and user lists ---------------------------------------------------------------------


def test_subdomain_semantics():
    f = make(default_lists=False, block_domains=["example.com", "ads.example.net", "WWW.Shouty.ORG."])
    urls = [
        "https://example.com/",
        "https://a.b.example.com/x",
        "https://www.example.com",
        "HTTPS://A.EXAMPLE.COM:8443/path",
        "https://notexample.com/",
        "https://example.com.evil.org/",
        "https://ads.example.net/x",
        "https://x.ads.example.net/",
        "https://example.net/",
        "https://news.example.net/",
        "https://shouty.org/",
    ]
    assert reasons(f, urls) == [
        "blocked_domain",
        "blocked_domain",
        "blocked_domain",
        "blocked_domain",
        None,
        None,
        "blocked_subdomain",
        "blocked_subdomain",
        None,
        None,
        "blocked_domain",
    ]


def test_internationalised_domain_names():
    f = make(default_lists=False, block_domains=["b\u00fccher.de", "xn--mnchen-3ya.de"])
    urls = [
        "https://b\u00fccher.de/",
        "https://xn--bcher-kva.de/",
        "https://www.m\u00fcnchen.de/",
        "https://buecher.de/",
    ]
    assert reasons(f, urls) == ["blocked_domain", "blocked_domain", "blocked_domain", None]


def test_user_list_files(tmp_path):
    domains = tmp_path / "domains.txt"
    domains.write_text(
        "# my block list\n\nbad-site.com\n  spam.example.org   # trailing comment\n#good-site.com\n"
    )
    substrings = tmp_path / "substrings.txt"
    substrings.write_text("# url pieces\n/tracking/\nSESSIONID=\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("# exempt\nok.bad-site.com\n")
    f = make(
        default_lists=False,
        block_domains_files=[str(domains)],
        block_url_substrings_files=[str(substrings)],
        allow_domains_files=[str(allow)],
    )
    urls = [
        "https://bad-site.com/",
        "https://x.spam.example.org/",
        "https://good-site.com/",
        "https://site.org/tracking/pixel.gif",
        "https://site.org/page?sessionid=42",
        "https://ok.bad-site.com/",
        "https://site.org/page",
    ]
    assert reasons(f, urls) == [
        "blocked_domain",
        "blocked_subdomain",
        None,
        "blocked_substring",
        "blocked_substring",
        None,
        None,
    ]


def test_inline_url_substrings():
    f = make(default_lists=False, block_url_substrings=["/wp-login", "utm_source="])
    urls = ["https://a.org/wp-login.php", "https://a.org/?UTM_SOURCE=x", "https://a.org/login"]
    assert reasons(f, urls) == ["blocked_substring", "blocked_substring", None]


def test_allow_domains_exempt_from_every_block(default_filter):
    f = make(allow_domains=["pornhub.com", "example.org"], block_domains=["example.org"])
    urls = [
        "https://www.pornhub.com/",
        "https://xvideos.com/",
        "https://example.org/2g1c",
        "https://sub.example.org/x",
    ]
    assert reasons(f, urls) == [None, "blocked_domain", None, None]
    assert reasons(default_filter, urls[:1]) == ["blocked_domain"]


def test_allow_only():
    f = make(default_lists=False, allow_domains=["python.org"], allow_only=True)
    urls = ["https://docs.python.org/3/", "https://python.org", "https://example.com/", "", "not a url"]
    assert reasons(f, urls) == [None, None, "not_allowed", "no_url", "invalid_url"]


def test_no_url_and_invalid_url():
    f = make(default_lists=False)
    urls = [None, "", "not a url", "http:///path", "https://example.com/", "http://93.184.216.34/x"]
    assert reasons(f, urls) == ["no_url", "no_url", "invalid_url", "invalid_url", None, None]
    batch = pa.RecordBatch.from_pydict({"text": ["a", "b"]})  # no url column at all
    assert list(f.decide(batch)) == ["no_url", "no_url"]


def test_transform_and_stats():
    f = make(default_lists=False, block_domains=["blocked.org"])
    runner = StageRunner(f)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["1", "2", "3", "4"],
            "url": ["https://ok.org/a", "https://blocked.org/", None, "https://ok.org/b"],
            "text": ["one", "two", "three", "four"],
        }
    )
    out = runner(batch)
    assert out.to_pydict() == {
        "id": ["1", "4"],
        "url": ["https://ok.org/a", "https://ok.org/b"],
        "text": ["one", "four"],
    }
    s = f.stats
    assert (s.docs_in, s.docs_out, dict(s.dropped)) == (4, 2, {"blocked_domain": 1, "no_url": 1})
    assert s.docs_in - s.docs_out == sum(s.dropped.values())
    assert [(r["id"], r["reason"]) for r in runner.samples] == [("2", "blocked_domain"), ("3", "no_url")]


# --- no network, no warnings -------------------------------------------------------------------------


def test_no_network_attempt_and_no_warnings(monkeypatch):
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    _ut1.cache_clear()
    _fineweb_words.cache_clear()
    tld_extractor.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = make()
        got = reasons(f, ["https://pornhub.com/", "https://docs.python.org/3/", "https://a.b.c.co.uk/x"])
    assert got == ["blocked_domain", None, None]
    assert attempts == []


def test_prepared_cache_is_what_workers_load(tmp_path):
    """prepare() (driver) writes the parsed lists once; setup() (workers) maps them: same decisions."""
    stage = UrlFilter(UrlFilterParams())
    stage.work = tmp_path
    stage.prepare()
    cached = np.load(tmp_path / UT1_DOMAINS, mmap_mode="r")
    built, built_urls = _ut1(None)
    assert np.array_equal(cached, built)
    assert bool(np.all(cached[1:] > cached[:-1]))  # sorted and unique: searchsorted relies on it
    stage.setup()
    assert isinstance(stage.blocked.parts[-1], np.memmap)
    assert stage.blocked_urls == built_urls
    urls = ["https://pornhub.com/", "https://docs.python.org/3/", "http://home.tiscali.cz/retyguf/public/x"]
    assert reasons(stage, urls) == reasons(make(), urls)
    mtime = (tmp_path / UT1_DOMAINS).stat().st_mtime_ns
    stage.prepare()  # idempotent: a resumed run does not rebuild it
    assert (tmp_path / UT1_DOMAINS).stat().st_mtime_ns == mtime


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"{SAMPLE} is not available")
def test_sample_urls(default_filter):
    from warcgen import read

    from stages.warc import WarcSource

    rows = read(WarcSource, [SAMPLE]).rows
    got = reasons(default_filter, [r["url"] for r in rows])
    blocked = sorted(u for u, r in zip((r["url"] for r in rows), got) if r)
    assert [r for r in got if r] == ["blocked_domain"] * 4
    assert [u.split("/")[2] for u in blocked] == [
        "gay.ch",
        "jungefreiheit.de",
        "www.lacuarta.com",
        "www.siegessaeule.de",
    ]


NO_SUFFIX = [
    "http://localhost/",
    "http://intranet/wiki/Page",
    "https://build.corp.test/x",
    "http://a.b.internal:8080/",
]


def test_hosts_without_a_public_suffix_are_kept_and_counted():
    """datatrove keeps intranet names and reserved TLDs; so do we, counted in extra."""
    f = make(default_lists=False, block_domains=["corp.test"])
    runner = StageRunner(f)
    urls = [*NO_SUFFIX, "https://example.com/"]
    out = runner(pa.RecordBatch.from_pydict({"id": [str(i) for i in range(len(urls))], "url": urls}))
    # corp.test is blocked at its level like any domain; the other three are kept
    assert out.column("url").to_pylist() == [NO_SUFFIX[0], NO_SUFFIX[1], NO_SUFFIX[3], urls[-1]]
    assert dict(runner.stats.dropped) == {"blocked_subdomain": 1}
    assert runner.stats.extra == {"no_public_suffix": 4}


def test_hosts_without_a_public_suffix_dropped_when_asked():
    f = make(default_lists=False, drop_no_public_suffix=True)
    assert reasons(f, [*NO_SUFFIX, "https://example.com/"]) == ["no_public_suffix"] * 4 + [None]
