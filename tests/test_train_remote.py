"""Training output folders and checkpoints on object storage (``train/remote.py``), against moto's
S3 server on 127.0.0.1 (``tests/s3server.py``, started and ended by ``test_storage``'s fixture)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from test_sft import FLAGS, base, metrics, sft  # noqa: E402, F401 (base is a fixture)
from test_storage import _bucket, s3  # noqa: E402, F401 (s3 is a fixture)
from train_fixtures import without_timing  # noqa: E402

from pipeline import storage  # noqa: E402
from pipeline.cli import main as winnow  # noqa: E402
from train.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _remote_metrics(url: str) -> list[dict]:
    rows = [json.loads(x) for x in storage.read_bytes(f"{url}/metrics.jsonl").decode().splitlines()]
    return without_timing(rows)


def test_sft_checkpoints_to_s3_and_resumes_on_another_machine(base, s3, tmp_path, monkeypatch, capsys):  # noqa: F811
    ckpt, _, data = base
    url = _bucket(s3, "ckpts") + "/runs/sft"
    common = ["--base", ckpt, "--data", data, "--val-fraction", 0.1, *FLAGS, "--batch-rows", 4,
              "--max-steps", 8, "--save-every", 2, "--eval-every", 4, "--keep-checkpoints", 2]  # fmt: skip
    local = tmp_path / "local"
    assert sft(*common, "--out", local) == 0

    monkeypatch.setenv("WINNOW_SCRATCH", str(tmp_path / "machine-a"))
    assert sft(*common, "--out", url, "--stop-after", 4) == 0
    assert storage.read_bytes(f"{url}/checkpoints/latest").decode().strip() == "step-00000004"
    # a second machine: nothing mirrored, everything comes from the store
    monkeypatch.setenv("WINNOW_SCRATCH", str(tmp_path / "machine-b"))
    assert sft("--out", url, "--resume", "--dtype", "fp32", "--no-progress", "--keep-checkpoints", 2) == 0

    storage.invalidate(url)  # this process's s3fs listing cache predates the resumed run's uploads
    files = storage.list_files(url)
    assert storage.read_bytes(f"{url}/checkpoints/latest").decode().strip() == "step-00000008"
    steps = {k.split("/")[1] for k in files if k.startswith("checkpoints/step-")}
    assert steps == {"step-00000006", "step-00000008"}  # --keep-checkpoints pruned the store too
    assert "tokenizer/tokenizer.json" in files and "samples.jsonl" in files
    # the same run as the uninterrupted local one: metrics, weights, samples
    assert _remote_metrics(url) == metrics(local)
    monkeypatch.setenv("WINNOW_SCRATCH", str(tmp_path / "reader"))
    remote = load_checkpoint(url)["state_dict"]
    here = load_checkpoint(local)["state_dict"]
    assert remote.keys() == here.keys() and all(torch.equal(remote[k], here[k]) for k in here)
    assert storage.read_bytes(f"{url}/samples.jsonl") == (local / "samples.jsonl").read_bytes()

    # winnow report of the training folder in the store: curves, the latest checkpoint, its samples
    page = tmp_path / "train-report.html"
    assert winnow(["report", url, "-o", str(page)]) == 0
    html = page.read_text()
    assert 'data-complete="true"' in html and "samples-table" in html and "data-key='last_step'" in html

    # generate reads a checkpoint URL like a folder
    capsys.readouterr()
    argv = ["--prompt", "reverse: a b", "--chat", "--json", "--max-new-tokens", "6"]
    assert winnow(["generate", "--checkpoint", url, *argv]) == 0
    from_store = json.loads(capsys.readouterr().out)
    assert winnow(["generate", "--checkpoint", str(local), *argv]) == 0
    assert json.loads(capsys.readouterr().out)["token_ids"] == from_store["token_ids"]


def test_a_checkpoint_url_as_base_is_recorded_as_the_url(base, s3, tmp_path, monkeypatch):  # noqa: F811
    """--base s3://...: the run trains from this node's copy, and its lineage names the URL."""
    ckpt, _, data = base
    url = _bucket(s3, "bases") + "/sft-base"
    for f in (ckpt.parent.parent).rglob("*"):  # the base's whole output folder
        if f.is_file():
            storage.put_file(str(f), f"{url}/{f.relative_to(ckpt.parent.parent).as_posix()}")
    monkeypatch.setenv("WINNOW_SCRATCH", str(tmp_path / "scratch"))
    out = tmp_path / "sft"
    assert sft("--base", url, "--data", data, *FLAGS, "--max-steps", 1, "--out", out) == 0
    meta = json.loads((out / "checkpoints/step-00000001/config.json").read_text())
    assert meta["parent"]["path"] == f"{url}/checkpoints/{ckpt.name}"
    assert meta["train"]["base"] == url


def test_a_missing_checkpoint_url_is_a_clear_error(s3, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("WINNOW_SCRATCH", str(tmp_path / "scratch"))
    url = _bucket(s3, "empty") + "/nothing"
    assert winnow(["generate", "--checkpoint", url, "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
