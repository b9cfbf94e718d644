"""extract: both engines, the CPU-time budget, the size cap, and per-task determinism."""

from __future__ import annotations

import signal
import threading
import time

import pyarrow as pa
import pytest

from pipeline.stage import StageRunner
from stages.extract import REPEAT_CPU_S, Extract, ExtractParams

ARTICLE = """<!doctype html><html><head><title>t</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/contact">Contact</a></nav>
<article><h1>Rivers of the north</h1>
<p>The river rises in the hills above the town and runs for ninety kilometres to the sea,
collecting the water of a dozen small streams on the way.</p>
<p>In spring the melting snow swells it to three times its summer width, and the old stone
bridge, built in 1794, has twice been carried away by the flood.</p>
<p>Fishermen still take salmon from the lower reaches, although the catch has fallen by half
since the paper mill opened upstream in the nineteen-sixties.</p>
</article>
<footer>Copyright 2024 Example Media. All rights reserved. Imprint. Privacy policy.</footer>
</body></html>"""


def _stage(**params) -> Extract:
    stage = Extract(ExtractParams(**params))
    stage.setup()
    return stage


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse"])
def test_engines_keep_the_article_and_drop_the_boilerplate(engine):
    text, reason = _stage(engine=engine).extract_one(ARTICLE, "https://example.org/rivers")
    assert reason is None
    assert "old stone\nbridge" in text or "old stone bridge" in text
    assert "salmon" in text
    assert "All rights reserved" not in text


def test_drop_reasons_empty_too_large_no_text_timeout():
    stage = _stage(max_html_bytes=len(ARTICLE.encode()) + 10)
    assert stage.extract_one("", None) == (None, "empty_page")
    assert stage.extract_one("   \n ", None) == (None, "empty_page")
    assert stage.extract_one(ARTICLE + "x" * 20, None) == (None, "too_large")
    # multi-byte characters count in bytes, not characters
    assert stage.extract_one(ARTICLE[:-20] + "é" * 20, None) == (None, "too_large")
    assert stage.extract_one("<html><body><script>var a=1;</script></body></html>", None) == (None, "no_text")
    slow = _stage(timeout=1e-6)
    assert slow.extract_one(ARTICLE, None) == (None, "timeout")


def test_transform_replaces_html_by_text_and_counts_drops():
    stage = _stage()
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b", "c"],
            "url": ["https://x.org/1", None, "https://x.org/3"],
            "html": [ARTICLE, "", ARTICLE],
        }
    )
    runner = StageRunner(stage, sample_per_reason=5)
    out = runner(batch)
    assert out.schema.names == ["id", "url", "text"]
    assert out.column("id").to_pylist() == ["a", "c"]
    assert runner.stats.dropped == {"empty_page": 1}
    assert runner.stats.docs_in == 3 and runner.stats.docs_out == 2
    assert [s["id"] for s in runner.samples] == ["b"]


def test_output_depends_only_on_the_task_not_on_what_the_worker_saw_before():
    """trafilatura's `deduplicate` drops a text seen more than twice.  Its cache is per task, so a
    worker that ran another task first (setup() again) gives the same result for the same shard."""
    stage = _stage()
    first = [stage.extract_one(ARTICLE, None)[1] for _ in range(5)]
    assert first == [None, None, None, "no_text", "no_text"]  # the mechanism is live within a task
    stage.setup()  # the same worker process starts its next task
    assert [stage.extract_one(ARTICLE, None)[1] for _ in range(5)] == first
    no_dedup = _stage(deduplicate=False)
    assert [no_dedup.extract_one(ARTICLE, None)[1] for _ in range(5)] == [None] * 5


# --- the CPU-time budget -------------------------------------------------------------------------


def _burn(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _fake(stage: Extract, body) -> Extract:
    stage._extract = lambda html, url: body()
    return stage


def _no_timer_left() -> bool:
    return signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0) and signal.getsignal(signal.SIGPROF) in (
        signal.SIG_DFL,
        None,
    )


def test_a_runaway_page_is_interrupted_after_its_cpu_budget():
    stage = _fake(_stage(timeout=0.2), lambda: _burn(30) or "never")
    start = time.perf_counter()
    assert stage.extract_one(ARTICLE, None) == (None, "timeout")
    # the kernel's CPU timer can fire a few tenths of a CPU-second late under load: bounded, not exact
    assert 0.2 <= stage.last_cpu_seconds < 3.0
    assert time.perf_counter() - start < 30
    assert _no_timer_left()


def test_waiting_is_not_cpu_time():
    """Wall-clock time does not count: a page that sleeps (as under heavy load: descheduled)
    well past its budget but uses little CPU is kept."""
    stage = _fake(_stage(timeout=0.05), lambda: time.sleep(0.3) or "slept but kept")
    assert stage.extract_one(ARTICLE, None) == ("slept but kept", None)
    assert stage.last_cpu_seconds < 0.05


