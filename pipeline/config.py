"""``pipelines.yaml``: parsing and validation into ``PipelineSpec`` objects.

Everything a run needs is checked here, on the driver, before Ray starts: stage names, every
parameter's name and type (each stage's pydantic ``Params`` forbids unknown keys), input formats
and that every input path matches at least one file.  Errors are collected and reported together,
one line each, naming the file, the pipeline, the stage or key and what was expected.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline import registry, storage
from pipeline.source import OPTIONAL_INPUT_KEYS, UNHASHED_INPUT_KEYS, InputParams, select_files
from pipeline.stage import Params, Stage

PIPELINE_KEYS = {
    "input": "the input section (format, paths, ...)",
    "output": "the run directory (default runs/NAME)",
    "stages": "the list of stages",
    "description": "free text",
    "removed_sample": "dropped rows kept per reason and task under removed/ (default 20)",
    "max_retries": "retries of a failed task before the run fails (default 2)",
}


class ConfigError(Exception):
    """A user error in a pipelines file.  ``str()`` is the full, printable report."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class StageSpec:
    name: str
    params: Params

    def build(self) -> Stage:
        return registry.STAGES[self.name](self.params)


@dataclass
class PipelineSpec:
    name: str
    config_file: Path
    input: Params  # the source's validated Params; has .format and .paths
    input_files: list[str]
    output: Path | str  # a str only for a URL (run directory on object storage)
    stages: list[StageSpec]
    removed_sample: int = 20
    max_retries: int = 2
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> dict[str, Any]:
        """The config with defaults filled in: what manifest.json records and the hash covers."""
        return {
            "name": self.name,
            "input": {**_input_dump(self.input), "files": self.input_files},
            "stages": [{s.name: s.params.model_dump(mode="json")} for s in self.stages],
            "removed_sample": self.removed_sample,
        }

    def config_hash(self) -> str:
        resolved = self.resolved()
        for key in UNHASHED_INPUT_KEYS:
            resolved["input"].pop(key, None)
        blob = json.dumps(resolved, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _input_dump(params: Params) -> dict[str, Any]:
    dump = params.model_dump(mode="json")
    return {k: v for k, v in dump.items() if not (k in OPTIONAL_INPUT_KEYS and v is None)}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _pydantic_problems(where: str, exc: ValidationError, model: type[Params]) -> list[str]:
    problems = []
    fields = model.model_fields
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(value)"
        if err["type"] == "extra_forbidden":
            expected = ", ".join(fields) or "no parameters"
            problems.append(
                f"{where}: unknown parameter {key!r}{_suggest(key, fields)}; expected one of: {expected}"
            )
        elif err["type"] == "missing":
            problems.append(f"{where}: missing required parameter {key!r}")
        else:
            problems.append(f"{where}: {key!r}: {err['msg']} (got {err.get('input')!r})")
    return problems


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"{path}: no such file"])
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("pipelines"), dict) or not data["pipelines"]:
        raise ConfigError([f"{path}: expected a top-level mapping 'pipelines: {{NAME: {{...}}}}'"])
    extra = set(data) - {"pipelines"}
    if extra:
        raise ConfigError([f"{path}: unknown top-level key(s) {sorted(extra)}; expected only 'pipelines'"])
    return data


def expand_paths(patterns: list[str], base: Path) -> tuple[list[str], list[str]]:
    """Resolve patterns relative to ``base``; returns (sorted files, patterns that matched nothing)."""
    files: list[str] = []
    missing = []
    for pattern in patterns:
        if storage.is_remote(pattern):  # listed now only if it is a glob; checked by --check-access
            found = storage.expand(pattern)
            if not found:
                missing.append(pattern)
            files.extend(found)
            continue
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        found = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
        if not found:
            missing.append(pattern)
        files.extend(found)
    return list(dict.fromkeys(f if storage.is_remote(f) else os.path.abspath(f) for f in files)), missing


