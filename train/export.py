"""``winnow export hf``: a checkpoint as a Hugging Face Llama folder.

winnow's GPT has Llama's layout (``train/model.py``), so the weights are renamed, not converted:
every parameter gets the ``model.`` prefix except ``lm_head.weight``, which is left out when the
embeddings are tied (``tie_word_embeddings: true``; safetensors cannot store two names for one
tensor, and transformers re-ties on load).  The folder:

```
config.json              LlamaForCausalLM: sizes, num_key_value_heads, head_dim, rope_theta,
                         rms_norm_eps, tie_word_embeddings, bos/eos/pad ids, max_position_embeddings
model.safetensors        weights (fp32 by default; --dtype bfloat16 halves the file)
generation_config.json   bos/eos/pad ids: generation ends at tokenizer.chat.stop_ids
                         (<|endoftext|> or <|end|>)
tokenizer.json           the checkpoint's tokenizer; it adds no BOS (the chat template writes
                         <|endoftext|>; prepend tok.bos_token to a plain prompt, as winnow generate
                         does) and its normalizer undoes the template's escape of "<|" in content
tokenizer_config.json    PreTrainedTokenizerFast, special tokens, chat template (tokenizer.chat's
                         format: apply_chat_template gives render_conversation's ids)
special_tokens_map.json
winnow_export.json       lineage: source checkpoint, step, tokens, data manifests, tokenizer sha256
```

``AutoModelForCausalLM.from_pretrained(out)`` and ``AutoTokenizer.from_pretrained(out)`` load it
offline; ``--verify`` checks the logits against winnow's model on random tokens (max |diff| ≤ 1e-4 in
fp32; the tests see ~1e-6).  ``config.json`` carries ``rope_theta`` both at the top level (transformers
4.x) and in ``rope_parameters`` (5.x).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pipeline.atomic import atomic_dir
from tokenizer.chat import CHAT_TOKENS, END, ROLES, start_id, stop_ids
from tokenizer.encoding import EOT
from train.model import GPT

CHAT_ROLES = ROLES

# Content is untrusted text: ``tokenizer.chat`` encodes "<|end|>" inside a message as plain text.  A
# Hugging Face tokenizer matches special tokens anywhere in its input, so the template breaks every
# "<|" in content with this private-use character, which the exported tokenizer.json's normalizer
# removes again *after* special tokens are matched (they are matched on the raw text) and before BPE:
# the content's tokens are then exactly its plain-text tokens.  The one text that cannot round-trip
# is content containing this escape sequence itself.
ESCAPE = "\ue000"
ESCAPED = "<" + ESCAPE + "|"


def chat_template(start: str = EOT) -> str:
    """tokenizer.chat's format as a Jinja chat template: ``start`` (the name of ``start_id``), then
    <|role|>content<|end|> per message; the generation prompt opens the assistant's turn.  Unknown
    roles, a late system message and non-string content are errors (as in render_conversation), not
    silently rendered.  {% generation %} marks what render_conversation's loss mask trains on, so
    ``return_assistant_tokens_mask=True`` gives that mask."""
    return (
        f"{{{{ {json.dumps(start)} }}}}"
        "{% for message in messages %}"
        "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
        "{{ raise_exception('message ' ~ loop.index0 ~ ': unknown role ' ~ message['role'] ~ "
        "' (expected one of system, user, assistant)') }}"
        "{% elif message['role'] == 'system' and not loop.first %}"
        "{{ raise_exception('message ' ~ loop.index0 ~ "
        "': a system message is only allowed as the first message') }}"
        "{% elif message['content'] is not string %}"
        "{{ raise_exception('message ' ~ loop.index0 ~ ': content must be a string') }}"
        "{% endif %}"
        "{% set content = message['content'] | replace('<|', '" + ESCAPED + "') %}"
        "{{ '<|' + message['role'] + '|>' }}"
        "{% if message['role'] == 'assistant' %}"
        f"{{% generation %}}{{{{ content + '{END}' }}}}{{% endgeneration %}}"
        f"{{% else %}}{{{{ content + '{END}' }}}}{{% endif %}}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )


CHAT_TEMPLATE = chat_template()  # winnow's tokenizers: <|endoftext|> first


def hf_state_dict(model: GPT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """winnow parameter names → Llama's; the tied head is left out (see the module docstring)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if model.config.tie_embeddings:
                continue
            key = name
        else:
            key = "model." + name
        out[key] = tensor.detach().to("cpu", dtype).contiguous()
    return out


def hf_config(model: GPT, tokenizer, dtype: torch.dtype) -> dict:
    c = model.config
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.mlp_hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": c.tie_embeddings,
        "initializer_range": c.init_std,
        # winnow's tokenizers: <|endoftext|> (bos_id == eot_id); an import: its own bos (or none)
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eot_id,
        "pad_token_id": tokenizer.pad_id,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "dtype": str(dtype).removeprefix("torch."),
    }


