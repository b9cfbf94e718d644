"""``winnow tokenizer encode|decode|show|report`` through the real command line."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import REPO, WINNOW

from tokenizer import Tokenizer
from tokenizer.cli import token_label
from tokenizer.train import train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Der schnelle braune Fuchs springt über den faulen Hund. " * 10,
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку. " * 10,
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train_tokenizer(TEXTS, 400, run / "tokenizer")
    return run


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WINNOW, "tokenizer", *args], input=stdin, capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_encode_decode_round_trip(run_dir):
    tok = Tokenizer.from_dir(run_dir)
    text = "The lazy Fuchs über собаку 😀\n<|endoftext|>"
    r = cli("encode", str(run_dir), text, "--json")
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    assert ids == tok.encode(text) and tok.eot_id not in ids
    special = json.loads(cli("encode", str(run_dir), text, "--json", "--allow-special").stdout)
    assert special[-1] == tok.eot_id
    back = cli("decode", str(run_dir / "tokenizer"), stdin=" ".join(map(str, ids)))
    assert back.returncode == 0 and back.stdout == text
    assert cli("decode", str(run_dir), *[str(i) for i in ids]).stdout == text
    assert cli("decode", str(run_dir), json.dumps(ids)).stdout == text  # "[1, 2, 3]" works too


def test_show_marks_every_token(run_dir, tmp_path):
    tok = Tokenizer.from_dir(run_dir)
    text = "The quick fox\tjumps\n😀"
    f = tmp_path / "t.txt"
    f.write_text(text)
    r = cli("show", str(run_dir), "-f", str(f))  # not a TTY: plain markers
    assert r.returncode == 0, r.stderr
    marked, ids_line, summary = r.stdout.splitlines()
    ids = tok.encode(text)
    assert ids_line == " ".join(map(str, ids))
    assert marked == "|" + "|".join(token_label(tok.token_bytes(i)) for i in ids) + "|"
    assert "\\t" in marked and "\\n" in marked and "<F0>" in marked  # the emoji is split into bytes
    assert summary.startswith(f"{len(ids)} tokens, {len(text)} characters")


def test_report_compares_with_the_hf_file(run_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS) + "\n")
    r = cli(
        "report",
        str(run_dir),
        str(data),
        "--compare",
        str(run_dir / "tokenizer" / "tokenizer.json"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    tok = Tokenizer.from_dir(run_dir)
    tokens = sum(len(tok.encode(t)) for t in TEXTS)
    n_bytes = sum(len(t.encode()) for t in TEXTS)
    ours, hf = report["tokenizers"]
    assert report["documents"] == 3 and report["bytes"] == n_bytes
    assert report["words"] == sum(len(t.split()) for t in TEXTS)
    assert ours["tokens"] == hf["tokens"] == tokens and hf["tokens_vs_first"] == 1.0
    assert ours["bytes_per_token"] == round(n_bytes / tokens, 4)
    assert ours["tokens_per_word"] == round(tokens / report["words"], 4)
    table = cli("report", str(run_dir), str(data))
    assert table.returncode == 0 and "bytes/token" in table.stdout and f"{tokens:,}" in table.stdout


def test_errors_are_one_line(run_dir, tmp_path):
    r = cli("encode", str(tmp_path), "x")
    assert r.returncode != 0 and "no winnow tokenizer" in r.stderr and "Traceback" not in r.stderr
    r = cli("decode", str(run_dir), "5", "100000")
    assert r.returncode != 0 and "outside 0..399" in r.stderr
    r = cli("report", str(run_dir), str(tmp_path / "missing.txt"))
    assert r.returncode != 0 and "No such file" in r.stderr and "Traceback" not in r.stderr
    assert "tokenizer" in subprocess.run([*WINNOW, "--help"], capture_output=True, text=True, cwd=REPO).stdout
