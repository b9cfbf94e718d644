"""``extract``: HTML -> main text.  Replaces the ``html`` column by ``text``; keeps every other column.

Engines (measured on this project's 2-vCPU machines, ``bench/extraction_quality.py``):

* ``trafilatura`` (default), with FineWeb's settings: ``favor_precision``, no comments,
  ``deduplicate``.  ~70-80 pages/s/core here, snippet F1 0.920 on the dev gold.
* ``resiliparse``: main-content ``extract_plain_text``, ~11x faster, snippet F1 0.849.

trafilatura's ``deduplicate`` removes text segments it has seen several times *in the process*,
through a module-level cache.  That would make a document's text depend on which documents the
same worker happened to process before it (different locally and on a cluster).  We hand
trafilatura a fresh ``LRUCache`` per task instead, so a document's output depends only on its
shard: identical local, on a cluster and after a resume.

Every page gets a budget of CPU time (``timeout``, CPU seconds of the extracting thread; see
``CpuBudget``) and pages over ``max_html_bytes`` are not parsed: both are counted drop reasons.
CPU time, not wall-clock time, so that the output does not depend on how busy the machine is:
with a 5 s wall-clock budget the same WARC lost 1 page idle and 12 next to six busy processes.

The default, 10 CPU-s, is set from ``bench/extract_cpu_time.py`` on ``dev_web.warc.gz`` (2,367
pages after ``url_filter``, 2 vCPU AMD EPYC guest): per-page CPU p50 0.014 s, p99 0.30 s, p99.9
0.89 s, max 4.18 s (docs.python.org's 2.56 MB ``contents.html``).  The slowest real page sits at
0.42 of the budget, so no page of that file is dropped for time and a runaway page costs at most
~10 s.  A lower budget saves little (the slowest pages are few) and drops real, if index-like,
pages: at 1 s, 2 of 2,367.

What still varies: CPU time is not perfectly stable either.  Next to 2 busy processes on 2 vCPUs
the same pages took 1.10x the CPU in total (per page, over 50 ms: median 1.07x, p99 1.41x, max
1.57x; shared caches, the SMT sibling), against 2.3x the wall time; a slower CPU scales it as a
whole.  So a page whose CPU time lies within a few tens of percent of the budget can still come
out differently between runs or machines.  ``extra.near_budget`` counts the pages that finished
within the budget but used over half of it (``NEAR_BUDGET_FRACTION``): when it is 0, as on
``dev_web``, no page's outcome depends on load, and a CPU up to 2x slower gives the same output.
It is a count, not a time, because ``stats.json`` must be identical between runs (a maximum of
per-page seconds would differ on every run, and stats merge by summing).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.registry import register_stage
from pipeline.stage import Params, Resources, Stage


class ExtractParams(Params):
    engine: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="trafilatura (F1 0.92) or resiliparse (~11x faster, F1 0.85)"
    )
    timeout: float = Field(
        10.0, gt=0, description="CPU seconds of the extracting thread per page, then dropped as 'timeout'"
    )
    max_html_bytes: int = Field(10 * 2**20, gt=0, description="larger pages are dropped as 'too_large'")
    min_text_chars: int = Field(1, ge=0, description="shorter extractions are dropped as 'no_text'")
    favor_precision: bool = Field(True, description="trafilatura: prefer less text over boilerplate")
    include_comments: bool = Field(False, description="keep user comments below the main text")
    include_tables: bool = Field(True, description="trafilatura: keep the text of tables")
    deduplicate: bool = Field(
        True, description="trafilatura: drop text segments repeated within one task (FineWeb's setting)"
    )


class ExtractTimeout(BaseException):
    """Raised by the budget's signal handler inside the extractor.  A ``BaseException`` so that the
    extractor's own ``except Exception`` blocks (trafilatura has several) cannot swallow it."""


# When the handler has raised once and the extractor swallowed it anyway (a bare ``except``), it
# raises again after this much more CPU time of the process: a runaway page stays bounded.
REPEAT_CPU_S = 0.05
MIN_REARM_CPU_S = 0.001
# A page that finished within its budget but used at least this fraction of it is counted in
# ``extra.near_budget``: its outcome could change on a CPU this much slower (see the docstring).
NEAR_BUDGET_FRACTION = 0.5


