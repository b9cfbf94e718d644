"""The training half of ``winnow report``: curves from ``metrics.jsonl``, the model summary from the
latest checkpoint's ``config.json`` and the lineage chain (checkpoint → parent checkpoints → the
pipeline run and config hash that made the data).

Reads JSON only (never ``model.pt``), so it needs no torch.  Every numeric metric key present is
drawn, each series downsampled to ``MAX_POINTS`` so that 100k rows give the same page size as 1k.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pipeline.report_html import PAGE, e, section

MAX_POINTS = 400  # points per curve (bucket means); bounds the SVG size
_STEP_RE = re.compile(r"^step-(\d+)$")
# drawn together on one chart each, in this order; every other numeric key gets its own chart
GROUPS = {
    "loss": ("train_loss", "val_loss"),
    "learning rate": ("lr",),
    "tokens/s": ("tokens_per_s",),
}
SKIP = {"step", "tokens", "elapsed_s"}


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows of metrics.jsonl and the number of lines that were not JSON objects (a torn last line
    of a killed run, for instance)."""
    rows, bad = [], 0
    if not path.is_file():
        return rows, bad
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def series(rows: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """Every numeric key → (steps, values), in file order, skipping non-finite values."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        step = row.get("step")
        if not isinstance(step, int | float):
            continue
        for key, value in row.items():
            if key in SKIP or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            xs, ys = out.setdefault(key, ([], []))
            xs.append(float(step))
            ys.append(float(value))
    return out


def checkpoints(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_RE.match(p.name)) and (p / "config.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_config(out_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    ckpts = checkpoints(out_dir)
    latest = out_dir / "checkpoints" / "latest"
    if latest.is_file():
        named = out_dir / "checkpoints" / latest.read_text().strip()
        if (named / "config.json").is_file():
            return named, json.loads((named / "config.json").read_text())
    if ckpts:
        return ckpts[-1], json.loads((ckpts[-1] / "config.json").read_text())
    return None, None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _find(recorded: str, bases: list[Path]) -> Path | None:
    """A path as the trainer recorded it: absolute, or relative to the directory training ran in,
    which is unknown here: tried against the working directory and the output dir's ancestors."""
    p = Path(recorded)
    if p.is_absolute():
        return p if p.exists() else None
    for base in bases:
        if (base / p).exists():
            return base / p
    return None


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def lineage(meta: dict[str, Any], where: str, out_dir: Path | None = None) -> list[dict[str, Any]]:
    """The chain from this checkpoint back through ``parent`` metas to the data's pipeline runs.

    Each link: ``{"what", "kind", "step", "path", "config"}`` (config: the checkpoint's config
    sha256 or the pipeline's config hash).  A data link also gets ``pipeline`` and ``config`` from
    the tokens manifest (or the run's manifest.json) when it is still on disk, and ``verified``:
    whether that manifest's sha256 still equals the one recorded at training time (None: not
    found)."""
    bases = [Path.cwd()] + (list(out_dir.resolve().parents)[:3] if out_dir is not None else [])
    chain: list[dict[str, Any]] = []
    node: dict[str, Any] | None = meta
    path = where
    while node:
        chain.append(
            {
                "what": "checkpoint",
                "kind": node.get("kind", "pretrain"),
                "step": node.get("step"),
                "path": path,
                "config": node.get("config_sha256"),
            }
        )
        data = node.get("data") or {}
        for m in data.get("manifests", []) or []:
            link = {
                "what": "data",
                "kind": m.get("kind"),
                "split": m.get("split"),
                "path": m.get("path"),
                "manifest_sha256": m.get("sha256"),
                "verified": None,
            }
            found = _find(str(m["manifest"]), bases) if m.get("manifest") else None
            tok = _read_json(found) if found else None
            if found and m.get("sha256"):
                link["verified"] = _sha256(found) == m["sha256"]
            if tok and isinstance(tok.get("pipeline"), dict):
                link["pipeline"] = tok["pipeline"].get("name")
                link["config"] = tok["pipeline"].get("config_hash")
            else:
                run_dir = _find(str(m["path"]), bases) if m.get("path") else None
                run_manifest = _read_json(run_dir / "manifest.json") if run_dir else None
                if run_manifest:
                    link["pipeline"] = run_manifest.get("pipeline")
                    link["config"] = run_manifest.get("config_hash")
            chain.append(link)
        for f in data.get("files", []) or []:
            chain.append(
                {
                    "what": "data",
                    "kind": f.get("format", "file"),
                    "path": f.get("path"),
                    "manifest_sha256": f.get("sha256"),
                }
            )
        parent = node.get("parent")
        if isinstance(parent, dict):
            path = str(parent.get("path", ""))
            node = parent
        else:
            node = None
    return chain


def _lineage_html(chain: list[dict[str, Any]]) -> str:
    if not chain:
        return "<p>No checkpoint: no lineage recorded yet.</p>"
    rows = []
    for i, link in enumerate(chain):
        if link["what"] == "checkpoint":
            desc = f"{e(str(link['kind']))} checkpoint, step {e(str(link['step']))}"
            conf = f"config sha256 {e(str(link['config'])[:16])}…" if link.get("config") else ""
        else:
            split = f", {e(str(link['split']))}" if link.get("split") else ""
            desc = f"data ({e(str(link.get('kind')))}{split})"
            if link.get("pipeline"):
                desc += f" from pipeline <b>{e(str(link['pipeline']))}</b>"
            conf = (
                f"config hash <code class='data-config-hash'>{e(str(link['config']))}</code>"
                if link.get("config")
                else (
                    f"sha256 {e(str(link.get('manifest_sha256'))[:16])}…"
                    if link.get("manifest_sha256")
                    else ""
                )
            )
            verified = link.get("verified")
            if verified is not None:
                word = "unchanged since training" if verified else "CHANGED since training"
                conf += f" <span data-verified='{str(verified).lower()}'>(manifest {word})</span>"
            elif link.get("manifest_sha256") and link.get("kind") == "tokens":
                conf += " <span data-verified='unknown'>(manifest not found here)</span>"
        rows.append(
            f"<tr data-lineage='{i}' "
            f"data-what='{e(link['what'])}'><td>{desc}</td><td>{e(str(link.get('path')))}</td><td>{conf}</td></tr>"
        )
    return (
        "<table id='lineage-chain'><tr><th>link</th><th>path</th><th>identity</th></tr>"
        + "".join(rows)
        + "</table>"
    )


SAMPLE_ROWS = 10  # samples shown, of the last step that logged any
SAMPLE_FIELD_CHARS = 4000


def _samples_html(rows: list[dict[str, Any]]) -> str:
    """The generations the trainer logged for its final model (``OUT/samples.jsonl``, written by
    ``train.loop.write_samples``): prompt, completion and, where given, the reference reply; other
    fields (finish reason, reward) as a note.  Text is untrusted and escaped."""
    steps = [int(r["step"]) for r in rows if isinstance(r.get("step"), int | float)]
    if not steps:
        return "<p>No samples.</p>"
    last = max(steps)
    shown = [r for r in rows if r.get("step") == last][:SAMPLE_ROWS]
    cols = [c for c in ("prompt", "completion", "reference") if any(c in r for r in shown)]
    out = [
        f"<p>Greedy generations of the model at step <span data-key='samples_step' data-value='{last}'>"
        f"{last:,}</span>.</p><table id='samples-table'><tr>"
        + "".join(f"<th>{c}</th>" for c in cols)
        + "<th>other</th></tr>"
    ]
    for r in shown:
        other = {k: v for k, v in r.items() if k not in (*cols, "step")}
        out.append(
            "<tr class='sample-row'>"
            + "".join(
                f"<td><pre class='doc' data-field='{c}'>{e(str(r.get(c, ''))[:SAMPLE_FIELD_CHARS])}"
                "</pre></td>"
                for c in cols
            )
            + f"<td class='note'>{e(json.dumps(other, ensure_ascii=False)[:500])}</td></tr>"
        )
    return "".join(out) + "</table>"


def training_report(out_dir: str | Path) -> str:
    from pipeline import report_charts as charts

    out = Path(out_dir).resolve()
    rows, bad = read_metrics(out / "metrics.jsonl")
    ckpt, meta = latest_config(out)
    all_series = series(rows)
    last_step = max((int(r["step"]) for r in rows if isinstance(r.get("step"), int | float)), default=0)
    max_steps = ((meta or {}).get("train") or {}).get("max_steps")
    ckpt_step = (meta or {}).get("step")
    complete = (
        bool(meta) and max_steps is not None and ckpt_step is not None and int(ckpt_step) >= int(max_steps)
    )

    body = [f"<h1>winnow training run <span>{e(out.name)}</span></h1>"]
    if complete:
        body.append(
            '<p id="status" class="status complete" data-complete="true">Complete: the latest '
            "checkpoint is the last step.</p>"
        )
    else:
        if not meta:
            why = "no checkpoint yet"
        elif max_steps is None:  # an imported model, or a trainer that does not record its end
            why = f"latest checkpoint at step {ckpt_step}; the run's last step is not recorded"
        else:
            why = f"latest checkpoint at step {ckpt_step} of {max_steps}"
        body.append(
            f'<p id="status" class="status incomplete" data-complete="false">Incomplete run: '
            f"{e(why)}; metrics up to step {last_step:,}.</p>"
        )

    summary = [
        f"<p><span data-key='metric_rows' data-value='{len(rows)}'>{len(rows):,}</span> metric rows, "
        f"last step "
        f"<span data-key='last_step' data-value='{last_step}'>{last_step:,}</span>."
        + (f" {bad:,} unreadable line(s) skipped." if bad else "")
        + "</p>"
    ]
    if meta:
        summary.append(
            f"<p>Latest checkpoint: {e(str(ckpt))} ({e(str(meta.get('kind', 'pretrain')))}, step "
            f"{e(str(ckpt_step))}, "
            f"{int(meta.get('tokens') or 0):,} tokens).</p>"
        )
        model = meta.get("model") or {}
        summary.append(
            # one row of keys over one row of values: the summary stays a few lines high
            "<div class='scroll'><table id='model'><tr>"
            + "".join(f"<th>{e(str(k))}</th>" for k in sorted(model))
            + "</tr><tr>"
            + "".join(f"<td data-model='{e(str(k))}'>{e(str(v))}</td>" for k, v in sorted(model.items()))
            + "</tr></table></div>"
        )
        summary.append(
            "<details><summary>Training settings</summary><pre>"
            + e(json.dumps(meta.get("train", {}), indent=1, sort_keys=True, default=str))
            + "</pre></details>"
        )
    else:
        summary.append("<p>No checkpoint has been written.</p>")
    body.append(section("model-summary", "Model", "".join(summary)))

    curves = []
    done: set[str] = set()
    for title, keys in GROUPS.items():
        present = {k: charts.downsample(*all_series[k], MAX_POINTS) for k in keys if k in all_series}
        if present:
            curves.append(
                f"<div class='curve' data-metrics='{e(' '.join(present))}'>"
                + charts.lines(present, title, "step")
                + "</div>"
            )
            done.update(present)
    for key in sorted(all_series):
        if key in done:
            continue
        xs, ys = charts.downsample(*all_series[key], MAX_POINTS)
        curves.append(
            f"<div class='curve' data-metrics='{e(key)}'>"
            + charts.lines({key: (xs, ys)}, key, "step")
            + "</div>"
        )
    curves.append(
        f"<p class='note'>Each curve shows at most {MAX_POINTS} points (means of consecutive rows; "
        f"first and last kept).</p>"
    )
    note = curves.pop()
    grid = f"<div class='grid'>{''.join(curves)}</div>{note}"
    body.append(section("lineage", "Lineage", _lineage_html(lineage(meta, str(ckpt), out) if meta else [])))
    body.append(section("curves", "Curves", grid if all_series else "<p>No metrics yet.</p>"))

    samples = out / "samples.jsonl"
    if samples.is_file():
        body.append(section("samples", "Samples", _samples_html(read_metrics(samples)[0])))
    return PAGE.format(title=e(f"winnow report: {out.name}"), body="\n".join(body))