def expand_inputs(params: InputParams, base: Path) -> tuple[list[str], list[str]]:
    """The input files of ``params`` (paths, then paths_file's lines, then the subset asked for);
    returns (files, problems).  Local files must exist; URLs are not contacted unless they are
    globs (listing) or the paths file itself (``winnow validate --check-access`` checks them)."""
    problems = [
        f"{storage.redact(u)!r}: {msg}"
        for u in [*params.paths, params.paths_file or "", params.base_url or ""]
        if (msg := storage.check_no_secret(u))
    ]
    if problems:
        return [], problems
    try:
        files, missing = expand_paths(list(params.paths), base)
    except OSError as exc:
        return [], [f"input.paths: {storage.redact(str(exc))}"]
    problems += [f"input.paths: {p!r} matches no file (relative to {base})" for p in missing]
    if params.paths_file:
        listing = params.paths_file
        if not storage.is_remote(listing) and not os.path.isabs(listing):
            listing = str((base / listing).resolve())
        try:
            lines = storage.read_lines(listing)
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            return [], [*problems, f"input.paths_file: cannot read {listing!r}: {storage.redact(str(exc))}"]
        where = os.path.dirname(listing) if not storage.is_remote(listing) else None
        for n, line in enumerate(lines, 1):
            if params.base_url:
                files.append(storage.join(params.base_url, line))
            elif storage.is_remote(line) or os.path.isabs(line):
                files.append(line)
            elif where is not None:
                files.append(os.path.join(where, line))
            else:
                problems.append(f"input.paths_file: line {n} {line!r} is relative and no base_url is set")
        local_missing = [f for f in files if not storage.is_remote(f) and not os.path.isfile(f)]
        problems += [f"input.paths_file: {f!r} not found" for f in local_missing[:10]]
        if len(local_missing) > 10:
            problems.append(f"input.paths_file: {len(local_missing) - 10} more files not found")
    if not files and not problems:
        problems.append("input: no input files")
    return select_files(list(dict.fromkeys(files)), params), problems


def _resolve_path_fields(params: Params, base: Path) -> tuple[Params, list[str]]:
    """Make the file and folder parameters a stage declares (``path_fields``, ``dir_fields``)
    absolute; report missing ones."""
    update, missing = {}, []
    fields = [(n, "file", os.path.isfile) for n in getattr(params, "path_fields", ())]
    fields += [(n, "folder", os.path.isdir) for n in getattr(params, "dir_fields", ())]
    for name, kind, exists in fields:
        value = getattr(params, name)
        if value is None:  # an optional file left unset
            continue
        paths = [value] if isinstance(value, str) else list(value)
        resolved = [str(p if os.path.isabs(p) else (base / p).resolve()) for p in paths]
        missing += [
            f"{name}: {kind} {p!r} not found (relative to {base})"
            for p, r in zip(paths, resolved)
            if not exists(r)
        ]
        update[name] = resolved[0] if isinstance(value, str) else resolved
    return (params.model_copy(update=update) if update else params), missing


