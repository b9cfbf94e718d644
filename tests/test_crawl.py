"""The crawler (``format: crawl``) against real HTTP servers the tests start on 127.0.0.x.

One crawl of a small "web" (module fixture ``world``) runs through the whole pipeline
(``[crawl -> extract]``, in-process) and most tests check its server-side request log, its WARC
files and its stats: what was and was not fetched, request spacing per host, retries, robots.txt,
redirects, limits and content types.  Separate crawls check the private-address rule, the
equality of ``[crawl -> extract]`` with ``[warc -> extract]``, kill-and-resume of ``winnow crawl``
and the Ray host-group mode.
"""

from __future__ import annotations

import gzip
import itertools
import json
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from crawlserver import DEV_WEB, Page, Sites, html, http_date, replayed_pages, sitemap
from helpers import REPO, kill_run_when, read_docs, winnow, write_config
from warcio.archiveiterator import ArchiveIterator

from pipeline.config import load_pipelines
from pipeline.executor import run_pipeline
from pipeline.stage import RunFailed
from stages import crawl_fetch
from stages.crawl import CrawlParams, retry_after_seconds, run_crawl
from stages.crawl_frontier import extract_links, url_key

pytestmark = pytest.mark.skipif(not DEV_WEB.exists(), reason=f"{DEV_WEB} is not available")

A, B, C, OUT = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9"
SCOPE = r"^http://127\.0\.0\.\d+:\d+/(t/.*)?$"  # the test routes: replayed pages' own links stay out
A_DELAY = 0.15  # A's robots.txt Crawl-delay, above the configured delay
DELAY = 0.05
SLOW = 0.3  # /t/slow answers after this (under the read timeout)
READ_TIMEOUT = 0.8


def build_world(sites: Sites, pages: list) -> dict[str, str]:
    """Routes of hosts A, B, C and the outside host; returns served URL -> original URL."""
    a, b, c, out = sites[A], sites[B], sites[C], sites[OUT]
    served: dict[str, str] = {}
    for i, p in enumerate(pages[:4]):
        a.page(f"/t/p/{i}", p.body, p.content_type)
        served[f"{a.base}/t/p/{i}"] = p.url
    for i, p in enumerate(pages[4:]):
        b.page(f"/t/p/{i}", p.body, p.content_type)
        served[f"{b.base}/t/p/{i}"] = p.url
    a.page(
        "/robots.txt",
        f"User-agent: *\nDisallow: /t/private/\nCrawl-delay: {A_DELAY}\nSitemap: {a.base}/t/sitemap.xml\n",
        "text/plain",
    )
    a.page("/t/sitemap.xml", sitemap([f"{a.base}/t/from-sitemap"]), "application/xml")
    a.page("/t/from-sitemap", html("only in the sitemap", []))
    links = [f"/t/p/{i}" for i in range(4)] + [
        "/t/private/secret",
        "/t/slow",
        "/t/hang",
        "/t/e500",
        "/t/busy429",
        "/t/busy503",
        "/t/loop/a",
        "/t/moved",
        "/t/big",
        "/t/big-stream",
        "/t/file.pdf",
        "/t/dup",
        "/t/meta-nofollow",
        "/t/based",
        "/t/p/0#fragment",
        f"HTTP://127.0.0.2:{a.port}/t/p/1",
        f"{b.base}/",
        f"{c.base}/t/x",
        f"{out.base}/t/x",
        "http://elsewhere.invalid/t/x",
        "ftp://127.0.0.2/t/ftp",
        "mailto:someone@example.org",
        "javascript:void(0)",
    ]
    a.page("/", html("A", links).replace("</ul>", '<li><a rel="nofollow" href="/t/nofollow">x</a></li></ul>'))
    a.page("/t/nofollow", html("never", []))
    a.page("/t/slow", html("slow", []), delay=SLOW)
    a.page("/t/hang", html("hang", []), delay=READ_TIMEOUT * 2)
    a.page("/t/e500", "<html><body>boom</body></html>", status=500)
    a.route(
        "/t/busy429",
        lambda n: (
            Page(429, b"slow down", {"Retry-After": "1"}) if n == 0 else Page(body=html("ok429", []).encode())
        ),
    )
    a.route(
        "/t/busy503",
        lambda n: (
            Page(503, b"later", {"Retry-After": http_date(1)})
            if n == 0
            else Page(body=html("ok503", []).encode())
        ),
    )
    a.route("/t/loop/a", lambda n: Page(302, b"", {"Location": "/t/loop/b"}))
    a.route("/t/loop/b", lambda n: Page(302, b"", {"Location": "/t/loop/a"}))
    a.route("/t/moved", lambda n: Page(301, b"", {"Location": "/t/target"}))
    a.page("/t/target", html("moved here", []))
    a.page("/t/big", b"<html><body>" + b"x" * (20 * 1024 * 1024) + b"</body></html>")
    a.route(
        "/t/big-stream",
        lambda n: Page(body=b"<html><body>" + b"y" * (3 * 1024 * 1024), chunks=30, no_length=True),
    )
    a.page("/t/file.pdf", b"%PDF-1.4 not a page", "application/pdf")
    a.page("/t/dup", pages[0].body, pages[0].content_type)
    a.page(
        "/t/meta-nofollow",
        html("meta", ["/t/never-meta"], extra='<meta name="robots" content="noindex, nofollow">'),
    )
    a.page("/t/never-meta", html("never", []))
    a.page("/t/based", html("based", ["rel"], extra='<base href="/t/sub/">'))
    a.page("/t/sub/rel", html("relative to base", []))
    b.page("/", html("B", [f"/t/p/{i}" for i in range(len(pages) - 4)] + [f"{a.base}/"]))
    c.page("/robots.txt", "oops", status=500)
    c.page("/t/x", html("C", []))
    out.page("/t/x", html("outside", []))
    return served


