"""pipelines.yaml validation: every user error is caught before Ray starts, named, exit code 2."""

from __future__ import annotations

import pytest
from helpers import SAMPLE, winnow, write_config

from pipeline.config import ConfigError, load_pipelines


def _cfg(tmp_path, stages=None, input_=None, **extra):
    body = {
        "input": input_ or {"format": "warc", "paths": [str(SAMPLE)]},
        "stages": stages if stages is not None else [{"url_filter": {}}, {"extract": {}}],
        **extra,
    }
    return write_config(tmp_path / "pipelines.yaml", {"p1": body})


def _problems(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_pipelines(path)
    return str(err.value)


def test_valid_config_resolves_defaults_and_paths(tmp_path):
    (spec,) = load_pipelines(_cfg(tmp_path, output="out/x"))
    assert spec.input_files == [str(SAMPLE)]
    assert spec.output == (tmp_path / "out" / "x").resolve()
    assert [s.name for s in spec.stages] == ["url_filter", "extract"]
    assert spec.stages[1].params.engine == "trafilatura"
    # the default output is runs/NAME next to the config file
    (spec,) = load_pipelines(_cfg(tmp_path))
    assert spec.output == (tmp_path / "runs" / "p1").resolve()


def test_misspelled_stage_is_named_with_a_suggestion(tmp_path):
    msg = _problems(_cfg(tmp_path, stages=[{"url_filter": {}}, {"extrct": {}}]))
    assert "pipeline 'p1'" in msg and "stage 2 'extrct'" in msg
    assert "unknown stage" in msg and "did you mean 'extract'" in msg


def test_unknown_parameter_lists_expected_keys(tmp_path):
    msg = _problems(_cfg(tmp_path, stages=[{"extract": {"timout": 3}}]))
    assert "stage 1 'extract'" in msg and "'timout'" in msg
    assert "did you mean 'timeout'" in msg and "engine" in msg


def test_wrong_type_and_bad_choice(tmp_path):
    msg = _problems(_cfg(tmp_path, stages=[{"extract": {"timeout": "soon", "engine": "lynx"}}]))
    assert "'timeout'" in msg and "'soon'" in msg
    assert "'engine'" in msg and "'lynx'" in msg


def test_missing_input_file_and_unknown_format(tmp_path):
    msg = _problems(_cfg(tmp_path, input_={"format": "warc", "paths": ["nope/*.warc.gz"]}))
    assert "'nope/*.warc.gz' matches no file" in msg
    msg = _problems(_cfg(tmp_path, input_={"format": "warcz", "paths": [str(SAMPLE)]}))
    assert "unknown format 'warcz'" in msg and "did you mean 'warc'" in msg


def test_unknown_pipeline_key_duplicate_key_and_duplicate_stage(tmp_path):
    msg = _problems(_cfg(tmp_path, stagez=[]))
    assert "unknown key 'stagez'" in msg and "did you mean 'stages'" in msg
    msg = _problems(_cfg(tmp_path, stages=[{"extract": {}}, {"extract": {}}]))
    assert "'extract' appears twice" in msg
    path = tmp_path / "dup.yaml"
    path.write_text("pipelines:\n  a:\n    input: {format: warc, paths: [x]}\n  a:\n    stages: []\n")
    assert "duplicate key 'a'" in _problems(path)


def test_all_problems_reported_together(tmp_path):
    msg = _problems(_cfg(tmp_path, stages=[{"extrct": {}}, {"url_filter": {"nope": 1}}], stagez=1))
    assert len(msg.splitlines()) == 3


def test_missing_user_list_file_is_an_error(tmp_path):
    msg = _problems(_cfg(tmp_path, stages=[{"url_filter": {"block_domains_files": ["lists/none.txt"]}}]))
    assert "block_domains_files" in msg and "lists/none.txt" in msg


def test_cli_validate_and_run_exit_code_2(tmp_path):
    good = _cfg(tmp_path)
    res = winnow("validate", "-c", str(good))
    assert res.returncode == 0, res.stderr
    assert "ok: p1" in res.stdout
    bad = write_config(
        tmp_path / "bad.yaml",
        {"p1": {"input": {"format": "warc", "paths": [str(SAMPLE)]}, "stages": [{"extrct": {}}]}},
    )
    res = winnow("validate", "p1", "-c", str(bad))
    assert res.returncode == 2
    assert str(bad) in res.stderr and "extrct" in res.stderr
    # `run` refuses the same config before starting Ray (no Ray = returns fast, no run dir)
    res = winnow("run", "p1", "-c", str(bad), "--output", str(tmp_path / "out"))
    assert res.returncode == 2 and not (tmp_path / "out").exists()