def _parse_pipeline(config_file: Path, name: str, body: Any) -> PipelineSpec:
    try:
        registry.load_stages()
    except registry.PluginError as exc:
        raise ConfigError([f"{config_file}: {exc}"]) from None
    where = f"{config_file}: pipeline {name!r}"
    if not isinstance(body, dict):
        raise ConfigError([f"{where}: expected a mapping with keys {sorted(PIPELINE_KEYS)}"])
    problems: list[str] = []
    for key in body:
        if key not in PIPELINE_KEYS:
            problems.append(
                f"{where}: unknown key {key!r}{_suggest(key, PIPELINE_KEYS)}; "
                f"expected one of: {', '.join(PIPELINE_KEYS)}"
            )
    base = config_file.parent

    # input
    source_params: Params | None = None
    files: list[str] = []
    raw_input = body.get("input")
    if not isinstance(raw_input, dict):
        problems.append(f"{where}: 'input' must be a mapping with 'format' and 'paths'")
    else:
        fmt = raw_input.get("format")
        source_cls = registry.SOURCES.get(fmt)
        if source_cls is None:
            problems.append(
                f"{where} › input: unknown format {fmt!r}{_suggest(fmt, registry.SOURCES)}; "
                f"expected one of: {', '.join(registry.SOURCES)}"
            )
        else:
            try:
                source_params = source_cls.Params(**raw_input)
            except ValidationError as exc:
                problems += _pydantic_problems(f"{where} › input", exc, source_cls.Params)
            if source_params is not None and source_cls.reads_files:
                files, input_problems = expand_inputs(source_params, base)
                problems += [f"{where} › {p}" for p in input_problems]

    # stages
    specs: list[StageSpec] = []
    raw_stages = body.get("stages", [])
    if not isinstance(raw_stages, list):
        problems.append(f"{where}: 'stages' must be a list of '- stage_name: {{params}}' items")
        raw_stages = []
    for i, item in enumerate(raw_stages, 1):
        if isinstance(item, str):  # `- extract` is accepted as `- extract: {}`
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            problems.append(f"{where} › stage {i}: expected '- stage_name: {{params}}', got {item!r}")
            continue
        stage_name, params = next(iter(item.items()))
        stage_cls = registry.STAGES.get(stage_name)
        if stage_cls is None:
            problems.append(
                f"{where} › stage {i} {stage_name!r}: unknown stage{_suggest(stage_name, registry.STAGES)}; "
                f"available: {', '.join(sorted(registry.STAGES))}"
            )
            continue
        if params is None:
            params = {}
        if not isinstance(params, dict):
            problems.append(
                f"{where} › stage {i} {stage_name!r}: parameters must be a mapping, got {params!r}"
            )
            continue
        try:
            stage_params = stage_cls.Params(**params)
        except ValidationError as exc:
            problems += _pydantic_problems(f"{where} › stage {i} {stage_name!r}", exc, stage_cls.Params)
            continue
        stage_params, missing_files = _resolve_path_fields(stage_params, base)
        problems += [f"{where} › stage {i} {stage_name!r}: {m}" for m in missing_files]
        specs.append(StageSpec(stage_name, stage_params))

    # checks that need the stages before a stage (e.g. tokenize needs a tokenizer from somewhere)
    for i, spec in enumerate(specs):
        before = [s.name for s in specs[:i]]
        for problem in registry.STAGES[spec.name].check_pipeline(spec.params, before):
            problems.append(f"{where} › stage {i + 1} {spec.name!r}: {problem}")

    names = [s.name for s in specs]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: stage {dup!r} appears twice; stage names label stats and removed/ folders")

    for key, lo in (("removed_sample", 0), ("max_retries", 0)):
        value = body.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            problems.append(f"{where}: {key!r} must be an integer >= {lo}, got {value!r}")

    if problems:
        raise ConfigError(problems)
    output = body.get("output") or f"runs/{name}"
    if storage.is_remote(output) and (msg := storage.check_no_secret(output)):
        raise ConfigError([f"{where} › output: {msg}"])
    return PipelineSpec(
        name=name,
        config_file=config_file,
        input=source_params,
        input_files=files,
        output=output if storage.is_remote(output) else (base / output).resolve(),
        stages=specs,
        removed_sample=body.get("removed_sample", 20),
        max_retries=body.get("max_retries", 2),
        description=str(body.get("description", "")),
        raw=body,
    )


def load_pipelines(config_file: str | Path, names: list[str] | None = None) -> list[PipelineSpec]:
    """Parse and validate the named pipelines (all of them by default)."""
    config_file = Path(config_file)
    data = load_yaml(config_file)
    pipelines = data["pipelines"]
    if names:
        unknown = [n for n in names if n not in pipelines]
        if unknown:
            raise ConfigError(
                [
                    f"{config_file}: no pipeline {n!r}{_suggest(n, pipelines)}; "
                    f"defined: {', '.join(pipelines)}"
                    for n in unknown
                ]
            )
    problems: list[str] = []
    specs = []
    for name in names or list(pipelines):
        try:
            specs.append(_parse_pipeline(config_file, name, pipelines[name]))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return specs
