"""winnow export hf: transformers loads the folder offline and agrees with winnow's model."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tinygpt import save_gpt_checkpoint, tiny_gpt, trained_tokenizer_dir  # noqa: E402

from tokenizer.chat import render_conversation, render_for_completion, stop_ids  # noqa: E402
from train.export import ESCAPED, export_hf  # noqa: E402
from train.generate import GenerationConfig, end_ids, generate, generate_ids  # noqa: E402

TEXTS = ["the quick brown fox", "data curation keeps good text and drops spam", "a"]

CONVERSATIONS = [
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "the quick brown fox?"},
        {"role": "assistant", "content": "jumps over the lazy dog"},
    ],
    [  # multi-turn
        {"role": "user", "content": "data curation"},
        {"role": "assistant", "content": "keeps good text"},
        {"role": "user", "content": "and spam?"},
        {"role": "assistant", "content": " drops it.\n\n"},
    ],
    [  # special-token text in content is plain text, never a control token
        {"role": "system", "content": "x<|end|><|assistant|>y"},
        {"role": "user", "content": "<|user|>a <|endoftext|> b<|"},
        {"role": "assistant", "content": "<|end|>"},
    ],
    [  # unicode
        {"role": "user", "content": "héllo wörld 😀 日本語 \u00a0 ﬁ"},
        {"role": "assistant", "content": "ça va ✓"},
    ],
    [{"role": "user", "content": "say nothing"}, {"role": "assistant", "content": ""}],  # empty reply
    [{"role": "user", "content": "<"}, {"role": "assistant", "content": "|"}],  # "<" + "|" across turns
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return trained_tokenizer_dir(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from tokenizer import Tokenizer

    return Tokenizer.from_dir(tokenizer_dir)


@pytest.fixture(scope="module", params=["tied-mha", "untied-gqa"])
def exported(request, tmp_path_factory, tokenizer_dir, tokenizer):
    overrides = {"tied-mha": {}, "untied-gqa": {"tie_embeddings": False, "n_kv_head": 2}}[request.param]
    model = tiny_gpt(tokenizer.vocab_size, seed=1, **overrides)
    with torch.no_grad():  # larger weights than init: a sharper model makes the comparison meaningful
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4)
    root = tmp_path_factory.mktemp(request.param)
    save_gpt_checkpoint(model, root / "run", tokenizer_dir)
    out = export_hf(root / "run", root / "hf")
    return model, out


def test_folder_layout_and_config(exported, tokenizer):
    from safetensors.torch import load_file

    model, out = exported
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {"special_tokens_map.json", "generation_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    c = model.config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (
        c.n_layer,
        c.n_embd,
        c.mlp_hidden,
    )
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (c.n_head, c.n_kv_head)
    assert config["tie_word_embeddings"] == c.tie_embeddings
    assert (config["rope_theta"], config["rms_norm_eps"]) == (c.rope_theta, c.norm_eps)
    assert (config["bos_token_id"], config["eos_token_id"]) == (tokenizer.eot_id, tokenizer.eot_id)
    weights = load_file(out / "model.safetensors")
    assert ("lm_head.weight" in weights) == (not c.tie_embeddings)
    assert len(weights) == len(model.state_dict()) - c.tie_embeddings
    torch.testing.assert_close(
        weights["model.layers.1.mlp.down_proj.weight"], model.layers[1].mlp.down_proj.weight
    )


def test_transformers_logits_match(exported):
    model, out = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    torch.manual_seed(0)
    idx = torch.randint(0, model.config.vocab_size, (3, model.config.block_size))
    with torch.no_grad():
        ours = model(idx)
        theirs = hf(idx).logits
    assert ours.abs().max() > 1.0  # not a degenerate model
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_transformers_tokenizer_and_greedy_generation_match(exported, tokenizer):
    model, out = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    # no BOS is added (the chat template writes it); a plain prompt gets it as text, as winnow generate
    bos_texts = [hf_tok.bos_token + text for text in TEXTS]
    for text, bos_text in zip(TEXTS, bos_texts, strict=True):
        assert hf_tok(text).input_ids == tokenizer.encode(text)
        assert hf_tok(bos_text).input_ids == [tokenizer.eot_id, *tokenizer.encode(text)]
    # the same greedy tokens, one prompt at a time and as a left-padded batch
    ours = generate(model, tokenizer, TEXTS, GenerationConfig(max_new_tokens=24))
    batch = hf_tok(bos_texts, return_tensors="pt", padding=True)
    assert hf_tok.padding_side == "left" and (batch.input_ids[:, 0] == tokenizer.pad_id).any()
    with torch.no_grad():
        theirs = hf.generate(**batch, max_new_tokens=24, do_sample=False)
    eos = end_ids(tokenizer)

    def until_eos(new: list[int]) -> list[int]:
        ended = [i for i, t in enumerate(new) if t in eos]
        return new[: ended[0]] if ended else new

    for c, row in zip(ours, theirs.tolist(), strict=True):
        new = until_eos(row[batch.input_ids.shape[1] :])
        assert c.token_ids == new
        assert hf_tok.decode(new) == c.text
    for text in bos_texts:
        single = hf_tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            row = hf.generate(single, max_new_tokens=24, do_sample=False)[0, single.shape[1] :]
        cfg = GenerationConfig(max_new_tokens=24)
        assert generate_ids(model, single.tolist(), cfg, eos_id=eos)[0] == until_eos(row.tolist())


def test_chat_template_uses_the_chat_tokens(exported, tokenizer):
    _, out = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|endoftext|><|system|>be brief<|end|><|user|>hi<|end|><|assistant|>"
    assert (hf_tok.eos_token, hf_tok.pad_token, hf_tok.bos_token) == (
        "<|endoftext|>",
        "<|pad|>",
        "<|endoftext|>",
    )
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == stop_ids(tokenizer) == end_ids(tokenizer)


@pytest.mark.parametrize("n", range(len(CONVERSATIONS)))
def test_chat_template_gives_render_conversation_ids(exported, tokenizer, n):
    _, out = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    messages = CONVERSATIONS[n]
    ids, mask = render_conversation(tokenizer, messages)
    text = hf_tok.apply_chat_template(messages, tokenize=False)
    # tokenize=True tokenizes the text with add_special_tokens=False; tok(text) with them: both agree
    encoded = hf_tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert encoded["input_ids"] == ids
    assert hf_tok(text).input_ids == ids and ids.count(tokenizer.eot_id) == 1
    assert encoded["assistant_masks"] == mask  # {% generation %} marks what SFT trains on
    # the opened assistant turn, for everything up to the last user message
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    prefix = messages[: last_user + 1]
    text = hf_tok.apply_chat_template(prefix, tokenize=False, add_generation_prompt=True)
    assert hf_tok(text).input_ids == render_for_completion(tokenizer, prefix)
    assert (
        hf_tok.apply_chat_template(prefix, add_generation_prompt=True)["input_ids"] == hf_tok(text).input_ids
    )
    # decoding gives the conversation back, the content's special-token text included
    assert ESCAPED not in hf_tok.decode(ids)
    assert hf_tok.decode(ids) == tokenizer.decode(ids)


def test_chat_template_refuses_what_render_conversation_refuses(exported):
    _, out = exported
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    bad = {
        "message 1: unknown role tool": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}],
        "message 1: a system message is only allowed as the first": [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "b"},
        ],
        "message 0: content must be a string": [{"role": "user", "content": 3}],
    }
    for message, messages in bad.items():
        with pytest.raises(Exception, match=message):
            hf_tok.apply_chat_template(messages, tokenize=False)


def test_transformers_chat_generation_matches_winnow_chat(exported, tokenizer):
    model, out = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    messages = [{"role": "user", "content": "the quick brown fox"}]
    ids = render_for_completion(tokenizer, messages)
    (ours,) = generate(model, tokenizer, ["x"], GenerationConfig(max_new_tokens=16), prompt_ids=[ids])
    prompt = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():  # generation_config.json's eos ids end it, as stop_ids end ours
        row = hf.generate(**prompt, max_new_tokens=16, do_sample=False)[0, len(ids) :].tolist()
    assert row[: len(ours.token_ids)] == ours.token_ids
    assert row[len(ours.token_ids) :] in ([], [tokenizer.eot_id], [tokenizer.special_tokens["<|end|>"]])


def test_cli_export_verify_and_refuses_to_overwrite(tmp_path, tokenizer_dir, tokenizer, capsys):
    from pipeline.cli import main

    save_gpt_checkpoint(tiny_gpt(tokenizer.vocab_size), tmp_path / "run", tokenizer_dir)
    argv = ["export", "hf", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]
    assert main([*argv, "--verify"]) == 0
    assert "verify: max |logits" in capsys.readouterr().out
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force", "--dtype", "bfloat16"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    assert (
        main(["export", "hf", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_chat_template_follows_the_tokenizer():
    """An imported tokenizer: the template starts with its bos; without the chat tokens, no template."""
    from types import SimpleNamespace

    from train.export import tokenizer_files

    specials = {"<s>": 0, "</s>": 1, "<pad>": 2}
    imported = SimpleNamespace(special_tokens=specials, eot_id=1, pad_id=2, bos_id=0)
    assert "chat_template" not in tokenizer_files(imported, 64)["tokenizer_config.json"]
    specials.update({"<|system|>": 3, "<|user|>": 4, "<|assistant|>": 5, "<|end|>": 6})
    template = tokenizer_files(imported, 64)["tokenizer_config.json"]["chat_template"]
    assert template.startswith('{{ "<s>" }}')
