"""Checkpoint folders: atomic save, ``latest`` pointer, pruning, resolution, loading."""

from __future__ import annotations

import json

import pytest
import torch

from train.checkpoint import list_checkpoints, resolve_checkpoint, save_checkpoint, unwrap_model


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))


def _save(out, step, model=None, **kw):
    kw.setdefault("tokenizer_dir", None)
    kw.setdefault("meta", {"model": {"n": 1}, "tokens": step * 10})
    kw.setdefault("trainer_state", {"step": step, "rng": torch.get_rng_state()})
    return save_checkpoint(out, step, model or _tiny(step), **kw)


def test_save_layout_and_roundtrip(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    model = _tiny()
    d = _save(tmp_path / "out", 7, model, tokenizer_dir=tok)
    assert d == tmp_path / "out" / "checkpoints" / "step-00000007"
    assert (tmp_path / "out" / "checkpoints" / "latest").read_text().strip() == "step-00000007"
    assert (d / "tokenizer" / "tokenizer.json").read_text() == "{}"
    meta = json.loads((d / "config.json").read_text())
    assert meta["step"] == 7 and meta["tokens"] == 70 and meta["model"] == {"n": 1}
    sd = torch.load(d / "model.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v)
    trainer = torch.load(d / "trainer.pt", weights_only=True)
    assert trainer["step"] == 7
    assert not list((tmp_path / "out" / "checkpoints").glob(".*tmp*"))


def test_wrapped_model_saves_bare_keys_in_fp32(tmp_path):
    model = _tiny().to(torch.bfloat16)
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = model  # what torch.compile's OptimizedModule exposes
    assert unwrap_model(compiled_like) is model
    d = _save(tmp_path, 1, compiled_like)
    sd = torch.load(d / "model.pt", weights_only=True)
    assert set(sd) == set(model.state_dict())
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_keep_last_prunes_oldest(tmp_path):
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, keep_last=2)
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step-00000030", "step-00000040"]
    for step in (50, 60):
        _save(tmp_path, step, keep_last=0)  # 0 keeps everything
    assert len(list_checkpoints(tmp_path / "checkpoints")) == 4


def test_half_written_temp_folder_is_ignored_and_cleaned(tmp_path):
    good = _save(tmp_path, 5)
    root = tmp_path / "checkpoints"
    # a crash mid-save of step 6: temp folder with a model but no config, and a step folder
    # without model.pt (e.g. copied by hand); neither may be picked
    half = root / ".step-00000006.tmp-x1y2z3"
    half.mkdir()
    (half / "model.pt").write_bytes(b"partial")
    broken = root / "step-00000009"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert resolve_checkpoint(tmp_path) == good
    (root / "latest").unlink()  # crash between rename and pointer update: newest complete folder
    assert resolve_checkpoint(tmp_path) == good
    (root / "latest").write_text("step-00000001\n")  # pointer to a pruned folder
    assert resolve_checkpoint(root) == good
    _save(tmp_path, 7)
    assert not half.exists()


def test_resave_same_step_replaces(tmp_path):
    _save(tmp_path, 3, _tiny(0))
    d = _save(tmp_path, 3, _tiny(1))
    assert torch.equal(torch.load(d / "model.pt", weights_only=True)["0.weight"], _tiny(1)[0].weight)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_resolve_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_load_checkpoint_and_model(tmp_path):
    from train_fixtures import make_tokenizer, sentences

    from train.checkpoint import load_checkpoint, load_model
    from train.model import GPT, GPTConfig

    tok_dir = make_tokenizer(tmp_path / "tok", sentences(20), vocab_size=280)
    config = GPTConfig.from_depth(1, 280, 16, n_embd=64, n_kv_head=1)
    model = GPT(config)
    _save(tmp_path / "out", 4, model, tokenizer_dir=tok_dir, meta={"tokens": 1}, trainer_state=None)
    ckpt = load_checkpoint(tmp_path / "out")
    assert ckpt["config"] == config and ckpt["trainer_state"] is None and ckpt["meta"]["tokens"] == 1
    assert ckpt["dir"].name == "step-00000004"
    loaded, tok = load_model(ckpt["dir"])
    assert not loaded.training and tok.vocab_size == 280
    assert_equal = [
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values())
    ]
    assert all(assert_equal) and len(assert_equal) == len(model.state_dict())