class CpuBudget:
    """A per-page budget in CPU seconds of the calling thread; the outcome does not depend on load.

    The decision is ``time.thread_time()`` at the start and end: a page whose extraction used more
    than ``seconds`` of this thread's CPU is over budget, even if it finished.  Wall-clock time
    (``SIGALRM``) made the result depend on how busy the machine was: the same 31 MB WARC lost 1
    page to ``timeout`` idle and 12 next to six busy processes.

    A runaway page is interrupted by ``ITIMER_PROF`` (``SIGPROF``), which counts the CPU time of
    the whole *process*.  Ray's and Arrow's own threads also use it, so the timer can fire before
    this thread used its budget: the handler then re-arms for what this thread still has.  Once
    the thread is over budget the handler sets ``expired`` and raises ``ExtractTimeout``; if the
    extractor swallowed that anyway, ``expired`` still makes the page a ``timeout`` (not a
    ``no_text``, not a late full text) and the handler raises again after ``REPEAT_CPU_S``.

    Signals need the main thread (Ray runs a task there).  Elsewhere ``enforced`` is False: a
    runaway page is not interrupted, but the end-of-page CPU check still decides.

    The kernel checks CPU-time timers on its tick while the process runs, so under contention the
    interrupt can come late (measured here up to ~0.3 CPU-s late next to busy processes): that
    bounds what a runaway page costs less tightly, but does not change the decision, which is
    the thread's CPU time.

    Use (``Extract.extract_one``): ``arm()`` and the extractor inside a ``try`` whose ``finally``
    first sets ``armed = False`` inline, and ``disarm()`` after the exception handling.  Once
    ``armed`` is False the handler never raises, so neither the ``except`` clauses nor the
    clean-up can be interrupted.  A ``with`` block would not do: entering ``__exit__`` (a call)
    is a point where a pending handler runs and could raise past the clean-up.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False
        self.enforced = False
        self.expired = False
        self.start = 0.0
        self.used = 0.0  # CPU seconds of this thread between arm() and disarm()
        self._previous: Any = None
        self._installed = False

    def _tick(self, signum: int, frame: Any) -> None:
        if not self.armed:
            return
        used = time.thread_time() - self.start
        if used < self.seconds:  # other threads used process CPU time: wait for the rest
            signal.setitimer(signal.ITIMER_PROF, max(self.seconds - used, MIN_REARM_CPU_S))
            return
        self.expired = True
        signal.setitimer(signal.ITIMER_PROF, REPEAT_CPU_S)
        raise ExtractTimeout()

    def arm(self) -> None:
        self.expired = False
        self.used = 0.0
        self.enforced = threading.current_thread() is threading.main_thread()
        if self.enforced:
            self._previous = signal.signal(signal.SIGPROF, self._tick)
            self._installed = True
        self.start = time.thread_time()
        self.armed = self.enforced
        if self.enforced:
            signal.setitimer(signal.ITIMER_PROF, self.seconds)

    def disarm(self) -> None:
        self.armed = False  # first: from here on the handler neither raises nor re-arms
        self.used = time.thread_time() - self.start
        if self._installed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, self._previous)
            self._installed = False

    @property
    def over(self) -> bool:
        return self.expired or self.used > self.seconds


@register_stage
class Extract(Stage):
    name = "extract"
    Params = ExtractParams
    resources = Resources(cpus=1, memory_mb=2048)

    def setup(self) -> None:
        p = self.params
        self._budget = CpuBudget(p.timeout)
        self._dedup = None
        self.last_cpu_seconds = 0.0  # of the last page (for bench/extract_cpu_time.py)
        if p.engine == "trafilatura":
            import trafilatura
            from trafilatura.deduplication import LRUCache

            # Same options as datatrove's Trafilatura(favour_precision=True) used by FineWeb.
            # One cache per task (see the module docstring); a page dropped as ``timeout`` is rolled
            # back out of it (``extract_one``), so where an interrupt hit leaves no trace.
            self._dedup = LRUCache(maxsize=2**12) if p.deduplicate else None
            self._extract = lambda html, url: trafilatura.extract(
                html,
                url=url,
                favor_precision=p.favor_precision,
                include_comments=p.include_comments,
                include_tables=p.include_tables,
                include_images=False,
                deduplicate=self._dedup if self._dedup is not None else False,
            )
        else:
            from resiliparse.extract.html2text import extract_plain_text
            from resiliparse.parse.html import HTMLTree

            self._extract = lambda html, url: extract_plain_text(
                HTMLTree.parse(html),
                main_content=True,
                alt_texts=False,
                links=False,
                form_fields=False,
                noscript=False,
                comments=not p.include_comments,
            )

    def extract_one(self, html: str | None, url: str | None) -> tuple[str | None, str | None]:
        """Returns (text, None) or (None, drop reason)."""
        p = self.params
        if not html or not html.strip():
            return None, "empty_page"
        if len(html) > p.max_html_bytes or len(html.encode("utf-8", "surrogatepass")) > p.max_html_bytes:
            return None, "too_large"
        # The dedup cache as it was before this page: restored if the page ends as ``timeout``.
        saved = self._dedup.cache.copy() if self._dedup is not None else None
        budget = self._budget
        text, error = None, None
        try:
            try:
                budget.arm()
                text = self._extract(html, url)
            finally:
                # First thing on every way out of the extractor, before any call (a call is where
                # a pending signal handler runs): from here on the handler cannot raise, so the
                # ``except`` clauses and ``disarm`` below are never interrupted.
                budget.armed = False
        except ExtractTimeout:
            pass  # budget.expired is set
        except RecursionError:
            error = "RecursionError"
        except Exception as exc:  # a parser bug on one odd page must not fail the shard
            error = type(exc).__name__
        finally:
            budget.disarm()
        self.last_cpu_seconds = budget.used
        if not budget.enforced:
            self.stats.count("budget_unenforced")
        if budget.over:
            if saved is not None:
                self._dedup.cache = saved
            return None, "timeout"
        if budget.used >= p.timeout * NEAR_BUDGET_FRACTION:
            self.stats.count("near_budget")
        if error is not None:
            if error != "RecursionError":
                self.stats.count(error, group="extract_errors")
            return None, "extract_error"
        if text is None or len(text.strip()) < max(p.min_text_chars, 1):
            return None, "no_text"
        return text.strip(), None

    def transform(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, Sequence[str | None]]:
        htmls = batch.column("html").to_pylist()
        urls = batch.column("url").to_pylist() if "url" in batch.schema.names else [None] * len(htmls)
        texts, reasons = [], []
        for html, url in zip(htmls, urls):
            text, reason = self.extract_one(html, url)
            reasons.append(reason)
            if reason is None:
                texts.append(text)
        keep = pa.array([r is None for r in reasons], type=pa.bool_())
        kept = batch.filter(keep)
        i = kept.schema.get_field_index("html")
        out = kept.remove_column(i).add_column(i, pa.field("text", pa.string()), pa.array(texts, pa.string()))
        return out, reasons
