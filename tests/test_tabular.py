"""JsonlSource and ParquetSource: field mapping, carried columns, counted bad records, fallback
ids, and splitting (byte ranges for .jsonl, row groups for Parquet) equal to a whole read."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcgen import check_byte_range_plan, read, whole

from pipeline.source import Shard
from stages.tabular import JsonlSource, ParquetSource


def write_lines(path: Path, lines: list[bytes]) -> tuple[Path, list[int]]:
    """Write lines (each gets a newline); returns the path and each line's byte offset."""
    offsets, pos = [], 0
    with open(path, "wb") as f:
        for line in lines:
            offsets.append(pos)
            f.write(line + b"\n")
            pos += len(line) + 1
    return path, offsets


def jline(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def stats_view(stats) -> dict:
    d = stats.to_dict()
    d.pop("seconds")
    return d


# --- JSON Lines ----------------------------------------------------------------------------------


def test_jsonl_field_mapping_and_carried_columns(tmp_path):
    records = [
        {"key": 7, "body": "first text", "lang": "en", "score": 0.5, "meta": {"src": "a"}},
        {"key": "b", "body": "second text", "lang": "de", "score": 1.5, "meta": {"src": "b"}},
    ]
    path, _ = write_lines(tmp_path / "a.jsonl", [jline(r) for r in records])
    r = read(JsonlSource, [path], text_field="body", id_field="key")
    assert r.rows == [
        {"id": "7", "text": "first text", "lang": "en", "score": 0.5, "meta": {"src": "a"}},
        {"id": "b", "text": "second text", "lang": "de", "score": 1.5, "meta": {"src": "b"}},
    ]
    source = JsonlSource(JsonlSource.Params(paths=[str(path)], text_field="body", id_field="key"))
    batch = next(source.read(Shard(str(path))))
    assert batch.schema.names == ["id", "text", "lang", "score", "meta"]
    assert batch.schema.field("id").type == pa.string()
    assert r.stats.bytes_out == len(b"first text") + len(b"second text")
    assert r.stats.bytes_in == path.stat().st_size


def test_jsonl_fields_that_appear_in_later_records_are_kept(tmp_path):
    lines = [jline({"id": "a", "text": "x"}), jline({"id": "b", "text": "y", "title": "T", "n": 3})]
    path, _ = write_lines(tmp_path / "a.jsonl", lines)
    r = read(JsonlSource, [path])
    assert r.rows == [
        {"id": "a", "text": "x", "title": None, "n": None},
        {"id": "b", "text": "y", "title": "T", "n": 3},
    ]


def test_jsonl_bad_records_are_counted(tmp_path):
    lines = [
        jline({"id": "ok1", "text": "good"}),
        b'{"id": "broken", "text": "no closing brace"',
        b"not json at all",
        b"[1, 2, 3]",  # valid JSON, not an object
        b'"a bare string"',
        b"null",
        jline({"id": "m1"}),
        jline({"id": "m2", "text": None}),
        jline({"id": "i1", "text": 5}),
        jline({"id": "i2", "text": ["a", "b"]}),
        jline({"id": "i3", "text": {"nested": "x"}}),
        b"",  # blank lines are not records
        b"   \t",
        b'{"id": "latin1", "text": "caf\xe9"}',  # undecodable bytes
        b"[" * 100_000,  # nesting deep enough to exhaust the parser's recursion
        jline({"id": "ok2", "text": ""}),
    ]
    path, _ = write_lines(tmp_path / "a.jsonl", lines)
    r = read(JsonlSource, [path])
    assert r.ids == ["ok1", "ok2"]
    assert dict(r.stats.dropped) == {
        "invalid_json": 4,
        "not_an_object": 3,
        "missing_text": 2,
        "invalid_text": 3,
    }
    assert (r.stats.docs_in, r.stats.docs_out) == (14, 2)


def test_jsonl_utf8_text_and_byte_order_mark(tmp_path):
    text = "Gr\u00fc\u00dfe aus K\u00f6ln \u2014 \u65e5\u672c\u8a9e \U0001f600"
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + jline({"id": "1", "text": text}) + b"\r\n" + jline({"id": "2", "text": "b"})
    )
    r = read(JsonlSource, [path])
    assert [(row["id"], row["text"]) for row in r.rows] == [("1", text), ("2", "b")]


def test_jsonl_fallback_ids_are_byte_offsets(tmp_path):
    lines = [
        jline({"text": f"doc {i}"}) if i % 3 else jline({"id": f"own{i}", "text": f"doc {i}"})
        for i in range(9)
    ]
    path, offsets = write_lines(tmp_path / "docs.jsonl", lines)
    r = read(JsonlSource, [path])
    expected = [f"own{i}" if i % 3 == 0 else f"docs.jsonl@{offsets[i]}" for i in range(9)]
    assert r.ids == expected
    assert read(JsonlSource, [path]).ids == expected  # stable across runs


def _big_jsonl(tmp_path: Path) -> Path:
    lines = []
    for i in range(600):
        record = {"text": f"document {i} " + "word " * (i * 7 % 90), "i": i}
        if i % 5:
            record["id"] = f"d{i}"
        if i % 97 == 0:
            lines.append(b"{broken json")
        lines.append(jline(record))
        if i % 50 == 0:
            lines.append(b"")
    path, _ = write_lines(tmp_path / "big.jsonl", lines)
    return path


def test_jsonl_plan_splits_by_bytes(tmp_path):
    check_byte_range_plan(JsonlSource, _big_jsonl(tmp_path))


