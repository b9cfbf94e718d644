"""The ``winnow`` command line (``winnow --help``).  Exit codes: 0 ok, 1 run failed, 2 bad config/usage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CONFIG = "pipelines.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="winnow", description="Declared data-curation pipelines on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check pipelines.yaml without running anything")
    v.add_argument("name", nargs="?", help="pipeline to check (default: all)")
    v.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="pipelines file (default ./pipelines.yaml)")
    v.add_argument(
        "--check-access",
        action="store_true",
        help="also check that every input can be read and the output written (contacts the stores)",
    )

    r = sub.add_parser("run", help="run (or resume) a declared pipeline")
    r.add_argument("name", help="pipeline name in the config file")
    r.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="pipelines file (default ./pipelines.yaml)")
    r.add_argument("--output", help="run directory (default: the pipeline's 'output')")
    r.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--fresh", action="store_true", help="discard an earlier run in the output dir")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument(
        "--force-unlock",
        action="store_true",
        help="take over the run directory's lock even though its holder (a driver on another host) "
        "cannot be checked: only when you know that run is no longer running",
    )

    st = sub.add_parser(
        "stages", help="the registered stages and input formats, their parameters and defining files"
    )
    st.add_argument("name", nargs="?", help="one stage or input format (default: all)")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("stats", help="per-stage table of a run directory")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true", help="print stats.json as it is")

    rep = sub.add_parser(
        "report", help="self-contained HTML report of a pipeline run or a training output directory"
    )
    rep.add_argument("run_dir")
    rep.add_argument("-o", "--output", default=None, help="HTML file (default RUN_DIR/report.html)")

    c = sub.add_parser(
        "crawl", help="only the crawl of a pipeline whose input is 'format: crawl' (writes OUTPUT/warc/)"
    )
    c.add_argument("name", help="pipeline name in the config file")
    c.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="pipelines file (default ./pipelines.yaml)")
    c.add_argument("--output", help="run directory (default: the pipeline's 'output')")
    c.add_argument("--fresh", action="store_true", help="discard an earlier crawl in the output dir")
    c.add_argument(
        "--address", help="Ray cluster address for 'workers' > 1 (default: $RAY_ADDRESS, else a local Ray)"
    )

    # Subcommands owned by packages above the engine (tokenizer, train), found through the
    # ``winnow.commands`` entry-point group so that the engine never imports them.  Their
    # ``register(sub)`` functions only build argparse parsers (no torch import), so ``winnow
    # validate`` stays well under a second; each sets ``handler`` to a function that imports what
    # it needs when it runs.
    from pipeline.registry import entry_points

    for ep in entry_points("winnow.commands"):
        ep.load()(sub)
    return p


def _config_error(exc: Exception) -> int:
    print("winnow: configuration error", file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"  {line}", file=sys.stderr)
    return 2


def cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, load_pipelines

    try:
        specs = load_pipelines(args.config, [args.name] if args.name else None)
    except ConfigError as exc:
        return _config_error(exc)
    for spec in specs:
        stages = " -> ".join(["read"] + [s.name for s in spec.stages])
        print(f"ok: {spec.name}: {len(spec.input_files)} input file(s), {stages}")
    if args.check_access:
        from pipeline.storage import check_access

        problems = [p for spec in specs for p in check_access(spec.name, spec.input_files, str(spec.output))]
        for problem in problems:
            print(f"winnow: {problem}", file=sys.stderr)
        if problems:
            return 2
        print("ok: inputs readable, outputs writable")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, load_pipelines

    try:
        (spec,) = load_pipelines(args.config, [args.name])
    except ConfigError as exc:
        return _config_error(exc)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.executor import RunFailed, run_pipeline

    console = Console(stderr=True)
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks · {task.fields[docs]:,} docs out"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, disable=args.no_progress) as bar:
        bars: dict[str, int] = {}

        def progress(label: str, done: int, total: int, docs: int) -> None:
            if label not in bars:
                bars[label] = bar.add_task(f"{spec.name} {label}", total=total, docs=0)
            bar.update(bars[label], completed=done, docs=docs)

        failure: RunFailed | None = None
        try:
            run_pipeline(
                spec,
                output=args.output,
                address=args.address,
                fresh=args.fresh,
                num_cpus=args.num_cpus,
                progress=progress,
                on_done=lambda result: report(bar, result),
                force_unlock=args.force_unlock,
            )
        except RunFailed as exc:
            failure = exc
    if failure is not None:  # printed after the progress bar is gone, unwrapped (it names paths)
        print(f"winnow: run failed: {failure}", file=sys.stderr)
        return 1
    return 0


def report(bar, result) -> None:
    """Shown as soon as the run's files are written (before a local Ray shuts down)."""
    from pipeline.stats import print_stats

    bar.stop()
    if result.tasks_skipped:
        print(
            f"resumed: {result.tasks_skipped} finished task(s) skipped, {result.tasks_run} run",
            file=sys.stderr,
        )
    print_stats(result.stats)
    print(f"output: {result.run_dir.location}", flush=True)


def cmd_crawl(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, load_pipelines

    try:
        (spec,) = load_pipelines(args.config, [args.name])
    except ConfigError as exc:
        return _config_error(exc)
    if spec.input.format != "crawl":
        print(
            f"winnow: pipeline {spec.name!r} reads {spec.input.format!r} files: nothing to crawl",
            file=sys.stderr,
        )
        return 2
    from pipeline.executor import RunFailed, prepare_input
    from pipeline.stats import print_stats

    try:
        stats = prepare_input(spec, output=args.output, fresh=args.fresh, address=args.address)
    except RunFailed as exc:
        print(f"winnow: crawl failed: {exc}", file=sys.stderr)
        return 1
    print_stats(stats)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from pipeline.report_data import load_run, local_copy
    from pipeline.stats import print_stats

    try:
        run = load_run(local_copy(args.run_dir))
    except FileNotFoundError as exc:
        print(f"winnow: {exc}", file=sys.stderr)
        return 2
    if not run.complete:  # on stderr, so that --json stays parseable
        print(f"winnow: {run.root} is an incomplete run: stats of the finished tasks only", file=sys.stderr)
    if args.json:
        print(json.dumps(run.stats, indent=2, ensure_ascii=False))
    else:
        title = None if run.complete else "winnow stats (INCOMPLETE run; time: summed over tasks)"
        print_stats(run.stats, title=title)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline import storage
    from pipeline.report import write_report
    from pipeline.report_data import local_copy

    try:
        # a run on object storage is read from a local copy; its report goes to ./report.html
        remote = storage.is_remote(args.run_dir)
        default = Path("report.html") if remote else Path(args.run_dir) / "report.html"
        out = write_report(local_copy(args.run_dir), args.output or default)
    except (FileNotFoundError, NotADirectoryError) as exc:
        print(f"winnow: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from pipeline.catalog import catalog, print_catalog
    from pipeline.registry import PluginError

    try:
        entries = catalog()
    except PluginError as exc:
        print(f"winnow: {exc}", file=sys.stderr)
        return 2
    if args.name:
        entries = [e for e in entries if e["name"] == args.name]
        if not entries:
            import difflib

            names = [e["name"] for e in catalog()]
            close = difflib.get_close_matches(args.name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            print(f"winnow: no stage or input format {args.name!r}{hint}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
    else:
        print_catalog(entries, detailed=bool(args.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    builtin = {
        "validate": cmd_validate,
        "run": cmd_run,
        "stats": cmd_stats,
        "report": cmd_report,
        "stages": cmd_stages,
        "crawl": cmd_crawl,
    }
    handler = builtin.get(args.command) or args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
