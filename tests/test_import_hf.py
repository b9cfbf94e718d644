"""winnow import hf: a Hugging Face Llama folder becomes a winnow checkpoint, exactly.

Two sources: random ``LlamaForCausalLM``s built here with transformers and a byte-level BPE tokenizer
trained here with HF ``tokenizers`` (their own special tokens, ids where HF puts them), and winnow's
own export (import after export is the identity).
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import winnow  # noqa: E402
from tinygpt import save_gpt_checkpoint, tiny_gpt, trained_tokenizer_dir  # noqa: E402
from train_fixtures import sentences  # noqa: E402

from tokenizer import Tokenizer  # noqa: E402
from train.checkpoint import load_checkpoint, load_model  # noqa: E402
from train.export import export_hf  # noqa: E402
from train.generate import GenerationConfig, generate_ids  # noqa: E402
from train.import_hf import (  # noqa: E402
    UnsupportedModel,
    add_chat_tokens,
    convert_tokenizer,
    gpt_config,
    import_hf,
)

TEXTS = [
    "The river runs under the old stone bridge.",
    "  leading spaces\n\n\ttabs and   runs of   spaces  \n",
    "digits 1234567890 3.14 ١٢٣ 一二三 and 42",
    "naïve café — 你好，世界 — Привет 👩‍👩‍👧 🇩🇪",
    "I'm sure they'll say it's fine",
    "\r\n\u00a0\u3000 \u2028 end",
]
PROMPTS = ["The river", "A small house", "cold wind over the field", "and"]

# name: (special tokens as trained, eos, bos, pad, tie, kv heads, rope_theta, model vocab padding)
VARIANTS = {
    "llama-untied-gqa": (["<s>", "<pad>", "</s>", "<unk>"], "</s>", "<s>", "<pad>", False, 2, 5000.0, 0),
    "gpt2-tied": (["<|endoftext|>"], "<|endoftext|>", "<|endoftext|>", None, True, 1, 20000.0, 37),
}


def train_hf_tokenizer(specials: list[str]):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    texts = sentences(300) + TEXTS  # the unicode lines give multi-byte merges too
    tok.train_from_iterator(texts, vocab_size=420, special_tokens=specials, show_progress=False)
    return tok._tokenizer


def build_hf_folder(root, name: str):
    specials, eos, bos, pad, tie, kv, theta, extra = VARIANTS[name]
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_hf_tokenizer(specials), bos_token=bos, eos_token=eos, pad_token=pad
    )
    config = transformers.LlamaConfig(
        vocab_size=len(fast) + extra,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv,
        rope_theta=theta,
        max_position_embeddings=96,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        bos_token_id=fast.convert_tokens_to_ids(bos),
        eos_token_id=fast.convert_tokens_to_ids(eos),
        pad_token_id=fast.convert_tokens_to_ids(pad) if pad else None,
    )
    torch.manual_seed(3)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper than init, so greedy decoding has no near-ties
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6)
    out = root / "hf"
    # the untied model is written as shards + model.safetensors.index.json
    model.save_pretrained(out, max_shard_size="60KB" if not tie else "10GB")
    fast.save_pretrained(out)
    return out, model, fast


@pytest.fixture(scope="module", params=list(VARIANTS))
def hf_source(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    folder, model, fast = build_hf_folder(root, request.param)
    step = import_hf(folder, root / "imported")
    return request.param, folder, model, fast, step


def test_checkpoint_meta_and_config(hf_source):
    name, folder, hf, _, step = hf_source
    from tokenizer.encoding import file_sha256

    assert step.name == "step-00000000" and (step.parent / "latest").read_text().strip() == step.name
    ckpt = load_checkpoint(step.parent.parent)
    meta, c = ckpt["meta"], ckpt["config"]
    assert meta["kind"] == "imported" and meta["step"] == 0
    assert meta["source"]["path"] == str(folder.resolve())
    assert meta["source"]["config_sha256"] == file_sha256(folder / "config.json")
    hc = hf.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.mlp_hidden) == (
        2,
        64,
        4,
        hc.num_key_value_heads,
        96,
    )
    assert (c.vocab_size, c.block_size, c.norm_eps) == (hc.vocab_size, 96, 1e-5)
    assert c.rope_theta == VARIANTS[name][6] and c.tie_embeddings == VARIANTS[name][4]
    if not c.tie_embeddings:
        assert (folder / "model.safetensors.index.json").is_file()  # the sharded path was exercised


def test_tokenizer_ids_equal_hf(hf_source):
    name, _, hf, fast, step = hf_source
    _, tok = load_model(step)
    assert tok.imported
    specials, eos, bos, pad = VARIANTS[name][:4]
    assert tok.special_tokens == {s: fast.convert_tokens_to_ids(s) for s in specials}
    assert tok.eot_id == hf.config.eos_token_id == fast.eos_token_id
    assert tok.bos_id == fast.convert_tokens_to_ids(bos)
    assert tok.pad_id == (fast.pad_token_id if pad else tok.eot_id)
    texts = TEXTS + [f"a{s}b {s}\n" for s in specials] + [" ".join(specials) + " x" * 5, " " * 40, "9" * 17]
    for text in texts:
        want = fast(text, add_special_tokens=False).input_ids
        assert tok.encode(text, allowed_special="all") == want, text
        assert tok.decode(want) == fast.decode(want)
    # special-token text is plain text unless allowed (documents cannot inject the separator)
    assert tok.eot_id not in tok.encode(f"x {eos} y")
    # a prompt starts with the model's own bos (<s>), as HF's tokenizer would put it, not its eos
    from train.generate import encode_prompts

    (ids,) = encode_prompts(tok, ["hello"])
    assert ids[0] == (tok.bos_id if tok.bos_id is not None else tok.eot_id)
    if fast.bos_token_id is not None:
        assert ids[0] == fast.bos_token_id
    if bos != eos:  # the <s> ... </s> variant: the start is <s>, never the end token
        assert ids[0] != tok.eot_id


def test_greedy_decoding_matches_transformers(hf_source):
    _, _, hf, fast, step = hf_source
    model, tok = load_model(step)
    cfg = GenerationConfig(max_new_tokens=20)
    for prompt in PROMPTS:
        ids = [fast.bos_token_id, *fast(prompt, add_special_tokens=False).input_ids]
        with torch.no_grad():
            ours_logits = model(torch.tensor([ids]))
            theirs_logits = hf(torch.tensor([ids])).logits
            x = torch.tensor([ids])
            row = hf.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=20,
                do_sample=False,
                eos_token_id=tok.eot_id,
                pad_token_id=tok.pad_id,
            )[0, len(ids) :].tolist()
        assert (ours_logits - theirs_logits).abs().max().item() < 1e-4
        new = row[: row.index(tok.eot_id)] if tok.eot_id in row else row
        assert len(set(new)) > 1, "a degenerate model proves little"
        assert generate_ids(model, [ids], cfg, eos_id=tok.eot_id, pad_id=tok.pad_id)[0] == new


def test_imported_checkpoint_exports_and_transformers_agrees(hf_source, tmp_path):
    _, source, hf, fast, step = hf_source
    out = export_hf(step, tmp_path / "hf")
    before, after = (json.loads((d / "config.json").read_text()) for d in (source, out))
    for key in ("bos_token_id", "eos_token_id", "vocab_size", "tie_word_embeddings"):
        assert after[key] == before[key], key
    assert after["rope_theta"] == before["rope_parameters"]["rope_theta"]
    # no pad token in the source: the eos pads (positions the attention mask hides)
    pad = before.get("pad_token_id")
    assert after["pad_token_id"] == (before["eos_token_id"] if pad is None else pad)
    exported = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert (exported.bos_token, exported.eos_token) == (fast.bos_token, fast.eos_token)
    for text in TEXTS:
        ids = fast(text, add_special_tokens=False).input_ids
        assert exported(text, add_special_tokens=False).input_ids == ids
    again = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    idx = torch.randint(0, hf.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(again(idx).logits, hf(idx).logits)


def test_add_chat_tokens_keeps_old_logits(hf_source, tmp_path):
    name, _, _, _, step = hf_source
    model, tok = load_model(step)
    with pytest.raises(ValueError, match="belongs to a checkpoint"):
        add_chat_tokens(model, tok)
    own = shutil.copytree(tok.path, tmp_path / "tokenizer")
    tok = Tokenizer.from_dir(own)
    V, T = model.config.vocab_size, tok.vocab_size  # gpt2-tied has padding rows past the tokenizer
    idx = torch.tensor([tok.encode("The river runs under the old stone bridge. And the wind")])
    with torch.no_grad():
        before = model(idx)
    old_emb = model.embed_tokens.weight.detach().clone()
    added = add_chat_tokens(model, tok)
    expected = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"] + (
        [] if VARIANTS[name][3] else ["<|pad|>"]
    )
    assert added == expected
    new_ids = list(range(T, T + len(added)))
    assert [tok.special_tokens[t] for t in added] == new_ids and tok.vocab_size == T + len(added)
    assert model.config.vocab_size == max(V, T + len(added))
    with torch.no_grad():
        after = model(idx)
    assert after.shape[-1] == model.config.vocab_size
    kept = [i for i in range(V) if i not in new_ids]
    assert torch.equal(after[..., kept], before[..., kept])
    torch.testing.assert_close(model.embed_tokens.weight[new_ids], old_emb[:T].mean(0).expand(len(added), -1))
    assert (model.lm_head.weight is model.embed_tokens.weight) == model.config.tie_embeddings
    if "<|pad|>" in added:
        assert tok.pad_id == tok.special_tokens["<|pad|>"]
    # the folder reloads, HF reads the new added tokens with the same ids, nothing is added twice
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(own / "tokenizer.json"))
    text = "<|user|>hi<|end|><|assistant|>"
    assert Tokenizer.from_dir(own).encode(text, allowed_special="all") == hf.encode(text).ids
    assert add_chat_tokens(model, own) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "only LlamaForCausalLM"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_type 'llama3'"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type 'yarn'"),
        ({"sliding_window": 4096}, "sliding_window"),
        ({"head_dim": 32}, "head_dim 32"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ],
)
def test_unsupported_configs_are_named(change, message):
    base = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4},
    }
    assert gpt_config(base).head_dim == 16
    with pytest.raises(UnsupportedModel, match=message.replace("(", r"\(")):
        gpt_config({**base, **change})


def test_tie_mismatches_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _, _ = build_hf_folder(tmp_path, "gpt2-tied")
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(folder / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"] + 1  # a distinct head
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(UnsupportedModel, match=r"tie_word_embeddings is true but lm_head\.weight differs"):
        import_hf(folder, tmp_path / "a")
    del weights["lm_head.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(UnsupportedModel, match="tie_word_embeddings is false but there is no lm_head"):
        import_hf(folder, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unrepresentable_tokenizers_are_named():
    data = json.loads(train_hf_tokenizer(["<|endoftext|>"]).to_str())
    convert_tokenizer(data)  # the unmodified one converts

    def bad(edit, message):
        d = copy.deepcopy(data)
        edit(d)
        with pytest.raises(UnsupportedModel, match=message):
            convert_tokenizer(d)

    bad(lambda d: d["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space")
    bad(
        lambda d: d.update(pre_tokenizer={"type": "Whitespace"}),
        "pre_tokenizer .*Whitespace.* not representable",
    )
    bad(lambda d: d.update(normalizer={"type": "NFKC"}), "normalizer 'NFKC'")
    bad(lambda d: d["model"].update(type="Unigram"), "model type 'Unigram'")
    bad(lambda d: d["added_tokens"][0].update(lstrip=True), "sets lstrip")
    bad(lambda d: d["model"]["merges"].reverse(), "merge order must follow the ids")
    bad(lambda d: d["model"]["vocab"].pop("Ā"), "lacks 1 of the 256 byte tokens")


# --------------------------------------------------------------------------------------------------
# import after export is the identity


@pytest.fixture(scope="module")
def winnow_tokenizer_dir(tmp_path_factory):
    return trained_tokenizer_dir(tmp_path_factory.mktemp("wtok") / "tokenizer")


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "n_kv_head": 2, "rope_theta": 500.0}])
def test_import_after_export_is_the_identity(overrides, tmp_path, winnow_tokenizer_dir):
    from safetensors.torch import load_file

    original = Tokenizer.from_dir(winnow_tokenizer_dir)
    model = tiny_gpt(original.vocab_size, seed=2, **overrides)
    save_gpt_checkpoint(model, tmp_path / "run", winnow_tokenizer_dir)
    first = export_hf(tmp_path / "run", tmp_path / "hf1")
    step = import_hf(first, tmp_path / "imported")
    back, tok = load_model(step)
    assert back.config == model.config
    idx = torch.randint(
        0, model.config.vocab_size, (2, model.config.block_size), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert (back(idx) - model(idx)).abs().max().item() == 0.0
    assert (tok.special_tokens, tok.eot_id, tok.pad_id, tok.bos_id, tok.pattern) == (
        original.special_tokens,
        original.eot_id,
        original.pad_id,
        original.bos_id,
        original.pattern,
    )
    assert tok.encoding._mergeable_ranks == original.encoding._mergeable_ranks
    for text in [*TEXTS, "<|endoftext|> <|user|>hi<|end|>"]:
        assert tok.encode(text, allowed_special="all") == original.encode(text, allowed_special="all")
        assert tok.encode(text) == original.encode(text)
    second = export_hf(step, tmp_path / "hf2")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (first / name).read_text() == (second / name).read_text(), name


def test_cli_import_then_generate(tmp_path, capsys):
    from pipeline.cli import main

    folder, _, _ = build_hf_folder(tmp_path, "gpt2-tied")
    r = winnow("import", "hf", "--model", str(folder), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "step-00000000" in r.stdout and "lacks (SFT adds them)" in r.stdout
    assert main(["import", "hf", "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["import", "hf", "--model", str(folder), "--out", str(tmp_path / "out"), "--force"]) == 0
    capsys.readouterr()
    argv = [
        "generate",
        "--checkpoint",
        str(tmp_path / "out"),
        "--prompt",
        "The river",
        "--max-new-tokens",
        "5",
    ]
    assert main([*argv, "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["token_ids"]
    (folder / "config.json").write_text(
        json.dumps({**json.loads((folder / "config.json").read_text()), "mlp_bias": True})
    )
    assert main(["import", "hf", "--model", str(folder), "--out", str(tmp_path / "x")]) == 2
    assert "mlp_bias=true" in capsys.readouterr().err