def crawl_input(sites: Sites, **over) -> dict:
    return {
        "format": "crawl",
        "seeds": [f"{sites[A].base}/"],
        "allowed_domains": [A, B, C],
        "url_patterns": [SCOPE],
        "max_depth": 3,
        "delay": DELAY,
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": 2,
        "max_retries": 1,
        "backoff": 0.05,
        "retry_after_cap": 5,
        "max_response_bytes": 1024 * 1024,
        "allow_private_addresses": True,
        "concurrency": 4,
        **over,
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crawl")
    pages = replayed_pages(8)
    with Sites([A, B, C, OUT]) as sites:
        served = build_world(sites, pages)
        cfg = write_config(
            tmp / "pipelines.yaml",
            {
                "web": {
                    "input": crawl_input(sites),
                    "output": str(tmp / "run"),
                    "stages": [{"extract": {"deduplicate": False}}],
                }
            },
        )
        (spec,) = load_pipelines(cfg, ["web"])
        started = time.monotonic()
        result = run_pipeline(spec, in_process=True)
        yield {
            "sites": sites,
            "pages": pages,
            "served": served,
            "run": tmp / "run",
            "stats": {s["name"]: s for s in result.stats},
            "seconds": time.monotonic() - started,
            "tmp": tmp,
            "cfg": cfg,
        }


def warc_records(run: Path) -> list:
    out = []
    for path in sorted((run / "warc").glob("*.warc.gz")):
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                http = rec.http_headers
                out.append(
                    {
                        "type": rec.rec_type,
                        "uri": rec.rec_headers.get_header("WARC-Target-URI"),
                        "id": rec.rec_headers.get_header("WARC-Record-ID"),
                        "concurrent": rec.rec_headers.get_header("WARC-Concurrent-To"),
                        "ip": rec.rec_headers.get_header("WARC-IP-Address"),
                        "status": http.get_statuscode() if http and rec.rec_type != "request" else None,
                        "refers_to": rec.rec_headers.get_header("WARC-Refers-To-Target-URI"),
                        "head": http.to_str() if http else "",
                        "body": rec.content_stream().read(),
                    }
                )
    return out


# --- what was and was not fetched ----------------------------------------------------------------


def test_fetched_exactly_the_allowed_pages(world):
    sites = world["sites"]
    got = Counter(sites.paths(A))
    once = ["/", *(f"/t/p/{i}" for i in range(4)), "/t/slow", "/t/e500", "/t/loop/a", "/t/loop/b"]
    once += ["/t/moved", "/t/target", "/t/big", "/t/big-stream", "/t/file.pdf", "/t/dup"]
    once += ["/t/meta-nofollow", "/t/based", "/t/sub/rel"]
    expected = Counter(once) + Counter({"/t/busy429": 2, "/t/busy503": 2, "/t/hang": 2})
    assert got == expected
    # never: robots-disallowed, rel=nofollow, meta nofollow, sitemap-only (sitemaps: false)
    assert Counter(sites.paths(B)) == Counter(["/", *(f"/t/p/{i}" for i in range(4))])
    assert sites.paths(C) == []  # robots.txt answered 500: disallow all
    assert [p for _, ip, p in sites.requests(robots=True) if ip == C] == ["/robots.txt"]
    assert sites.requests(OUT, robots=True) == []  # outside allowed_domains: not even robots.txt
    robots = [p for _, ip, p in sites.requests(robots=True) if p == "/robots.txt"]
    assert len(robots) == 3  # once per host (A, B, C), cached


def test_stats_count_every_failure_by_reason(world):
    crawl = world["stats"]["crawl"]
    dropped = crawl["dropped"]
    assert dropped["robots_disallowed"] == 1  # /t/private/secret
    assert dropped["robots_unreachable"] == 1  # C's page
    assert dropped["timeout"] == 1  # /t/hang, after its retry
    assert dropped["http_5xx"] == 1  # /t/e500 (a 500 is not retried)
    assert dropped["too_large"] == 2  # Content-Length and streamed
    assert dropped["content_type"] == 1
    assert dropped["redirect_loop"] == 1
    assert dropped["revisit"] == 1  # /t/dup = /t/p/0's payload
    assert dropped["off_domain"] >= 2  # the outside host, elsewhere.invalid, the pages' own sites
    assert dropped["url_pattern"] > 0
    assert crawl["extra"]["retries"] == 3
    assert crawl["extra"]["retry_reasons"] == {"http_429": 1, "http_503": 1, "timeout": 1}
    assert crawl["docs_in"] - crawl["docs_out"] == sum(dropped.values())
    pages_2xx = 4 + 4 + 2 + 5  # replayed, the two indexes, slow/busy429/busy503/target/dup
    assert crawl["docs_out"] == pages_2xx - 1 + 3  # minus the revisit; meta-nofollow, based, sub/rel
    names = [s for s in world["stats"]]
    assert names[:2] == ["crawl", "read"]


# --- politeness ----------------------------------------------------------------------------------


def gaps(sites: Sites, ip: str) -> list[tuple[float, str]]:
    reqs = sites.requests(ip)
    return [(t1 - t0, p1) for (t0, _, _), (t1, _, p1) in itertools.pairwise(reqs)]


def test_requests_to_one_host_are_spaced(world):
    sites = world["sites"]
    # server-side accept times: a connection may be accepted a little late on a loaded machine
    # (load average ~10 on 2 cores here), which shortens the next gap; the crawler's own start
    # times are exactly >= the delay
    slack = 0.03
    for gap, path in gaps(sites, A):
        assert gap >= A_DELAY - slack, (gap, path)  # Crawl-delay raised the 0.05 s minimum
    for gap, path in gaps(sites, B):
        assert gap >= DELAY - slack, (gap, path)
    # AutoThrottle: after the slow answer the delay moves halfway to its latency
    after_slow = [g for (g, _), prev in zip(gaps(sites, A), sites.paths(A)) if prev == "/t/slow"]
    assert after_slow and after_slow[0] >= (A_DELAY + SLOW) / 2 - slack
    # hosts are crawled in parallel: B's requests happen while A is still being crawled
    a_times = [t for t, _, _ in sites.requests(A)]
    b_times = [t for t, _, _ in sites.requests(B)]
    assert min(b_times) < max(a_times) and max(b_times) < max(a_times)


def test_retries_honour_retry_after(world):
    sites = world["sites"]
    times = {
        p: [t for t, _, q in sites.requests(A) if q == p] for p in ("/t/busy429", "/t/busy503", "/t/hang")
    }
    assert times["/t/busy429"][1] - times["/t/busy429"][0] >= 1.0 - 0.01  # Retry-After: 1
    assert times["/t/busy503"][1] - times["/t/busy503"][0] >= 0.05  # an HTTP-date ~1 s ahead (1 s resolution)
    assert len(times["/t/hang"]) == 2  # a read timeout is retried once (max_retries 1)


def test_retry_after_forms():
    now = time.time()
    assert retry_after_seconds("7") == 7.0
    assert 29 <= retry_after_seconds(http_date(30), now) <= 31
    assert retry_after_seconds(http_date(-30)) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# --- WARC output ---------------------------------------------------------------------------------


def test_warc_validates_and_links_request_to_response(world):
    files = sorted((world["run"] / "warc").glob("*.warc.gz"))
    assert files
    check = subprocess.run(
        [sys.executable, "-m", "warcio.cli", "check", "-v", *map(str, files)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "digest pass" in check.stdout
    recs = warc_records(world["run"])
    assert recs[0]["type"] == "warcinfo"
    info = recs[0]["body"].decode()
    assert "winnow-crawl-config" in info and "allowed_domains" in info
    ids = {r["id"]: r for r in recs}
    requests = [r for r in recs if r["type"] == "request"]
    assert requests and all(r["ip"] == r["uri"].split("/")[2].split(":")[0] for r in requests)
    for req in requests:
        target = ids[req["concurrent"]]
        assert target["type"] in ("response", "revisit") and target["uri"] == req["uri"]
        assert req["head"].startswith("GET ") and "User-Agent: winnow-crawler" in req["head"]
    assert gzip_members(files[0].read_bytes()) == len(recs)  # one gzip member per record


def gzip_members(data: bytes) -> int:
    count, pos = 0, 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        assert d.eof
        pos = len(data) - len(d.unused_data)
        count += 1
    return count


def test_warc_records_redirect_hops_and_revisits(world):
    recs = warc_records(world["run"])
    base = world["sites"][A].base
    status = {(r["uri"], r["status"]) for r in recs if r["type"] == "response"}
    assert (f"{base}/t/moved", "301") in status and (f"{base}/t/target", "200") in status
    assert (f"{base}/t/loop/a", "302") in status and (f"{base}/t/loop/b", "302") in status
    assert (f"{base}/t/busy429", "429") in status and (f"{base}/t/busy429", "200") in status
    revisit = [r for r in recs if r["type"] == "revisit"]
    assert [(r["uri"], r["refers_to"]) for r in revisit] == [(f"{base}/t/dup", f"{base}/t/p/0")]
    # nothing over the size limit and no non-HTML 2xx was stored
    uris = {r["uri"] for r in recs}
    assert not {f"{base}/t/big", f"{base}/t/big-stream", f"{base}/t/file.pdf"} & uris


def test_warc_reader_reads_the_pages_back(world):
    rows = read_docs(world["run"])
    by_url = {r["url"]: r for r in rows}
    served = world["served"]
    assert set(served) <= set(by_url)
    assert world["stats"]["read"]["docs_out"] == len(rows) == world["stats"]["crawl"]["docs_out"]
    assert all(r["text"] for r in rows if r["url"] in served)


def test_crawl_then_extract_equals_warc_then_extract(world):
    """The replayed pages' texts through [crawl -> extract] equal [warc -> extract] over their
    original records of dev_web.warc.gz."""
    tmp = world["tmp"]
    ref = tmp / "reference.warc.gz"
    ref.write_bytes(b"".join(p.record for p in world["pages"]))
    cfg = write_config(
        tmp / "ref.yaml",
        {
            "ref": {
                "input": {"format": "warc", "paths": [str(ref)]},
                "output": str(tmp / "ref"),
                "stages": [{"extract": {"deduplicate": False}}],
            }
        },
    )
    (spec,) = load_pipelines(cfg, ["ref"])
    run_pipeline(spec, in_process=True)
    reference = {r["url"]: r["text"] for r in read_docs(tmp / "ref")}
    crawled = {r["url"]: r["text"] for r in read_docs(world["run"])}
    assert len(reference) == len(world["pages"]) == 8
    for served, original in world["served"].items():
        assert crawled[served] == reference[original], served


def test_rerun_of_a_finished_crawl_fetches_nothing(world):
    sites = world["sites"]
    before = len(sites.requests(robots=True))
    (spec,) = load_pipelines(world["cfg"], ["web"])
    result = run_pipeline(spec, in_process=True)
    assert len(sites.requests(robots=True)) == before
    assert {s["name"]: s for s in result.stats}["crawl"] == world["stats"]["crawl"]


# --- safety --------------------------------------------------------------------------------------


def test_private_addresses_refused_at_connect_time(tmp_path, monkeypatch):
    real = crawl_fetch.RESOLVER
    monkeypatch.setattr(
        crawl_fetch,
        "RESOLVER",
        lambda host, port: ["127.0.0.2"] if host == "rebind.test" else real(host, port),
    )
    with Sites([A]) as sites:
        sites[A].page("/", html("A", []))
        port = sites[A].port
        params = CrawlParams(
            seeds=[f"http://rebind.test:{port}/", f"http://localhost:{port}/", "http://10.1.2.3/"],
            allowed_domains=["rebind.test", "localhost", "10.1.2.3"],
            delay=0.01,
        )
        result = run_crawl(params, tmp_path, tmp_path)
        assert sites.requests(robots=True) == []
    assert result["stats"]["dropped"] == {"private_address": 3}
    assert result["stats"]["docs_out"] == 0


def test_is_public():
    assert crawl_fetch.is_public("93.184.215.14") and crawl_fetch.is_public("2606:4700::1111")
    for ip in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "::1", "fe80::1"):
        assert not crawl_fetch.is_public(ip), ip
    assert not crawl_fetch.is_public("::ffff:127.0.0.1") and not crawl_fetch.is_public("0.0.0.0")


def test_non_http_seeds_are_config_errors(tmp_path):
    with pytest.raises(ValueError, match="not an http"):
        CrawlParams(seeds=["file:///etc/passwd"])
    with pytest.raises(ValueError, match="seeds"):
        CrawlParams()
    with pytest.raises(ValueError, match="not 'paths'"):
        CrawlParams(seeds=["http://a/"], paths=["x.warc.gz"])
    cfg = write_config(
        tmp_path / "p.yaml", {"c": {"input": {"format": "crawl", "seeds": ["http://a/"], "delai": 1}}}
    )
    res = winnow("validate", "-c", str(cfg))
    assert res.returncode == 2 and "'delai'" in res.stderr and "did you mean 'delay'" in res.stderr


# --- frontier units ------------------------------------------------------------------------------


def test_url_key_canonicalises():
    assert url_key("HTTP://Example.COM:80/a?b=1&a=2#frag") == url_key("http://example.com/a?a=2&b=1")
    assert url_key("https://example.com:443/") == url_key("https://example.com")
    assert url_key("http://example.com:8080/") != url_key("http://example.com/")
    assert url_key("http://example.com/%7Euser") == url_key("http://example.com/~user")


def test_extract_links_rules():
    page = (
        '<html><head><base href="http://h/dir/"></head><body>'
        '<a href="x">1</a><a rel="nofollow" href="/n">2</a>'
        '<a href="mailto:a@b">3</a><a href="#top">4</a><area href="/map"><a href="x">dup</a></body></html>'
    )
    assert extract_links(page, "http://h/index") == ["http://h/dir/x", "http://h/dir/", "http://h/map"]
    meta = '<html><head><meta name="robots" content="NOFOLLOW"></head><body><a href="/x">x</a></body></html>'
    assert extract_links(meta, "http://h/") == []
    assert extract_links("", "http://h/") == []


# --- kill and resume -----------------------------------------------------------------------------

CHAIN = 10  # pages of the resume site, linked in a chain (the crawl is sequential and slow)
RESUME_DELAY = 0.25  # long enough that the kill lands between two requests


def chain_site(sites: Sites, ip: str) -> None:
    s = sites[ip]
    s.page("/robots.txt", "User-agent: *\nAllow: /\n", "text/plain")
    s.page("/", html("start", ["/t/0"]))
    for i in range(CHAIN):
        s.page(
            f"/t/{i}",
            html(f"page {i}", [f"/t/{i + 1}", f"/t/{i + 1}", "/"] + ([f"/t/x{i}"] if i % 3 else [])),
        )
        s.page(f"/t/x{i}", html(f"side {i}", ["/"]))


def test_kill_and_resume_fetches_nothing_twice(tmp_path):
    ip = "127.0.0.5"
    with Sites([ip]) as sites:
        chain_site(sites, ip)
        inp = {
            "format": "crawl",
            "seeds": [f"{sites[ip].base}/"],
            "allowed_domains": [ip],
            "delay": RESUME_DELAY,
            "max_depth": 50,
            "allow_private_addresses": True,
        }
        cfg = write_config(
            tmp_path / "p.yaml",
            {
                "full": {"input": inp, "output": str(tmp_path / "full")},
                "cut": {"input": inp, "output": str(tmp_path / "cut")},
            },
        )
        # the uninterrupted crawl
        (spec,) = load_pipelines(cfg, ["full"])
        from pipeline.executor import prepare_input

        prepare_input(spec)
        full = sites.paths(ip)
        assert len(full) == len(set(full)) > CHAIN
        with sites.lock:
            sites.log.clear()

        journal = tmp_path / "cut" / "_work" / "crawl" / "group-000.jsonl"

        def pages_done() -> int:
            try:
                return sum('"pages":1' in line for line in journal.read_text().splitlines())
            except OSError:
                return 0

        kill_run_when(["crawl", "cut", "-c", str(cfg)], lambda: pages_done() >= 5, poll=0.01)
        before = sites.paths(ip)
        assert 5 <= len(before) < len(full)
        res = winnow("crawl", "cut", "-c", str(cfg), timeout=120)
        assert res.returncode == 0, res.stderr
        after = sites.paths(ip)
    assert len(after) == len(set(after)), [p for p, n in Counter(after).items() if n > 1]
    assert sorted(after) == sorted(full)
    recs = warc_records(tmp_path / "cut")
    responses = [r["uri"] for r in recs if r["type"] == "response"]
    assert len(responses) == len(set(responses)) == len(full)
    for f in (tmp_path / "cut" / "warc").glob("*.warc.gz"):
        assert subprocess.run([sys.executable, "-m", "warcio.cli", "check", str(f)]).returncode == 0
    # `winnow run` of the crawled pipeline: the finished crawl is not redone, its WARC is read
    res = winnow("run", "cut", "-c", str(cfg), "--num-cpus", "1", "--no-progress", timeout=300)
    assert res.returncode == 0, res.stderr
    assert sites.paths(ip) == after
    stats = json.loads((tmp_path / "cut" / "stats.json").read_text())
    assert [s["name"] for s in stats] == ["crawl", "read"]
    pages = [p for p in full if p != f"/t/{CHAIN}"]  # the chain's last link is a 404
    assert stats[0]["docs_out"] == stats[1]["docs_out"] == len(read_docs(tmp_path / "cut")) == len(pages)
    assert {r["url"] for r in read_docs(tmp_path / "cut")} == {sites[ip].base + p for p in pages}


def test_winnow_crawl_rejects_other_inputs(tmp_path):
    cfg = write_config(
        tmp_path / "p.yaml",
        {"w": {"input": {"format": "warc", "paths": [str(REPO / "samples" / "sample.warc.gz")]}}},
    )
    res = winnow("crawl", "w", "-c", str(cfg))
    assert res.returncode == 2 and "nothing to crawl" in res.stderr


# --- host groups on Ray --------------------------------------------------------------------------


def test_host_groups_on_ray_keep_politeness_per_host(tmp_path):
    """``workers: 2``: two Ray actors, each owning the hosts that hash to it; links to the other
    group's hosts are routed between rounds.  Every page is fetched once, each host's records are
    in one group's WARC files only, and spacing holds per host."""
    from pipeline.executor import init_ray
    from stages.crawl import group_of
    from stages.crawl_frontier import hostname_of

    ips = [f"127.0.0.{i}" for i in range(10, 30)]
    with Sites(ips[:6]) as sites:
        groups = {group_of(hostname_of(sites[ip].base + "/"), 2) for ip in ips[:6]}
        assert groups == {0, 1}
        for n, ip in enumerate(ips[:6]):
            nxt = sites[ips[(n + 1) % 6]].base
            sites[ip].page("/", html(ip, ["/t/1", "/t/2", f"{nxt}/"]))
            sites[ip].page("/t/1", html(f"{ip} one", ["/t/2", f"{nxt}/t/1"]))
            sites[ip].page("/t/2", html(f"{ip} two", ["/"]))
        params = CrawlParams(
            seeds=[f"{sites[ips[0]].base}/"],
            allowed_domains=ips[:6],
            delay=0.1,
            workers=2,
            concurrency=4,
            round_seconds=0.5,
            max_depth=20,
            allow_private_addresses=True,
        )
        result = run_crawl(params, tmp_path, tmp_path, start_ray=lambda: init_ray(None, 2))
        for ip in ips[:6]:
            assert sorted(sites.paths(ip)) == ["/", "/t/1", "/t/2"], ip
            assert all(g >= 0.1 - 0.05 for g, _ in gaps(sites, ip)), gaps(sites, ip)
    assert result["stats"]["docs_out"] == 18
    owner: dict[str, set[str]] = {}
    for path in (tmp_path / "warc").glob("*.warc.gz"):
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                uri = rec.rec_headers.get_header("WARC-Target-URI")
                if rec.rec_type == "response":
                    owner.setdefault(uri.split("/")[2], set()).add(path.name.split("-")[1])
    assert len(owner) == 6 and all(len(g) == 1 for g in owner.values())
    assert {g for gs in owner.values() for g in gs} == {"g000", "g001"}


def test_sitemaps_from_robots_seed_the_crawl_when_enabled(tmp_path):
    ip = "127.0.0.6"
    with Sites([ip]) as sites:
        s = sites[ip]
        s.page("/robots.txt", f"User-agent: *\nSitemap: {s.base}/t/index.xml\n", "text/plain")
        s.page("/t/index.xml", sitemap([f"{s.base}/t/more.xml"]), "application/xml")
        s.page("/t/more.xml", gzip.compress(sitemap([f"{s.base}/t/a", f"{s.base}/t/b"])), "application/gzip")
        s.page("/", html("home", []))
        for p in ("/t/a", "/t/b"):
            s.page(p, html(p, []))
        params = CrawlParams(
            seeds=[f"{s.base}/"], delay=0.01, sitemaps=True, allow_private_addresses=True, max_depth=0
        )
        result = run_crawl(params, tmp_path, tmp_path)
        assert sorted(sites.paths(ip)) == ["/", "/t/a", "/t/b", "/t/index.xml", "/t/more.xml"]
    assert result["stats"]["docs_out"] == 5  # pages and sitemaps are stored; the reader keeps HTML


def test_warc_files_rotate_by_size(tmp_path):
    from stages.crawl_warc import WarcOut

    out = WarcOut(tmp_path, "crawl-g000", 3000, {"seeds": ["x"]})
    request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    for n in range(6):
        body = f"<html>{n}{'z' * 1500}</html>".encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        out.write_exchange(f"http://h/{n}", request, head + body, "1.2.3.4", time.time(), 200)
    out.close()
    files = sorted(tmp_path.glob("*.warc.gz"))
    assert len(files) >= 2
    for f in files:
        with open(f, "rb") as fh:
            types = [r.rec_type for r in ArchiveIterator(fh)]
        assert types[0] == "warcinfo" and types.count("response") >= 1
    # a resume cuts each file back to its committed size and removes uncommitted files
    sizes = dict(out.sizes)
    with open(files[0], "ab") as fh:
        fh.write(b"\x1f\x8b\x08 torn")
    (tmp_path / "crawl-g000-00099.warc.gz").write_bytes(b"partial")
    again = WarcOut(tmp_path, "crawl-g000", 3000, {})
    again.restore(sizes, {})
    assert {f.name: f.stat().st_size for f in tmp_path.glob("*.warc.gz")} == sizes


def test_max_pages_robots_redirect_and_unreachable_hosts(tmp_path, monkeypatch):
    """``max_pages`` counts 2xx pages; robots.txt is followed through a redirect; a name that
    does not resolve and a port that refuses are counted under dns / connect, never fetched."""
    import socket

    real = crawl_fetch.RESOLVER

    def resolver(host: str, port: int) -> list[str]:
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port)

    monkeypatch.setattr(crawl_fetch, "RESOLVER", resolver)
    ip = "127.0.0.7"
    with Sites([ip]) as sites:
        chain_site(sites, ip)
        s = sites[ip]
        s.route("/robots.txt", lambda n: Page(301, b"", {"Location": "/t/robots-real.txt"}))
        s.page("/t/robots-real.txt", "User-agent: *\nDisallow: /t/x\n", "text/plain")
        closed = socket.socket()
        closed.bind(("127.0.0.8", 0))
        refused = f"http://127.0.0.8:{closed.getsockname()[1]}/"  # bound, not listening: refused
        params = CrawlParams(
            seeds=[f"{s.base}/", "http://nowhere.test/", refused],
            allowed_domains=[ip, "nowhere.test", "127.0.0.8"],
            delay=0.01,
            max_pages=5,
            max_depth=50,
            allow_private_addresses=True,
        )
        result = run_crawl(params, tmp_path, tmp_path)
        closed.close()
        fetched = sites.paths(ip)
    assert fetched == ["/t/robots-real.txt", "/", "/t/0", "/t/1", "/t/2", "/t/3"]
    assert not any(p.startswith("/t/x") for p in fetched)
    stats = result["stats"]
    assert stats["docs_out"] == 5
    assert stats["dropped"]["dns"] == 1 and stats["dropped"]["connect"] == 1
    # finished: the same config returns the result, another one is refused (never reused silently)
    assert run_crawl(params, tmp_path, tmp_path) == result
    with pytest.raises(RunFailed, match="another configuration"):
        run_crawl(params.model_copy(update={"max_pages": 6}), tmp_path, tmp_path)


def test_robots_cache_expires_and_long_crawl_delay_skips_host(tmp_path):
    fast, slow = "127.0.0.30", "127.0.0.31"
    with Sites([fast, slow]) as sites:
        chain_site(sites, fast)
        sites[slow].page("/robots.txt", "User-agent: *\nCrawl-delay: 100\n", "text/plain")
        sites[slow].page("/", html("slow host", []))
        params = CrawlParams(
            seeds=[f"{sites[fast].base}/", f"{sites[slow].base}/"],
            delay=0.1,
            robots_ttl=0.35,
            max_pages=8,
            max_depth=50,
            allow_private_addresses=True,
        )
        result = run_crawl(params, tmp_path, tmp_path)
        robots = [p for _, ip, p in sites.requests(robots=True) if ip == fast and p == "/robots.txt"]
        assert len(robots) >= 2  # ~0.8 s of crawling with a 0.35 s cache
        assert sites.paths(slow) == []
    assert result["stats"]["dropped"]["crawl_delay_too_long"] == 1


def test_one_pacer_per_host_name_across_ports_and_gzip_bodies(tmp_path):
    """Two ports of one host share its pacer (robots.txt is still read per port); a page sent
    gzip-compressed although identity was asked for still yields its links."""
    ip = "127.0.0.40"
    with Sites([ip]) as one, Sites([ip]) as two:
        a, b = one[ip], two[ip]
        a.page("/", html("a", [f"/t/{i}" for i in range(4)] + [f"{b.base}/"]))
        body = gzip.compress(html("b", [f"/t/{i}" for i in range(4)]).encode())
        gz_headers = {"Content-Type": "text/html", "Content-Encoding": "gzip"}
        b.route("/", lambda n: Page(body=body, headers=gz_headers))
        for s in (a, b):
            for i in range(4):
                s.page(f"/t/{i}", html(f"{s.port} {i}", []))
        params = CrawlParams(seeds=[f"{a.base}/"], delay=0.1, concurrency=4, allow_private_addresses=True)
        run_crawl(params, tmp_path, tmp_path)
        assert len(one.paths(ip)) == len(two.paths(ip)) == 5
        both = sorted(one.requests(ip) + two.requests(ip))
        assert all(t1 - t0 >= 0.1 - 0.03 for (t0, _, _), (t1, _, _) in itertools.pairwise(both))
        assert [p for _, _, p in one.requests(ip, robots=True)].count("/robots.txt") == 1
        assert [p for _, _, p in two.requests(ip, robots=True)].count("/robots.txt") == 1


def test_resume_after_a_power_cut_between_syncs(tmp_path):
    """Journal lines may reach the disk before the WARC bytes they vouch for: the replay stops at
    the first such line, and the pages after it are fetched again (each stored once)."""
    ip = "127.0.0.41"
    with Sites([ip]) as sites:
        chain_site(sites, ip)
        params = CrawlParams(
            seeds=[f"{sites[ip].base}/"], delay=0.01, max_pages=8, max_depth=50, allow_private_addresses=True
        )
        run_crawl(params, tmp_path, tmp_path)
        first = sites.paths(ip)
        state = tmp_path / "_work" / "crawl"
        lines = (state / "group-000.jsonl").read_text().splitlines()
        cut = [json.loads(x)["warc"] for x in lines if '"pages":1' in x][3]  # after the 4th page
        ((name, size),) = cut.items()
        with open(tmp_path / "warc" / name, "r+b") as f:
            f.truncate(size - 10)  # the 4th page's records did not all reach the disk
        (state / "done.json").unlink()  # the crawl had not finished either
        run_crawl(params, tmp_path, tmp_path)
        again = sites.paths(ip)[len(first) :]
    assert again and set(again) < set(first)
    assert first[first.index(again[0]) :] == again  # everything from the lost page on, once more
    recs = warc_records(tmp_path)
    responses = [r["uri"] for r in recs if r["type"] == "response"]
    assert len(responses) == len(set(responses)) == len(first)
    for f in (tmp_path / "warc").glob("*.warc.gz"):
        assert subprocess.run([sys.executable, "-m", "warcio.cli", "check", str(f)]).returncode == 0