@pytest.mark.parametrize("split", [4096, 4097, 5003, 7777, 65536])
def test_jsonl_split_reading_equals_whole_reading(tmp_path, split):
    path = _big_jsonl(tmp_path)
    one = read(JsonlSource, [path], shards=whole(path))
    assert len(one.rows) == 600
    assert len(set(one.ids)) == 600
    assert dict(one.stats.dropped) == {"invalid_json": 7}
    many = read(JsonlSource, [path], split_bytes=split)
    assert len(many.shards) == -(-path.stat().st_size // split)
    assert many.rows == one.rows
    assert stats_view(many.stats) == stats_view(one.stats)


def test_jsonl_split_at_every_offset_of_a_small_file(tmp_path):
    """Shards starting at every byte position, including exactly at line starts."""
    lines = [jline({"text": "t" * (i % 7), "id": str(i)}) for i in range(12)]
    path, _ = write_lines(tmp_path / "s.jsonl", lines)
    size = path.stat().st_size
    for cut in range(1, size):
        shards = [Shard(str(path), 0, cut), Shard(str(path), cut, None)]
        r = read(JsonlSource, [path], shards=shards)
        assert r.ids == [str(i) for i in range(12)], cut


def test_jsonl_gz_is_one_shard(tmp_path):
    lines = [
        jline({"text": f"doc {i} " + "x" * 100, "r": hashlib.sha256(b"%d" % i).hexdigest()})
        for i in range(200)
    ]
    lines.insert(10, b"not json")
    path = tmp_path / "docs.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    assert path.stat().st_size > 4096
    shards = JsonlSource(JsonlSource.Params(paths=[str(path)], split_bytes=4096)).plan([str(path)])
    assert shards == [Shard(str(path))]
    r = read(JsonlSource, [path], split_bytes=4096)
    assert [row["r"] for row in r.rows] == [hashlib.sha256(b"%d" % i).hexdigest() for i in range(200)]
    # 1-based line numbers; the bad line is line 11
    assert r.ids[:11] == [f"docs.jsonl.gz:{n}" for n in (*range(1, 11), 12)]
    assert dict(r.stats.dropped) == {"invalid_json": 1}
    assert r.stats.bytes_in == path.stat().st_size


# --- Parquet -------------------------------------------------------------------------------------


def _parquet(tmp_path: Path, n: int = 500, row_group_size: int = 40) -> Path:
    ids = [None if i % 11 == 0 else f"p{i}" for i in range(n)]
    texts = [None if i % 17 == 0 else f"parquet document {i} " + "w " * (i % 50) for i in range(n)]
    table = pa.table(
        {
            "content": pa.array(texts, pa.large_string()),
            "doc_id": pa.array(ids, pa.string()),
            "n": pa.array(range(n), pa.int32()),
            "tags": pa.array([[f"t{i % 3}"] for i in range(n)], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_mapping_types_and_fallback_ids(tmp_path):
    path = _parquet(tmp_path)
    r = read(ParquetSource, [path], text_field="content", id_field="doc_id")
    kept = [i for i in range(500) if i % 17]
    assert [row["n"] for row in r.rows] == kept
    assert r.ids == [f"docs.parquet#{i}" if i % 11 == 0 else f"p{i}" for i in kept]
    assert r.rows[0] == {"id": "p1", "text": "parquet document 1 w ", "n": 1, "tags": ["t1"]}
    assert dict(r.stats.dropped) == {"missing_text": len(range(0, 500, 17))}
    assert r.stats.docs_in == 500

    source = ParquetSource(ParquetSource.Params(paths=[str(path)], text_field="content", id_field="doc_id"))
    batch = next(source.read(source.plan([str(path)])[0]))
    assert batch.schema.names == ["id", "text", "n", "tags"]
    assert batch.schema.field("text").type == pa.string()
    assert batch.schema.field("n").type == pa.int32()  # carried columns keep their types
    assert batch.schema.field("tags").type == pa.list_(pa.string())


@pytest.mark.parametrize("split", [1, 4096, 20_000])
def test_parquet_split_by_row_groups_equals_whole_reading(tmp_path, split):
    path = _parquet(tmp_path)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 13
    kw = {"text_field": "content", "id_field": "doc_id"}
    one = read(ParquetSource, [path], shards=[Shard(str(path), unit="row_groups")], **kw)
    many = read(ParquetSource, [path], split_bytes=max(split, 4096), **kw)
    if split <= 4096:
        assert len(many.shards) > 3
    assert all(s.unit == "row_groups" for s in many.shards)
    assert [g for s in many.shards for g in range(s.start, s.end or meta.num_row_groups)] == list(range(13))
    assert many.rows == one.rows
    assert stats_view(many.stats) == stats_view(one.stats)


def test_parquet_non_string_and_missing_text_column(tmp_path):
    path = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"text": pa.array([1, None, 3], pa.int64()), "id": ["a", "b", "c"]}), path)
    r = read(ParquetSource, [path])
    assert r.rows == []
    assert dict(r.stats.dropped) == {"invalid_text": 2, "missing_text": 1}

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    source = ParquetSource(ParquetSource.Params(paths=[str(path)]))
    with pytest.raises(ValueError, match="no column 'text'"):
        list(source.read(Shard(str(path))))


def test_parquet_integer_ids_become_strings(tmp_path):
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "id": pa.array([10, None], pa.int64())}), path)
    assert read(ParquetSource, [path]).ids == ["10", "ids.parquet#1"]
