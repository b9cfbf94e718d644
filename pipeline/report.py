"""``winnow report DIR``: one self-contained HTML page for a pipeline run or a training run.

The page has no script and loads nothing: styles are inline, charts are inline SVG drawn by
matplotlib (``pipeline.report_charts``), and every string that comes from a run (document text,
URLs, reasons, config values) goes through ``html.escape``, so markup or ``</script>`` inside a
web document shows as text.  Sampled documents are browsable with ``<details>`` elements (no
JavaScript).  Numbers the tests compare with ``stats.json`` carry ``data-*`` attributes.

Size is bounded by ``pipeline.report_data``'s caps (samples per reason, characters per sample,
parts and rows read) and by downsampling curves (``report_charts.downsample``).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pipeline import report_data as rdata
from pipeline.report_html import PAGE, e, fmt_int, num_cell, num_span, section


def diff_html(before: str, after: str) -> tuple[str, str]:
    """Both texts escaped, with what was removed in ``<del>`` and what was added in ``<ins>``."""
    a, b = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op == "equal":
            a.append(e(before[i1:i2]))
            b.append(e(after[j1:j2]))
            continue
        if i2 > i1:
            a.append(f"<del>{e(before[i1:i2])}</del>")
        if j2 > j1:
            b.append(f"<ins>{e(after[j1:j2])}</ins>")
    return "".join(a), "".join(b)


def _top(counts: dict[str, int], k: int = 25) -> tuple[list[str], list[int]]:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    labels = [str(x) for x, _ in items[:k]]
    values = [int(v) for _, v in items[:k]]
    if len(items) > k:
        labels.append(f"{len(items) - k} others")
        values.append(sum(v for _, v in items[k:]))
    return labels, values


def _counts_table(counts: dict[str, int], kind: str, k: int = 25) -> str:
    labels, values = _top(counts, k)
    rows = "".join(
        f'<tr><td>{e(label)}</td><td class="n" data-{kind}="{e(label)}" data-value="{v}">'
        f"{fmt_int(v)}</td></tr>"
        for label, v in zip(labels, values)
    )
    # charts draw text as paths: the table keeps the names readable, searchable and copyable
    return (
        f"<details><summary>as a table</summary><table><tr><th>{e(kind)}</th><th "
        f"class='n'>documents</th></tr>"
        f"{rows}</table></details>"
    )


# --- pipeline run --------------------------------------------------------------------------------


def _status(run: rdata.RunData) -> str:
    if run.complete:
        return '<p id="status" class="status complete" data-complete="true">Complete run.</p>'
    done = "; ".join(
        f"phase {i}: {n:,} task(s) finished" + (f" of {t:,}" if t is not None else "")
        for i, (n, t) in enumerate(run.progress)
    )
    return (
        '<p id="status" class="status incomplete" data-complete="false">Incomplete run: stats.json '
        "has not been written (the run was interrupted, failed or is still running). The numbers "
        f"below sum the tasks that finished ({e(done) or 'none'}).</p>"
    )


def _summary(run: rdata.RunData) -> str:
    m = run.manifest or {}
    rows = [
        ("pipeline", f'<span id="pipeline-name">{e(run.pipeline)}</span>'),
        ("config hash", f'<code id="config-hash">{e(run.config_hash or "unknown")}</code>'),
        ("directory", e(str(run.root))),
    ]
    if m.get("finished"):
        rows.append(("finished", e(str(m["finished"]))))
    if m.get("winnow_version"):
        rows.append(("winnow", e(str(m["winnow_version"]))))
    if run.stats:
        rows.append(("documents read", num_span(run.stats[0]["docs_in"], "run_docs_in")))
        rows.append(("documents out", num_span(run.stats[-1]["docs_out"], "run_docs_out")))
    body = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    inputs = m.get("inputs")
    if inputs:
        body += "<h3>Inputs</h3><table><tr><th>path</th><th class='n'>bytes</th></tr>"
        body += "".join(
            f"<tr><td>{e(str(i.get('path')))}</td><td class='n'>{fmt_int(i.get('bytes', 0))}</td></tr>"
            for i in inputs[:200]
        )
        body += "</table>" + (
            f"<p class='note'>{len(inputs) - 200:,} more inputs not listed.</p>" if len(inputs) > 200 else ""
        )
    elif run.plan:
        body += f"<p>{len(run.plan.get('shards', [])):,} input shard(s) planned.</p>"
    if m.get("config"):
        body += "<details id='config'><summary>Resolved config</summary><pre>"
        body += e(json.dumps(m["config"], indent=2, ensure_ascii=False, default=str)) + "</pre></details>"
    else:
        body += (
            "<p id='config' class='note'>Resolved config: not available "
            "(manifest.json is written when the run finishes).</p>"
        )
    return section("summary", "Run", body)


def _funnel(run: rdata.RunData, charts) -> str:
    stats = run.stats
    head = (
        "<table id='stage-table'><tr><th>stage</th><th class='n'>docs in</th><th class='n'>docs out</th>"
        "<th class='n'>dropped</th><th class='n'>% kept</th><th class='n'>bytes in</th><th "
        "class='n'>bytes out</th>"
        "<th class='n'>mean bytes/doc out</th><th class='n'>task time s</th><th class='n'>docs/s</th></tr>"
    )
    rows = []
    for s in stats:
        name = s["name"]
        kept = 100.0 * s["docs_out"] / s["docs_in"] if s["docs_in"] else 100.0
        rate = f"{s['docs_in'] / s['seconds']:,.0f}" if s["seconds"] > 0 else "-"
        mean = f"{s['bytes_out'] / s['docs_out']:,.0f}" if s["docs_out"] else "-"
        rows.append(
            f"<tr data-stage-row='{e(name)}'><td><a href='#stage-{e(name)}'>{e(name)}</a></td>"
            + num_cell(s["docs_in"], "docs_in", name)
            + num_cell(s["docs_out"], "docs_out", name)
            + num_cell(sum(s["dropped"].values()), "dropped", name)
            + f"<td class='n'>{kept:.1f}</td>"
            + num_cell(s["bytes_in"], "bytes_in", name)
            + num_cell(s["bytes_out"], "bytes_out", name)
            + f"<td class='n'>{mean}</td><td class='n'>{s['seconds']:,.1f}</td><td class='n'>{rate}</td></tr>"
        )
    body = head + "".join(rows) + "</table>"
    if run.phases:
        body += (
            "<h3 id='phases'>Phases (wall-clock times from the task markers)</h3><table><tr><th>phase</th>"
            "<th>stages</th><th class='n'>tasks</th><th class='n'>task wall s, summed</th>"
            "<th class='n'>longest task s</th><th class='n'>barrier s</th></tr>"
        )
        for ph in run.phases:
            barrier = f"{ph.barrier_s:,.1f}" if ph.barrier_s is not None else "-"
            body += (
                f"<tr><td>{ph.index}</td><td>{e(', '.join(ph.stages))}</td>"
                f"{num_cell(ph.tasks, 'tasks', str(ph.index))}<td class='n'>{ph.task_wall_s:,.1f}</td>"
                f"<td class='n'>{ph.longest_task_s:,.1f}</td><td class='n'>{barrier}</td></tr>"
            )
        body += "</table>"
    body += (
        "<p class='note'>Task time is summed over tasks (CPU-seconds of the stage on all workers); "
        "docs/s is docs in ÷ task time, i.e. per core. Wall time per stage is not recorded "
        "(the stages of a phase run fused in one task): the phases table has the tasks' wall times. "
        "Bytes are UTF-8 bytes of the text (HTML before extraction).</p>"
    )
    if stats:
        labels = ["input"] + [s["name"] for s in stats]
        series = {
            "documents": [stats[0]["docs_in"]] + [s["docs_out"] for s in stats],
            "bytes": [stats[0]["bytes_in"]] + [s["bytes_out"] for s in stats],
        }
        body += charts.funnel(labels, series, "What is left after each stage", log=["bytes"])
    tok = run.tokens
    if tok and tok.get("splits"):
        body += (
            "<h3 id='tokens'>Tokens</h3><table><tr><th>split</th><th class='n'>documents</th>"
            "<th class='n'>tokens</th><th class='n'>shards</th></tr>"
        )
        for split, info in tok["splits"].items():
            body += (
                f"<tr><td>{e(split)}</td>{num_cell(info.get('documents', 0), 'documents', split)}"
                f"{num_cell(info.get('tokens', 0), 'tokens', split)}<td "
                f"class='n'>{len(info.get('shards', [])):,}</td></tr>"
            )
        body += "</table>"
        tokenize = next((s for s in stats if s["name"] == "tokenize"), None)
        bpt = (tokenize or {}).get("extra", {}).get("bytes_per_token")
        if bpt:
            vocab = fmt_int(tok.get("vocab_size", 0))
            body += (
                f"<p>Compression: <span id='bytes-per-token'>{float(bpt):.3f}</span> bytes per token "
                f"(vocabulary {vocab}).</p>"
            )
    return section("funnel", "Funnel", body)


def _sample_html(row: dict[str, Any]) -> str:
    meta = " · ".join(
        f"{k}: {e(str(row[k]))}" for k in ("id", "url", "text_chars", "part") if row.get(k) is not None
    )
    if row.get("before") is not None or row.get("after") is not None:
        before, after = diff_html(row.get("before") or "", row.get("after") or "")
        return (
            f"<div class='sample changed'><p "
            f"class='note'>{meta}</p><table><tr><th>before</th><th>after</th></tr>"
            f"<tr><td><pre class='before'>{before}</pre></td><td><pre "
            f"class='after'>{after}</pre></td></tr></table></div>"
        )
    text = e(row.get("text") or "")
    return f"<div class='sample'><p class='note'>{meta}</p><pre class='doc'>{text}</pre></div>"


def _stage(run: rdata.RunData, s: dict[str, Any], dropped_urls: list[str]) -> str:
    name = s["name"]
    samples = rdata.removed_samples(run.root, name)
    dropped_urls += samples.urls
    body = [
        f"<p>{fmt_int(s['docs_in'])} in, {fmt_int(s['docs_out'])} kept, "
        f"{fmt_int(sum(s['dropped'].values()))} dropped; {s['seconds']:,.1f} task-seconds.</p>"
    ]
    if s["dropped"]:
        body.append(
            "<table class='reasons'><tr><th>drop reason</th><th class='n'>documents</th><th "
            "class='n'>samples shown</th></tr>"
        )
        for reason, n in s["dropped"].items():
            shown = len(samples.by_reason.get(reason, []))
            body.append(
                f"<tr><td>{e(reason)}</td><td class='n' data-stage='{e(name)}' data-reason='{e(reason)}' "
                f"data-value='{int(n)}'>{fmt_int(n)}</td><td class='n'>{shown}</td></tr>"
            )
        body.append("</table>")
    for reason, rows in samples.by_reason.items():
        if not rows:
            continue
        label = "changed" if reason.startswith("changed:") else "dropped"
        body.append(
            f"<details class='samples' data-stage='{e(name)}' "
            f"data-sample-reason='{e(reason)}'><summary>{e(reason)}: "
            f"{len(rows)} {label} document(s) shown of {samples.rows_seen[reason]:,} sampled on "
            f"disk</summary>" + "".join(_sample_html(r) for r in rows) + "</details>"
        )
    if samples.parts_read < samples.parts_total:
        body.append(
            f"<p class='note'>Samples drawn from the first {samples.parts_read:,} of "
            f"{samples.parts_total:,} part files.</p>"
        )
    extra = s.get("extra")
    if extra:
        body.append(
            "<details><summary>Counters (extra)</summary><pre>"
            + e(json.dumps(extra, indent=1, ensure_ascii=False))
            + "</pre></details>"
        )
    return f"<section id='stage-{e(name)}' class='stage'><h3>{e(name)}</h3>{''.join(body)}</section>"


def _distributions(run: rdata.RunData, charts, dropped_urls: list[str]) -> str:
    out = []
    langs = next(
        (s["extra"]["docs_by_language"] for s in run.stats if s.get("extra", {}).get("docs_by_language")),
        None,
    )
    if langs:
        labels, values = _top(langs, 20)
        out.append("<h3 id='languages'>Language (documents seen by the language stage)</h3>")
        out.append(
            charts.barh(labels, values, "documents by language") + _counts_table(langs, "language", 20)
        )
    clusters = next((s for s in run.stats if s.get("extra", {}).get("cluster_sizes")), None)
    if clusters:
        sizes = clusters["extra"]["cluster_sizes"]
        ordered = sorted(sizes.items(), key=lambda kv: int(kv[0]))
        out.append(f"<h3 id='dedup'>Duplicate cluster sizes ({e(clusters['name'])})</h3>")
        out.append(
            charts.barh([f"size {k}" for k, _ in ordered], [v for _, v in ordered], "clusters by size")
        )
    prefixes = [s["name"] for s in run.stats]
    kept = rdata.kept_documents(run.root, prefixes)
    where = "after the last stage" if kept.source == "data" else f"in {kept.source}/ (the run is unfinished)"
    bound = (
        f"read {kept.parts_read:,} of {kept.parts_total:,} parts, {kept.rows_read:,} documents"
        f" (caps: {rdata.MAX_DATA_PARTS:,} parts, {rdata.MAX_DATA_ROWS:,} rows,"
        f" {rdata.MAX_DATA_TEXT_BYTES >> 20:,} MiB of text)"
    )
    out.append("<h3 id='lengths'>Document length</h3>")
    first = next((s for s in run.stats if s.get("text_chars_in")), None)
    if first is not None:
        buckets = {int(k): int(v) for k, v in first["text_chars_in"].items()}
        title = f"characters per document entering {first['name']} (before the first filter on text)"
        out.append(
            f"<div id='lengths-before' data-stage='{e(first['name'])}' "
            f"data-documents='{sum(buckets.values())}'>"
            + charts.log2_histogram(buckets, title, "characters (power-of-two buckets)")
            + "</div>"
        )
    if kept.lengths:
        title = f"characters per kept document ({where})"
        out.append(charts.histogram(kept.lengths, title, "characters", log=True))
    else:
        out.append("<p>No kept documents to measure.</p>")
    out.append(
        f"<p class='note'>Kept documents {e(where)}: {bound}. Before the first filter: every document "
        "that entered the first stage with a text column, counted by each task in power-of-two "
        "buckets (stats.json's <code>text_chars_in</code>).</p>"
    )
    if kept.scores:
        out.append("<div id='scores'><h3>Scores recorded as columns (annotate mode, language_score)</h3>")
        for col, vals in sorted(kept.scores.items()):
            out.append(charts.histogram(vals, col, "score"))
        out.append("</div>")
    out.append("<h3 id='domains'>Top domains and TLDs</h3>")
    for label, urls in (("kept", kept.urls), ("dropped", dropped_urls)):
        hosts, tlds = rdata.domain_counts(urls)
        out.append(f"<div id='domains-{label}'><h4>{label} documents ({len(urls):,} URLs)</h4>")
        if hosts:
            for kind, counts in (("domain", hosts), ("tld", tlds)):
                labels, values = _top(counts, 15)
                out.append(
                    charts.barh(labels, values, f"{label}: top {kind}s") + _counts_table(counts, kind, 15)
                )
        else:
            out.append("<p>No URLs.</p>")
        out.append("</div>")
    out.append(
        "<p class='note'>Kept: URLs of the documents read above. Dropped: URLs of the "
        "dropped-document samples "
        "on disk (each task keeps a bounded sample per reason), so they show which sites were "
        "dropped, not how many.</p>"
    )
    return section("distributions", "Distributions", "".join(out))


def pipeline_report(run_dir: str | Path) -> str:
    from pipeline import report_charts as charts

    run = rdata.load_run(run_dir)
    dropped_urls: list[str] = []
    stages = "".join(_stage(run, s, dropped_urls) for s in run.stats)
    body = [
        f"<h1>winnow run <span>{e(run.pipeline)}</span></h1>",
        _status(run),
        _summary(run),
        _funnel(run, charts),
        section("stages", "Stages", stages or "<p>No stage has finished a task yet.</p>"),
        _distributions(run, charts, dropped_urls),
        section(
            "bounds",
            "Size bounds",
            f"<p class='note'>At most {rdata.SAMPLES_PER_REASON} documents per stage and reason, "
            f"{rdata.SAMPLE_CHARS:,} characters each, from at most {rdata.MAX_REMOVED_PARTS:,} "
            f"removed part files per stage; "
            f"lengths, scores and domains from at most {rdata.MAX_DATA_PARTS:,} data parts / "
            f"{rdata.MAX_DATA_ROWS:,} rows / {rdata.MAX_DATA_TEXT_BYTES >> 20:,} MiB of text; "
            "charts show at most 25 categories.</p>",
        ),
    ]
    return PAGE.format(title=e(f"winnow report: {run.pipeline}"), body="\n".join(body))


def is_training_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "metrics.jsonl").is_file() or (p / "checkpoints").is_dir()


def write_report(run_dir: str | Path, out: str | Path) -> Path:
    """Write the report of a pipeline run or training output directory to ``out``."""
    if is_training_dir(run_dir):
        from pipeline.report_train import training_report

        page = training_report(run_dir)
    else:
        page = pipeline_report(run_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
