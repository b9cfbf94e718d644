"""`winnow report`: pipeline and training reports, opened in a real headless Chromium.

The run directories are built by hand (no Ray), so these tests take seconds: a finished run with
several removed parts per stage, hostile documents and a PII before/after sample; an interrupted
run (markers only, no stats.json); a run that kept nothing; a training directory whose SFT
checkpoint descends from a pretrain checkpoint trained on a pipeline run's token shards.

The browser is Debian's ``chromium`` driven by PyPI ``playwright`` (never ``playwright install``).
A missing browser fails these tests: ``make install`` installs it.  Each browser test saves a
screenshot under ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import winnow

from pipeline.report_data import SAMPLES_PER_REASON, load_run

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS_SCRIPT = "</script><script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'
HOSTILE = f"Buy now {XSS_SCRIPT} and {XSS_IMG} end"


# --- building run directories --------------------------------------------------------------------


def _stage(
    name: str, docs_in: int, docs_out: int, dropped: dict[str, int], extra: dict | None = None
) -> dict:
    return {
        "name": name,
        "docs_in": docs_in,
        "docs_out": docs_out,
        "dropped": dropped,
        "bytes_in": docs_in * 1000,
        "bytes_out": docs_out * 900,
        "seconds": 1.5,
        "extra": extra or {},
    }


STATS = [
    _stage("read", 120, 118, {"not_html": 2}),
    {
        **_stage(
            "language",
            118,
            100,
            {"language_not_kept": 15, "low_score": 3},
            {"docs_by_language": {"en": 100, "de": 15, "fr": 3}},
        ),
        # the first stage with text: the length distribution before the first filter
        "text_chars_in": {"0": 3, "256": 15, "1024": 60, "4096": 40},
    },
    _stage("gopher_quality", 100, 90, {"short_doc": 6, "below_alpha_threshold": 4}),
    _stage("minhash_dedup", 90, 88, {"near_duplicate": 2}, {"cluster_sizes": {"2": 2}, "clusters": 2}),
    _stage("pii", 88, 88, {}, {"docs_changed": 1, "replaced": {"email": 1}}),
]


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _removed(root: Path) -> None:
    """Dropped-row samples spread over two parts per stage: reason ``short_doc`` and the hostile
    document only in the *second* part (the old report read only the first)."""
    rows = {
        "language": [
            [
                {
                    "id": f"lang-{i}",
                    "url": f"https://www.example.de/{i}",
                    "reason": "language_not_kept",
                    "text_chars": 30,
                    "text": f"Ein deutscher Text {i}",
                }
                for i in range(3)
            ],
            [
                {
                    "id": "lang-low",
                    "url": "https://blog.example.fr/x",
                    "reason": "low_score",
                    "text_chars": 10,
                    "text": "bof",
                }
            ],
        ],
        "gopher_quality": [
            [
                {
                    "id": f"alpha-{i}",
                    "url": "https://spam.example.com/a",
                    "reason": "below_alpha_threshold",
                    "text_chars": 5,
                    "text": "$$$ !!",
                }
                for i in range(7)
            ],
            [
                {
                    "id": "hostile-doc",
                    "url": "https://evil.example.net/x",
                    "reason": "short_doc",
                    "text_chars": len(HOSTILE),
                    "text": HOSTILE,
                }
            ],
        ],
        "minhash_dedup": [
            [
                {
                    "id": "dup-1",
                    "url": "https://www.example.org/dup",
                    "reason": "near_duplicate",
                    "text_chars": 4,
                    "text": "dup!",
                }
            ]
        ],
    }
    for stage, parts in rows.items():
        for i, part in enumerate(parts):
            _write_parquet(root / "removed" / stage / f"part-{i:05d}.parquet", part)
    _write_parquet(
        root / "removed" / "pii" / "part-00001.parquet",
        [
            {
                "id": "pii-1",
                "reason": "changed:email",
                "before": "write to bob@example.com <b>now</b>",
                "after": "write to <EMAIL> <b>now</b>",
                "text_chars": 40,
            }
        ],
    )


def make_run(root: Path, *, finished: bool = True, kept: int = 88) -> Path:
    """A run directory as the executor leaves it (finished) or as a kill leaves it (markers only)."""
    stats = json.loads(json.dumps(STATS))
    if kept == 0:
        stats[-2]["docs_out"] = 0
        stats[-2]["dropped"] = {"near_duplicate": 90}
        stats[-1].update(docs_in=0, docs_out=0, bytes_in=0, bytes_out=0)
    root.mkdir(parents=True)
    _removed(root)
    if kept:
        docs = [
            {
                "id": f"doc-{i}",
                "url": f"https://{['www.example.com', 'news.example.org'][i % 2]}/{i}",
                "text": "word " * (20 + i),
                "language": "en",
                "language_score": 0.9,
            }
            for i in range(kept - 1)
        ]
        docs.append(
            {
                "id": "kept-hostile",
                "url": "https://evil.example.net/kept",
                "text": HOSTILE,
                "language": "en",
                "language_score": 0.7,
            }
        )
        # an unfinished run with a barrier has its documents in the parts of an earlier phase
        folder = root / "data" if finished else root / "_work" / "phase-0" / "data"
        _write_parquet(folder / "part-00000.parquet", docs[:40])
        _write_parquet(folder / "part-00001.parquet", docs[40:])
    (root / "_work" / "phase-0" / "done").mkdir(parents=True)
    (root / "_work" / "plan.json").write_text(
        json.dumps(
            {
                "pipeline": "synthetic",
                "config_hash": "abc123def4567890",
                "shards": [{"path": "a"}, {"path": "b"}, {"path": "c"}],
            }
        )
    )
    if finished:
        (root / "stats.json").write_text(json.dumps(stats))
        (root / "manifest.json").write_text(
            json.dumps(
                {
                    "pipeline": "synthetic",
                    "config_hash": "abc123def4567890",
                    "config": {
                        "name": "synthetic",
                        "stages": [{"language": {"languages": ["en"]}}],
                        "note": XSS_SCRIPT,
                    },
                    "inputs": [{"path": "/data/in.warc.gz", "bytes": 123456}],
                    "outputs": {"data": []},
                    "counts": {},
                    "finished": "2026-12-06T12:00:00Z",
                }
            )
        )
        tokens = root / "tokens" / "manifest.json"
        tokens.parent.mkdir()
        tokens.write_text(
            json.dumps(
                {
                    "vocab_size": 4096,
                    "pipeline": {"name": "synthetic", "config_hash": "abc123def4567890"},
                    "splits": {
                        "train": {"documents": 80, "tokens": 20000, "shards": [{}]},
                        "val": {"documents": 8, "tokens": 2000, "shards": [{}]},
                    },
                }
            )
        )
    else:
        # two of three tasks of phase 0 finished: their markers hold per-task stats
        for i, share in enumerate((0.5, 0.25)):
            entries = []
            for s in stats[:3]:
                part = dict(s)
                for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
                    part[key] = int(s[key] * share)
                part["dropped"] = {r: int(n * share) for r, n in s["dropped"].items()}
                part["docs_out"] = part["docs_in"] - sum(part["dropped"].values())
                entries.append(part)
            (root / "_work" / "phase-0" / "done" / f"part-{i:05d}.json").write_text(
                json.dumps({"index": i, "rows": entries[-1]["docs_out"], "stats": entries, "seconds": 2.5})
            )
    return root


def make_training(root: Path, rows: int = 60) -> Path:
    """A pretrain run on a pipeline run's tokens, and an SFT run on its checkpoint (the report's input)."""
    run = make_run(root / "pipeline_run")
    pre = root / "pretrain"
    sft = root / "sft"
    pre_meta = {
        "kind": "pretrain",
        "step": 40,
        "tokens": 163840,
        "parent": None,
        "model": {"n_layer": 2, "n_embd": 64, "vocab_size": 4096},
        "data": {
            "manifests": [
                {
                    "kind": "tokens",
                    "split": "train",
                    "path": str(run),
                    "manifest": str(run / "tokens" / "manifest.json"),
                    "sha256": "f" * 64,
                }
            ]
        },
    }
    sft_meta = {
        "kind": "sft",
        "step": rows,
        "tokens": 50000,
        "train": {"max_steps": rows, "lr": 5e-4},
        "model": {"n_layer": 2, "n_embd": 64, "vocab_size": 4096},
        "parent": {**pre_meta, "path": str(pre / "checkpoints" / "step-00000040"), "config_sha256": "c" * 64},
        "data": {"files": [{"format": "alpaca", "path": "/data/sft.jsonl.gz", "sha256": "a" * 64}]},
    }
    for out, meta, step in ((pre, pre_meta, 40), (sft, sft_meta, rows)):
        ck = out / "checkpoints" / f"step-{step:08d}"
        ck.mkdir(parents=True)
        (ck / "config.json").write_text(json.dumps(meta))
        (out / "checkpoints" / "latest").write_text(ck.name + "\n")
    lines = []
    for step in range(rows + 1):
        if step % 10 == 0:
            lines.append(
                {
                    "step": step,
                    "tokens": step * 512,
                    "val_loss": 5.0 - step / rows,
                    "val_accuracy": step / rows,
                }
            )
        if step:
            lines.append(
                {
                    "step": step,
                    "tokens": step * 512,
                    "train_loss": 6.0 - 2 * step / rows,
                    "lr": 5e-4,
                    "tokens_per_s": 1000.0 + step,
                    "rewards/margins": step / 10,
                }
            )
    (sft / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    samples = [
        {"step": 30, "prompt": "old", "completion": "from an earlier end of the run"},
        {"step": rows, "prompt": "Say <b>hi</b>", "completion": "hi </script><img src=x onerror=alert(1)>",
         "reference": "hi", "finish_reason": "eot"},
        {"step": rows, "prompt": "Count", "completion": "1 2 3", "reference": "1 2",
         "finish_reason": "length"},
    ]  # fmt: skip
    (sft / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    return sft


# --- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make install` installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Opened:
    def __init__(self, page, console: list, requests: list, dialogs: list, errors: list) -> None:
        self.page, self.console, self.requests, self.dialogs, self.errors = (
            page,
            console,
            requests,
            dialogs,
            errors,
        )

    def value(self, selector: str) -> int:
        el = self.page.query_selector(selector)
        assert el is not None, f"no element {selector}"
        shown = el.inner_text().strip()
        value = int(el.get_attribute("data-value"))
        assert shown == f"{value:,}", (selector, shown, value)  # integers, as shown
        return value

    def check_clean(self, url: str) -> None:
        """No console error, no page error, no dialog (no script ran), no request but the file."""
        assert not [m for m in self.console if m[0] == "error"], self.console
        assert not self.errors and not self.dialogs, (self.errors, self.dialogs)
        assert all(r == url or r.startswith("data:") for r in self.requests), self.requests
        assert self.page.evaluate("document.scripts.length") == 0
        assert self.page.query_selector_all("img") == []


def open_report(browser, path: Path, shot: str) -> Opened:
    console: list = []
    requests: list = []
    dialogs: list = []
    errors: list = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    # open every <details> so the screenshot and inner_text include the samples
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
    return Opened(page, console, requests, dialogs, errors)


def report(tmp_path: Path, run: Path, name: str = "report.html") -> Path:
    out = tmp_path / name
    res = winnow("report", str(run), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out)
    return out


# --- pipeline runs ---------------------------------------------------------------------------------

SECTIONS = [
    "#status",
    "#summary",
    "#config",
    "#funnel",
    "#stage-table",
    "#tokens",
    "#stages",
    "#distributions",
    "#languages",
    "#dedup",
    "#lengths",
    "#domains",
    "#domains-kept",
    "#domains-dropped",
    "#bounds",
]


def test_pipeline_report_in_chromium(tmp_path, browser):
    run = make_run(tmp_path / "run")
    out = report(tmp_path, run)
    r = open_report(browser, out, "pipeline_report")
    r.check_clean(out.resolve().as_uri())
    page = r.page
    for sel in SECTIONS:
        assert page.query_selector(sel) is not None, sel
    assert page.get_attribute("#status", "data-complete") == "true"
    assert page.inner_text("#pipeline-name") == "synthetic"
    assert page.inner_text("#config-hash") == "abc123def4567890"
    stats = json.loads((run / "stats.json").read_text())
    for s in stats:
        name = s["name"]
        assert page.query_selector(f"#stage-{name}") is not None
        for key in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
            assert r.value(f'[data-key="{key}"][data-stage="{name}"]') == s[key]
        assert r.value(f'[data-key="dropped"][data-stage="{name}"]') == sum(s["dropped"].values())
        for reason, n in s["dropped"].items():
            assert r.value(f'[data-reason="{reason}"][data-stage="{name}"]') == n
    assert r.value('[data-key="run_docs_out"]') == stats[-1]["docs_out"]
    assert r.value('[data-key="tokens"][data-stage="train"]') == 20000
    assert r.value('[data-language="en"]') == 100
    assert page.query_selector("#scores svg") is not None  # the language_score column of data/
    before = page.query_selector("#lengths-before")
    assert before.get_attribute("data-stage") == "language"
    assert int(before.get_attribute("data-documents")) == stats[1]["docs_in"] == 118
    assert len(before.query_selector_all("svg path[clip-path]")) >= 3  # one bar per non-empty bucket
    # a sample for each reason with rows on disk, from every part (short_doc is only in part 1)
    for stage, reason in [
        ("language", "language_not_kept"),
        ("language", "low_score"),
        ("gopher_quality", "short_doc"),
        ("gopher_quality", "below_alpha_threshold"),
        ("minhash_dedup", "near_duplicate"),
        ("pii", "changed:email"),
    ]:
        box = page.query_selector(f'details[data-stage="{stage}"][data-sample-reason="{reason}"]')
        assert box is not None, (stage, reason)
    alpha = page.query_selector('details[data-sample-reason="below_alpha_threshold"]')
    assert len(alpha.query_selector_all(".sample")) == SAMPLES_PER_REASON  # 7 on disk, bounded
    text = page.inner_text("body")
    # hostile markup shows as text, in the dropped sample, the kept-domain table and the config
    assert XSS_SCRIPT in text and XSS_IMG in text
    hostile = page.locator("pre.doc", has_text=XSS_SCRIPT).first
    assert hostile.is_visible() and hostile.inner_text() == HOSTILE  # the whole text, as text
    assert "example.net" in page.inner_text("#domains-dropped")  # evil.example.net, by registered domain
    # PII before/after: the changed span highlighted on both sides, markup escaped
    changed = page.query_selector('details[data-sample-reason="changed:email"]')
    assert changed.query_selector("del").inner_text() == "bob@example.com"
    assert changed.query_selector("ins").inner_text() == "<EMAIL>"
    assert "<b>now</b>" in changed.inner_text()


def test_report_html_escapes_and_is_self_contained(tmp_path):
    """The file itself: no script element, no external URL in any src/href, hostile text escaped."""
    run = make_run(tmp_path / "run")
    page = report(tmp_path, run).read_text()
    assert "<script" not in page.lower()
    assert html.escape(XSS_SCRIPT) in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # SVG clip paths refer to ids in the page only


def test_interrupted_run_reports_incomplete(tmp_path, browser):
    run = make_run(tmp_path / "run", finished=False)
    out = report(tmp_path, run)
    r = open_report(browser, out, "pipeline_interrupted")
    r.check_clean(out.resolve().as_uri())
    assert r.page.get_attribute("#status", "data-complete") == "false"
    assert "Incomplete run" in r.page.inner_text("#status")
    assert "2 task(s) finished of 3" in r.page.inner_text("#status")
    merged = load_run(run).stats
    assert [s["name"] for s in merged] == ["read", "language", "gopher_quality"]
    for s in merged:
        assert r.value(f'[data-key="docs_in"][data-stage="{s["name"]}"]') == s["docs_in"]
    assert merged[0]["docs_in"] == 60 + 30  # summed over both markers
    assert r.value('[data-key="tasks"][data-stage="0"]') == 2  # the phases table
    lengths = r.page.inner_text("#distributions")
    assert "_work/phase-0/data/ (the run is unfinished)" in lengths and "read 2 of 2 parts" in lengths
    # winnow stats reads the same markers and says so
    res = winnow("stats", str(run), "--json")
    assert res.returncode == 0 and "incomplete" in res.stderr
    assert json.loads(res.stdout) == merged


def test_zero_output_documents(tmp_path, browser):
    run = make_run(tmp_path / "run", kept=0)
    out = report(tmp_path, run)
    r = open_report(browser, out, "pipeline_zero_docs")
    r.check_clean(out.resolve().as_uri())
    assert r.value('[data-key="run_docs_out"]') == 0
    assert "No kept documents" in r.page.inner_text("#distributions")


def test_report_of_a_non_run_directory_fails_clearly(tmp_path):
    res = winnow("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert res.returncode == 2 and "run directory" in res.stderr
    assert not (tmp_path / "r.html").exists()


# --- training runs ---------------------------------------------------------------------------------


def test_training_report_in_chromium(tmp_path, browser):
    sft = make_training(tmp_path)
    out = report(tmp_path, sft)
    r = open_report(browser, out, "training_report")
    r.check_clean(out.resolve().as_uri())
    page = r.page
    for sel in ("#status", "#model-summary", "#model", "#curves", "#lineage", "#lineage-chain"):
        assert page.query_selector(sel) is not None, sel
    assert page.get_attribute("#status", "data-complete") == "true"
    rows = sum(1 for _ in (sft / "metrics.jsonl").open())
    assert r.value('[data-key="metric_rows"]') == rows
    assert r.value('[data-key="last_step"]') == 60
    drawn = " ".join(el.get_attribute("data-metrics") for el in page.query_selector_all(".curve"))
    for key in ("train_loss", "val_loss", "lr", "tokens_per_s", "val_accuracy", "rewards/margins"):
        assert key in drawn.split(), key
    assert len(page.query_selector_all(".curve svg")) == len(page.query_selector_all(".curve"))
    assert page.inner_text('[data-model="n_layer"]') == "2"
    chain = [el.get_attribute("data-what") for el in page.query_selector_all("#lineage-chain tr[data-what]")]
    assert chain == ["checkpoint", "data", "checkpoint", "data"]
    text = page.inner_text("#lineage")
    assert "sft checkpoint" in text and "pretrain checkpoint" in text
    assert "synthetic" in text and "abc123def4567890" in text  # the pipeline run and its config hash
    # the tokens manifest recorded at training time (sha256 "fff...") is not the file on disk now
    assert page.get_attribute("[data-verified]", "data-verified") == "false"
    # samples of the final model (the last step's rows only), untrusted text shown as text
    assert r.value('[data-key="samples_step"]') == 60
    rows = page.query_selector_all("#samples-table tr.sample-row")
    assert len(rows) == 2
    first = [rows[0].query_selector(f'[data-field="{f}"]').inner_text() for f in ("prompt", "completion")]
    assert first == ["Say <b>hi</b>", "hi </script><img src=x onerror=alert(1)>"]
    assert "eot" in rows[0].inner_text()


def test_training_lineage_verifies_the_data_manifest(tmp_path):
    """Relative paths are found from the output dir's ancestors (training ran elsewhere), and an
    unchanged tokens manifest is reported as such."""
    import hashlib

    sft = make_training(tmp_path)
    meta_path = next((tmp_path / "pretrain" / "checkpoints").glob("step-*")) / "config.json"
    manifest = tmp_path / "pipeline_run" / "tokens" / "manifest.json"
    sft_config = next((sft / "checkpoints").glob("step-*")) / "config.json"
    meta = json.loads(sft_config.read_text())
    link = meta["parent"]["data"]["manifests"][0]
    link["manifest"] = "pipeline_run/tokens/manifest.json"  # relative to tmp_path, not to the cwd
    link["sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    sft_config.write_text(json.dumps(meta))
    assert meta_path.exists()
    page = report(tmp_path, sft).read_text()
    assert "data-verified='true'" in page and "abc123def4567890" in page


def test_training_report_bounds_100k_rows(tmp_path):
    """100k metric rows: every curve keeps at most MAX_POINTS points, so the page stays small."""
    from pipeline.report_train import MAX_POINTS

    out_dir = tmp_path / "big"
    out_dir.mkdir()
    with (out_dir / "metrics.jsonl").open("w") as f:
        for step in range(1, 100_001):
            f.write(
                json.dumps({"step": step, "train_loss": 5 - step / 1e5, "lr": 1e-3, "tokens_per_s": 1e4})
                + "\n"
            )
        f.write('{"step": 100001, "train_lo')  # a torn last line of a killed run
    out = report(tmp_path, out_dir)
    page = out.read_text()
    assert 'data-complete="false"' in page and "1 unreadable line" in page
    assert out.stat().st_size < 600_000, out.stat().st_size
    assert f"at most {MAX_POINTS} points" in page


def test_training_run_stopped_before_its_last_step_is_incomplete(tmp_path):
    sft = make_training(tmp_path)
    config = next((sft / "checkpoints").glob("step-*")) / "config.json"
    meta = json.loads(config.read_text())
    meta["train"]["max_steps"] = 100
    config.write_text(json.dumps(meta))
    page = report(tmp_path, sft).read_text()
    assert 'data-complete="false"' in page and "latest checkpoint at step 60 of 100" in page


def test_domains_count_registered_domains_and_public_suffixes():
    from pipeline.report_data import domain_counts

    hosts, tlds = domain_counts(
        ["https://news.bbc.co.uk/a", "http://www.bbc.co.uk/b", "http://intranet/p", "http://10.0.0.1/", "bad"]
    )
    assert hosts == {"bbc.co.uk": 2, "intranet": 1, "10.0.0.1": 1}
    assert tlds == {".co.uk": 2, "(no public suffix)": 1, "(IP address)": 1}