def hf_tokenizer_json(src: Path) -> str:
    """The checkpoint's tokenizer.json, adapted to the chat template.

    * No post-processor: ``tok(text)`` adds no BOS.  transformers tokenizes a template's output
      with ``add_special_tokens=False`` (``apply_chat_template(tokenize=True)``), so the template
      writes the ``<|endoftext|>`` BOS itself; a post-processor adding one too would make
      ``tok(apply_chat_template(tokenize=False))`` start with two.  A plain completion prompt needs
      ``tok.bos_token + text`` (what ``winnow generate`` does), as pretraining put ``<|endoftext|>``
      before every document.
    * A normalizer that undoes the template's escape of "<|" in message content (``ESCAPE``).
    """
    data = json.loads(src.read_text(encoding="utf-8"))
    data["post_processor"] = None
    unescape = {"type": "Replace", "pattern": {"String": ESCAPED}, "content": "<|"}
    if data.get("normalizer"):
        unescape = {"type": "Sequence", "normalizers": [unescape, data["normalizer"]]}
    data["normalizer"] = unescape
    return json.dumps(data, ensure_ascii=False)


def tokenizer_files(tokenizer, block_size: int) -> dict[str, dict]:
    specials = dict(sorted(tokenizer.special_tokens.items(), key=lambda kv: kv[1]))
    eot = next(name for name, i in specials.items() if i == tokenizer.eot_id)
    pad = next(name for name, i in specials.items() if i == tokenizer.pad_id)
    bos = next((name for name, i in specials.items() if i == tokenizer.bos_id), None)
    extra = [name for name in specials if name not in (eot, pad, bos)]
    added = {
        str(i): {
            "content": name,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for name, i in specials.items()
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eot,
        "pad_token": pad,
        "unk_token": None,
        "additional_special_tokens": extra,
        "added_tokens_decoder": added,
        "add_bos_token": False,  # the chat template writes it (see hf_tokenizer_json)
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": block_size,
        "padding_side": "left",
    }
    if all(t in specials for t in CHAT_TOKENS):  # else (an import without them) there is no chat format
        start = next(name for name, i in specials.items() if i == start_id(tokenizer))
        config["chat_template"] = chat_template(start)
    special_map = {"bos_token": bos, "eos_token": eot, "pad_token": pad, "additional_special_tokens": extra}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special_map}


def export_hf(
    checkpoint: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float32, force: bool = False
) -> Path:
    """Write the Hugging Face folder for ``checkpoint`` to ``out`` (atomically: temp folder + rename)."""
    from safetensors.torch import save_file

    from tokenizer.encoding import HF_FILE
    from train.checkpoint import load_checkpoint, load_model

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
    ckpt = load_checkpoint(checkpoint)
    model, tokenizer = load_model(ckpt["dir"])
    tok_json = tokenizer.path / HF_FILE
    if not tok_json.is_file():
        raise FileNotFoundError(f"{tok_json} is missing: the checkpoint's tokenizer has no Hugging Face file")

    with atomic_dir(out) as tmp:
        save_file(hf_state_dict(model, dtype), str(tmp / "model.safetensors"), metadata={"format": "pt"})

        def write_json(name: str, obj: dict) -> None:
            (tmp / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

        write_json("config.json", hf_config(model, tokenizer, dtype))
        eos = stop_ids(tokenizer)
        write_json(
            "generation_config.json",
            {
                "bos_token_id": tokenizer.bos_id,
                "eos_token_id": eos if len(eos) > 1 else eos[0],
                "pad_token_id": tokenizer.pad_id,
                "max_length": model.config.block_size,
            },
        )
        (tmp / "tokenizer.json").write_text(hf_tokenizer_json(tok_json), encoding="utf-8")
        for name, obj in tokenizer_files(tokenizer, model.config.block_size).items():
            write_json(name, obj)
        meta = ckpt["meta"]
        write_json(
            "winnow_export.json",
            {
                "format": "winnow.export.hf/1",
                "checkpoint": str(ckpt["dir"].resolve()),
                "step": meta.get("step"),
                "tokens": meta.get("tokens"),
                "data": meta.get("data"),
                "tokenizer_json_sha256": tokenizer.sha256,
                "dtype": str(dtype).removeprefix("torch."),
            },
        )
    return out


@torch.no_grad()
def verify(checkpoint: str | Path, out: str | Path, *, seq_len: int = 64, seed: int = 0) -> float:
    """Max |logits difference| between winnow's model and transformers' load of ``out`` (fp32)."""
    from transformers import AutoModelForCausalLM

    from train.checkpoint import load_model

    model, _ = load_model(checkpoint)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, model.config.vocab_size, (2, min(seq_len, model.config.block_size)), generator=gen)
    return (hf(idx).logits - model(idx)).abs().max().item()


def main(args: argparse.Namespace) -> int:
    dtype = getattr(torch, args.dtype)
    try:
        out = export_hf(args.checkpoint, args.out, dtype=dtype, force=args.force)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"winnow export: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (Hugging Face LlamaForCausalLM, {args.dtype})")
    if args.verify:
        diff = verify(args.checkpoint, out)
        limit = 1e-4 if dtype == torch.float32 else 5e-2
        print(f"verify: max |logits(transformers) - logits(winnow)| = {diff:.2e} (limit {limit:g})")
        if diff > limit:
            print("winnow export: verification failed", file=sys.stderr)
            return 1
    return 0
