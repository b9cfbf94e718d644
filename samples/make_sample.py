"""Rebuild ``samples/sample.warc.gz`` from ``../shared/data/dev_web.warc.gz`` (run from the repo root).

Copies whole gzip members (records) byte for byte, so ids, headers and payloads are exactly those
of the source.  The selection is a fixed-seed sample per group of the source's manifest, plus one
near-duplicate group of Handbook pages, so that the sample has news in several languages,
documentation, non-HTML assets and near-duplicates.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path

SRC = Path("../shared/data/dev_web.warc.gz")
MANIFEST = Path("../shared/data/dev_web_manifest.jsonl.gz")
OUT = Path("samples/sample.warc.gz")
PER_GROUP = {
    "news/blog (trafilatura eval)": 70,
    "news (scrapinghub benchmark)": 25,
    "docs (Python 3.11)": 20,
    "docs assets (non-HTML)": 4,
    "docs (Django 3.2)": 25,
    "docs (Sphinx 5.3)": 10,
    "book (Debian Administrator's Handbook, 26 languages)": 40,
}


def members(data: bytes):
    """(offset, raw member bytes, first inflated bytes) of every gzip member."""
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        head = d.decompress(data[pos:], 4096)
        while not d.eof:
            d.decompress(d.unconsumed_tail, 1 << 20)
        end = len(data) - len(d.unused_data)
        yield pos, data[pos:end], head
        pos = end


def main() -> None:
    with gzip.open(MANIFEST, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rng = random.Random(20261122)
    wanted: set[str] = set()
    for group, n in PER_GROUP.items():
        ids = sorted(r["warc_record_id"] for r in rows if r["group"] == group)
        wanted.update(rng.sample(ids, n))
    near = sorted({r["near_dup_group"] for r in rows if r.get("near_dup_group")})[0]
    wanted.update(r["warc_record_id"] for r in rows if r.get("near_dup_group") == near)
    out = []
    for i, (_, raw, head) in enumerate(members(SRC.read_bytes())):
        rec_id = next(
            (
                ln.split(b": ", 1)[1].decode()
                for ln in head.split(b"\r\n")
                if ln.startswith(b"WARC-Record-ID:")
            ),
            None,
        )
        if i == 0 or rec_id in wanted:  # keep the warcinfo record too
            out.append(raw)
    OUT.write_bytes(b"".join(out))
    print(f"{OUT}: {len(out)} records, {OUT.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
