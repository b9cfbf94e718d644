"""``extract``: HTML -> main text.  Replaces the ``html`` column by ``text``; keeps every other column.

Engines (measured here, see FACTS.md and ``bench/extraction_quality.py``):

* ``trafilatura`` (default), with FineWeb's settings: ``favor_precision``, no comments,
  ``deduplicate``.  ~70-80 pages/s/core here, snippet F1 0.920 on the dev gold.
* ``resiliparse``: main-content ``extract_plain_text``, ~11x faster, snippet F1 0.849.

trafilatura's ``deduplicate`` removes text segments it has seen several times *in the process*,
through a module-level cache.  That would make a document's text depend on which documents the
same worker happened to process before it (different locally and on a cluster).  We hand
trafilatura a fresh ``LRUCache`` per task instead, so a document's output depends only on its
shard: identical local, on a cluster and after a resume.

Every page gets a time budget (``timeout``) and pages over ``max_html_bytes`` are not parsed:
both are counted drop reasons.  The budget uses ``SIGALRM`` (Ray runs a task on its worker's main
thread); where no signal can be used (a non-main thread) extraction runs unbudgeted and
``extra.budget_unenforced`` says so.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.registry import register_stage
from pipeline.stage import Params, Resources, Stage


class ExtractParams(Params):
    engine: Literal["trafilatura", "resiliparse"] = "trafilatura"
    timeout: float = Field(5.0, gt=0, description="seconds per page before it is dropped as 'timeout'")
    max_html_bytes: int = Field(10 * 2**20, gt=0, description="larger pages are dropped as 'too_large'")
    min_text_chars: int = Field(1, ge=0, description="shorter extractions are dropped as 'no_text'")
    favor_precision: bool = True
    include_comments: bool = False
    include_tables: bool = True
    deduplicate: bool = True


class ExtractTimeout(Exception):
    pass


@contextmanager
def time_budget(seconds: float):
    """Raise ``ExtractTimeout`` in the block after ``seconds`` (main thread only; else no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def _expire(signum, frame):
        raise ExtractTimeout()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@register_stage
class Extract(Stage):
    name = "extract"
    Params = ExtractParams
    resources = Resources(cpus=1, memory_mb=2048)

    def setup(self) -> None:
        p = self.params
        if p.engine == "trafilatura":
            import trafilatura
            from trafilatura.deduplication import LRUCache

            # Same options as datatrove's Trafilatura(favour_precision=True) used by FineWeb.
            dedup = LRUCache(maxsize=2**12) if p.deduplicate else False
            self._extract = lambda html, url: trafilatura.extract(
                html,
                url=url,
                favor_precision=p.favor_precision,
                include_comments=p.include_comments,
                include_tables=p.include_tables,
                include_images=False,
                deduplicate=dedup,
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
        try:
            with time_budget(p.timeout) as enforced:
                text = self._extract(html, url)
            if not enforced:
                self.stats.count("budget_unenforced")
        except ExtractTimeout:
            return None, "timeout"
        except RecursionError:
            return None, "extract_error"
        except Exception as exc:  # a parser bug on one odd page must not fail the shard
            self.stats.count(type(exc).__name__, group="extract_errors")
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
