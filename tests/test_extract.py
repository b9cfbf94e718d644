"""extract: both engines, the time budget, the size cap, and per-task determinism."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.stage import StageRunner
from stages.extract import Extract, ExtractParams

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