def test_other_threads_cpu_does_not_count():
    """ITIMER_PROF counts the whole process: while another thread burns CPU the timer fires, the
    handler sees this thread is under budget and re-arms."""
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    other = threading.Thread(target=spin)
    other.start()
    try:
        stage = _fake(_stage(timeout=0.05), lambda: time.sleep(0.5) or "kept")
        assert stage.extract_one(ARTICLE, None) == ("kept", None)
    finally:
        stop.set()
        other.join()
    assert _no_timer_left()


def test_finishing_over_budget_is_a_timeout_even_uninterrupted():
    """The decision is the CPU time used, not whether the interrupt landed: off the main thread
    there is no signal, and the end-of-page check still drops it (counted budget_unenforced)."""
    stage = _fake(_stage(timeout=0.05), lambda: _burn(0.15) or "late text")
    out: list = []
    worker = threading.Thread(target=lambda: out.append(stage.extract_one(ARTICLE, None)))
    worker.start()
    worker.join()
    assert out == [(None, "timeout")]
    assert stage.stats.extra["budget_unenforced"] == 1
    assert "budget_unenforced" not in _stage().stats.extra


def test_a_swallowed_interrupt_still_counts_as_timeout():
    """trafilatura's ``except Exception`` cannot catch the interrupt (a BaseException); an
    extractor that swallows even that (a bare except) is re-interrupted and the page is a
    ``timeout``, never ``no_text`` nor the full text returned past the budget."""
    swallowed = []

    def stubborn():
        for _ in range(3):
            try:
                _burn(30)
            except BaseException as exc:  # a bare except, as the behaviour under test
                swallowed.append(type(exc).__name__)
        return "full text, late"

    stage = _fake(_stage(timeout=0.1), stubborn)
    assert stage.extract_one(ARTICLE, None) == (None, "timeout")
    assert swallowed == ["ExtractTimeout"] * 3  # re-raised every REPEAT_CPU_S of CPU
    assert stage.last_cpu_seconds < 0.1 + 3 * REPEAT_CPU_S + 3.0  # bounded (timer latency: above)
    assert _no_timer_left()


def test_near_budget_counts_pages_that_used_over_half_of_it():
    stage = _fake(_stage(timeout=0.2), lambda: _burn(0.12) or "kept")
    assert stage.extract_one(ARTICLE, None) == ("kept", None)
    assert stage.stats.extra["near_budget"] == 1
    quick = _stage(timeout=0.2)
    quick.extract_one(ARTICLE, None)
    assert "near_budget" not in quick.stats.extra


def _toc_page(entries: int) -> str:
    """A table-of-contents page (like docs.python.org's contents.html, 4.2 CPU-s here): costly
    for trafilatura, ~0.2 ms of CPU per entry."""
    items = "".join(
        f'<li><a href="/doc/{i}.html">Section {i} of the manual</a>'
        f"<ul><li><p>Entry {i} text about topic {i % 97}</p></li></ul></li>"
        for i in range(entries)
    )
    return f"<!doctype html><html><head><title>Contents</title></head><body><ul>{items}</ul></body></html>"


def test_a_timed_out_page_leaves_no_trace_in_the_dedup_cache():
    """Where the interrupt lands inside trafilatura varies; the segments it counted before then
    must not change later pages' text: the task's dedup cache is rolled back."""
    stage = _stage(timeout=0.1)
    stage.extract_one(ARTICLE, None)
    before = list(stage._dedup.cache.items())
    assert stage.extract_one(_toc_page(5000) + ARTICLE, None) == (None, "timeout")
    assert list(stage._dedup.cache.items()) == before
    # ... and the next pages come out as if the timed-out page had never been seen
    fresh = _stage(timeout=0.1)
    fresh.extract_one(ARTICLE, None)
    assert [stage.extract_one(ARTICLE, None) for _ in range(3)] == [
        fresh.extract_one(ARTICLE, None) for _ in range(3)
    ]


def test_the_interrupt_never_escapes_extract_one():
    """Budgets right at a page's cost, so that interrupts land anywhere, also as the extractor
    returns and while a swallowed one is handled: extract_one always answers, never raises."""

    def body():
        try:
            _burn(0.002)
        except BaseException:  # swallows, and returns at once: a re-raise lands on the way out
            return "swallowed"
        return "text"

    stage = _fake(_stage(timeout=0.002), body)
    for i in range(300):
        stage._budget.seconds = 0.0005 + 0.00001 * i  # 0.5 to 3.5 ms around the 2 ms page
        assert stage.extract_one(ARTICLE, None) in (("text", None), (None, "timeout"))
    assert _no_timer_left()
