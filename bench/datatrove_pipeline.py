"""datatrove 0.10.1's WARC -> URLFilter -> Trafilatura pipeline, as FineWeb runs it, for the benchmarks.

Kept in its own importable module because datatrove's ``LocalPipelineExecutor`` pickles the
pipeline steps into ``forkserver`` pool workers: the reader subclass below must be importable
there by module name (this folder is on ``sys.path`` and ``PYTHONPATH`` of the benchmark child).

Two benchmark-only adjustments, both so that datatrove does the same work as winnow:

* **Which records are documents.**  datatrove's ``WarcReader`` takes the payload type from the
  ``WARC-Identified-Payload-Type`` header (Common Crawl sets it) and, when that header is absent,
  from libmagic.  ``dev_web.warc.gz`` has no such header, and libmagic calls many real HTML pages
  ``text/xml`` (XHTML with an ``<?xml?>`` prolog) or ``application/javascript`` (pages that start
  with a script): on the bundled sample datatrove reads 107 of 209 HTML pages.  Comparing docs/s
  over different documents would be meaningless, so ``HttpTypeWarcReader`` fills the missing
  header from the HTTP ``Content-Type`` (what Common Crawl's header would hold) and otherwise runs
  datatrove's own ``process_record`` unchanged (its UTF-8-then-cchardet decoding included).
* **No network.**  ``URLFilter`` builds ``tldextract.TLDExtract()`` with defaults, which first
  tries to download the public-suffix list (here: no network, so it fails, logs two tracebacks and
  falls back to the bundled snapshot; elsewhere it would fetch a newer list than winnow uses).
  We replace that extractor with ``TLDExtract(suffix_list_urls=(), cache_dir=None)``: the same
  bundled snapshot winnow uses, no download, no disk cache.

Everything else is datatrove's defaults: ``Trafilatura(favour_precision=True, timeout=5.0)`` (5 s
is winnow's default budget; datatrove's default is 1 s) runs each page in its sandbox subprocess,
``URLFilter()`` loads FineWeb's integrated lists in every task, ``ParquetWriter`` (zstd, like
winnow's parts) writes the output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.readers import WarcReader


def _identify_payload(record: Any) -> None:
    """Set ``WARC-Identified-Payload-Type`` from the HTTP Content-Type when the WARC lacks it."""
    if record.rec_type != "response" or record.rec_headers.get("WARC-Identified-Payload-Type"):
        return
    ctype = record.http_headers.get_header("Content-Type") if record.http_headers else None
    if ctype:
        record.rec_headers.add_header("WARC-Identified-Payload-Type", ctype.split(";")[0].strip().lower())


class HttpTypeWarcReader(WarcReader):
    """datatrove's ``WarcReader.read_file`` with ``_identify_payload`` before ``process_record``."""

    def read_file(self, filepath: str) -> Iterator[Document]:
        from datatrove.pipeline.readers.warc import process_record
        from warcio.archiveiterator import ArchiveIterator

        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for ri, record in enumerate(ArchiveIterator(f)):
                with self.track_time():
                    _identify_payload(record)
                    extracted_data = process_record(record)
                    if not extracted_data:
                        continue
                    document = self.get_document_from_dict(extracted_data, filepath, ri)
                    if not document:
                        continue
                yield document


def prepare_assets() -> None:
    """Unpack the URL block list into ``HF_ASSETS_CACHE`` once, outside any timed run.

    ``URLFilter.download_data`` does this on first use per machine (a ~125 MB file, guarded by a
    lock); it is a one-time cost, not part of a pipeline run, so it is paid here.
    """
    from datatrove.pipeline.filters import URLFilter

    flt = URLFilter()
    flt.download_data()


def run(
    input_dir: Path, out: Path, workers: int, tasks: int | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """Run the pipeline on every ``*.warc.gz`` in ``input_dir`` with ``tasks`` (default: ``workers``)
    tasks on ``workers`` processes; returns timings and counts."""
    tasks = tasks or workers
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import URLFilter
    from datatrove.pipeline.writers import ParquetWriter
    from tldextract import TLDExtract

    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    pipeline = [
        HttpTypeWarcReader(str(input_dir), glob_pattern="*.warc.gz"),
        url_filter,
        Trafilatura(favour_precision=True, timeout=timeout),
        ParquetWriter(str(out / "data"), compression="zstd"),
    ]
    n_files = len(list(input_dir.glob("*.warc.gz")))
    executor = LocalPipelineExecutor(
        pipeline, tasks=tasks, workers=workers, logging_dir=str(out / "logs"), skip_completed=False
    )
    start = time.perf_counter()
    executor.run()
    wall = time.perf_counter() - start

    steps = json.loads((out / "logs" / "stats.json").read_text())
    reader, url_step, extract_step, writer = steps
    task_seconds = []
    for f in sorted((out / "logs" / "stats").glob("*.json")):
        # A task that got no file has no time_stats (datatrove writes 0 there).
        task_steps = json.loads(f.read_text())
        task_seconds.append(
            round(
                sum(s["time_stats"]["total"] for s in task_steps if isinstance(s.get("time_stats"), dict)), 3
            )
        )
    return {
        "wall_s": round(wall, 3),
        "docs_in": reader["stats"].get("documents", {}).get("total", 0),
        "docs_out": writer["stats"].get("total", 0),
        "tasks": tasks,
        "input_files": n_files,
        "task_seconds": task_seconds,
        "stage_seconds": {
            "read": round(reader["time_stats"]["total"], 3),
            "url_filter": round(url_step["time_stats"]["total"], 3),
            "extract": round(extract_step["time_stats"]["total"], 3),
            "write": round(writer["time_stats"]["total"], 3),
        },
        "dropped": {
            "url_filter": {k: v for k, v in url_step["stats"].items() if k.startswith("dropped_")},
            "extract": {
                k: extract_step["stats"].get(k, 0)
                for k in ("dropped", "timeout", "clean_error", "broken_process")
                if extract_step["stats"].get(k)
            },
        },
    }
