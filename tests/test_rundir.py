"""PartWriter: row groups, atomic rename, and schemas decided late (JSON Lines fields that drift)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.rundir import ROW_GROUP_ROWS, PartWriter


def test_row_groups_and_atomic_rename(tmp_path):
    path = tmp_path / "data" / "part-00000.parquet"
    w = PartWriter(path)
    for i in range(5):
        w.write(pa.RecordBatch.from_pydict({"id": [f"{i}-{j}" for j in range(700)]}))
        assert not path.exists()  # only the temp file exists until close()
    assert w.close() == 3500
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1024, 1024, 1024, 428]
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(path).column("id").to_pylist()[700] == "1-0"
    assert list(path.parent.iterdir()) == [path]


def test_columns_that_appear_or_get_typed_later_are_unified(tmp_path):
    path = tmp_path / "p.parquet"
    w = PartWriter(path)
    w.write(pa.RecordBatch.from_pylist([{"id": "a", "meta": None}]))  # meta: null type
    w.write(pa.RecordBatch.from_pylist([{"id": "b", "meta": 3, "lang": "de"}]))
    w.write(pa.RecordBatch.from_pylist([{"id": "c"}]))
    assert w.close() == 3
    t = pq.read_table(path)
    assert t.schema.field("meta").type == pa.int64()
    assert t.to_pylist() == [
        {"id": "a", "meta": None, "lang": None},
        {"id": "b", "meta": 3, "lang": "de"},
        {"id": "c", "meta": None, "lang": None},
    ]


def test_a_new_column_after_the_schema_is_fixed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(PartWriter, "SCHEMA_BUFFER_BYTES", 1)
    w = PartWriter(tmp_path / "p.parquet")
    w.write(pa.RecordBatch.from_pylist([{"id": "a"}] * ROW_GROUP_ROWS))
    with pytest.raises(ValueError, match=r"\['late'\] first appear"):
        w.write(pa.RecordBatch.from_pylist([{"id": "b", "late": 1}]))
    w.abort()
    assert not list(tmp_path.iterdir())


def test_empty_part_writes_no_file_and_removes_a_stale_one(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"stale")
    assert PartWriter(path).close() == 0
    assert not path.exists()


def test_atomic_dir_replaces_whole_folders_and_leaves_nothing_on_error(tmp_path):
    from pipeline.atomic import atomic_dir

    out = tmp_path / "tok"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("writer died")
    assert (out / "a.txt").read_text() == "one"  # the old folder, untouched
    with atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no temp folders left
    assert [p.name for p in out.iterdir()] == ["b.txt"]  # replaced, not merged
