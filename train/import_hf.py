"""``winnow import hf``: a Hugging Face Llama folder as a winnow checkpoint (the inverse of export).

```
winnow import hf --model HF_DIR --out OUT [--force]
```

``HF_DIR`` holds ``config.json`` (``LlamaForCausalLM``), ``*.safetensors`` (one file, or shards
listed by ``model.safetensors.index.json``) and a byte-level BPE ``tokenizer.json``
(``tokenizer_config.json`` / ``generation_config.json`` are read for the special-token roles when
present).  ``OUT/checkpoints/step-00000000`` (+ ``latest``) is a weights-only checkpoint whose
``config.json`` says ``kind: imported`` and records the source folder and the sha256 of its
``config.json`` and ``tokenizer.json``; ``winnow generate``, ``winnow export hf`` and the trainers
load it like any other (``train.checkpoint.load_model``).

Weights are renamed, not converted (winnow's GPT has Llama's layout, ``train/model.py``), and stored
in fp32 (a bf16 source converts exactly).  Anything the GPT does not compute fails with a message
naming it: another architecture, attention/MLP biases, a non-default RoPE (``rope_scaling``:
llama3, linear, dynamic, yarn, ...), sliding windows, a ``head_dim`` other than hidden/heads, an
activation other than SiLU, and a tie/untie mismatch (``tie_word_embeddings`` true with a distinct
``lm_head.weight``, or false without one).

The tokenizer: winnow encodes with tiktoken (``tokenizer/encoding.py``), whose merge priority is the
rank of the merged token.  The import keeps the source's ids (the embedding rows are indexed by
them): each vocabulary entry's byte-level string becomes its bytes with rank = its id, and the
source's added tokens become tiktoken special tokens with their ids.  That is exact when

* the pre-tokenizer is ``ByteLevel(use_regex=True)`` (GPT-2's regex) or ``Split(Regex,
  Isolated)`` followed by ``ByteLevel(use_regex=False)`` (Llama 3, Qwen 2, winnow's own), without a
  normalizer or ``add_prefix_space``;
* the merges are in id order and each merge (a, b) is the split tiktoken makes of a+b with lower
  ranks (so tiktoken's "lowest-ranked pair" is HF's "earliest merge");
* with ``ignore_merges: false``, BPE of every vocabulary token's own text gives that token (tiktoken
  looks a whole pre-token up before merging).

Each condition is checked and named when it fails; then the converted tokenizer and HF's
``tokenizers`` encode a probe set (unicode, whitespace runs, digits, every added token, every
vocabulary entry) and must give the same ids.  ``tokenizer.json`` is kept as it was, so HF loads the
same tokenizer again (``winnow export hf`` re-exports it).

Special-token roles: ``eot`` (documents end with it, generation stops at it) is the model's eos
(``config.json`` ``eos_token_id``, else the tokenizer's ``eos_token``), ``bos`` its bos (may be
absent) and ``pad`` its pad (when absent, the eos id pads: padded positions are masked anyway).
An imported tokenizer has none of winnow's chat tokens unless its source did: ``add_chat_tokens``
appends them and grows the embedding (the SFT trainer calls it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from tokenizer.encoding import HF_FILE, META_FILE, PAD, RANKS_FILE, Tokenizer, file_sha256
from train.model import GPT, GPTConfig

# The regex of Hugging Face's ``ByteLevel(use_regex=True)`` pre-tokenizer (GPT-2's), verbatim.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# winnow's chat tokens (tokenizer/chat.py renders <|role|>content<|end|>)
CHAT_SPECIALS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

# The normalizer ``winnow export hf`` adds to tokenizer.json: it undoes the chat template's escape of
# "<|" in message content (train/export.py, ESCAPE), so it is part of the HF chat template, not of the
# tokenizer; import removes it again (any other normalizer is refused).
WINNOW_EXPORT_NORMALIZER = {"type": "Replace", "pattern": {"String": "<\ue000|"}, "content": "<|"}

PROBE_TEXTS: tuple[str, ...] = (
    "Hello, world! It's 2024; we'll see what they've done.",
    "I'M you're WE'LL they'VE it's 'quoted' ''",
    "   leading spaces\n\n\n\ttabs   \n \n  trailing  ",
    "digits 1234567890 3.14159 1e-9 0x1F ١٢٣٤ 一二三 12 345 6789",
    "naïve café — 你好，世界 — Привет, мир — नमस्ते — مرحبا",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 🇩🇪 ✔️ 😀😀😀",
    "\x00\x01\x1f\x7f control \x0b\x0c\r\n\r\n\x85 \u2028 \u2029 \u00a0nbsp \u3000 \ufeffbom",
    "a" * 300 + " " + "ab" * 200 + "\n" * 5 + " " * 17 + "x",
)


class UnsupportedModel(ValueError):
    """The Hugging Face folder uses something winnow's GPT or tokenizer cannot represent exactly."""


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# --------------------------------------------------------------------------------------------------
# Tokenizer


def _pattern(pre: dict | None) -> str:
    """tiktoken's split regex for a byte-level ``pre_tokenizer`` (see the module docstring)."""

    def byte_level(p: dict, use_regex: bool) -> bool:
        return (
            p.get("type") == "ByteLevel"
            and bool(p.get("use_regex", True)) == use_regex
            and not p.get("add_prefix_space", False)
        )

    if pre and pre.get("type") == "ByteLevel" and pre.get("add_prefix_space"):
        raise UnsupportedModel(
            "tokenizer.json: ByteLevel add_prefix_space=true is not representable (tiktoken adds no "
            "leading space)"
        )
    if pre and byte_level(pre, True):
        return GPT2_PATTERN
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else None
    if steps and len(steps) == 2 and byte_level(steps[1], False):
        split = steps[0]
        regex = (split.get("pattern") or {}).get("Regex")
        if (
            split.get("type") == "Split"
            and regex is not None
            and split.get("behavior") == "Isolated"
            and not split.get("invert", False)
        ):
            return regex
    raise UnsupportedModel(
        f"tokenizer.json: pre_tokenizer {json.dumps(pre)[:300]} is not representable: supported are "
        "ByteLevel(use_regex=true, add_prefix_space=false) and Sequence[Split(Regex, Isolated), "
        "ByteLevel(use_regex=false, add_prefix_space=false)]"
    )


def strip_export_normalizer(data: dict) -> bool:
    """Remove ``WINNOW_EXPORT_NORMALIZER`` from a parsed tokenizer.json; True when it was there."""
    norm = data.get("normalizer")
    if norm == WINNOW_EXPORT_NORMALIZER:
        data["normalizer"] = None
        return True
    if (
        norm
        and norm.get("type") == "Sequence"
        and norm.get("normalizers", [None])[0] == WINNOW_EXPORT_NORMALIZER
    ):
        rest = norm["normalizers"][1:]
        data["normalizer"] = (
            None if not rest else rest[0] if len(rest) == 1 else {**norm, "normalizers": rest}
        )
        return True
    return False


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    # tokenizers writes merges as "a b" (byte-level strings never contain a space) or as [a, b]
    return [tuple(m.split(" ")) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def convert_tokenizer(data: dict) -> tuple[dict[bytes, int], dict[str, int], str]:
    """``(ranks, added_tokens, pattern)`` of a parsed byte-level BPE ``tokenizer.json``, ids kept.

    Raises ``UnsupportedModel`` naming the first feature that tiktoken cannot reproduce exactly.
    """
    from tokenizer.folder import _split_with_lower_ranks, bytes_to_unicode

    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise UnsupportedModel(
            f"tokenizer.json: model type {model.get('type')!r}: only byte-level BPE tokenizers can be "
            "imported (not SentencePiece-style Unigram/Metaspace, WordPiece or WordLevel)"
        )
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(key):
            raise UnsupportedModel(f"tokenizer.json: BPE {key}={model[key]!r} is not supported")
    if data.get("normalizer") is not None:
        kind = data["normalizer"].get("type")
        raise UnsupportedModel(f"tokenizer.json: normalizer {kind!r} is not supported (tiktoken has none)")
    pattern = _pattern(data.get("pre_tokenizer"))
    decoder = data.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise UnsupportedModel(f"tokenizer.json: decoder {decoder.get('type')!r}, expected ByteLevel")

    added: dict[str, int] = {}
    for a in data.get("added_tokens", []):
        flags = [f for f in ("lstrip", "rstrip", "single_word") if a.get(f)]
        if flags:
            raise UnsupportedModel(f"tokenizer.json: added token {a['content']!r} sets {', '.join(flags)}")
        added[a["content"]] = int(a["id"])
    added_ids = set(added.values())
    if len(added_ids) != len(added):
        raise UnsupportedModel("tokenizer.json: two added tokens share an id")

    to_byte = {c: b for b, c in bytes_to_unicode().items()}

    def as_bytes(s: str) -> bytes:
        try:
            return bytes(to_byte[c] for c in s)
        except KeyError as e:
            raise UnsupportedModel(
                f"tokenizer.json: vocabulary entry {s!r} has {e.args[0]!r}, outside the byte-level "
                "alphabet: not a byte-level BPE"
            ) from None

    ranks: dict[bytes, int] = {}
    for s, i in model.get("vocab", {}).items():
        if s in added:  # trained tokenizers list their special tokens in the vocabulary too
            if added[s] != i:
                raise UnsupportedModel(
                    f"tokenizer.json: {s!r} has id {i} in the vocabulary, {added[s]} as added"
                )
            continue
        if i in added_ids:
            raise UnsupportedModel(f"tokenizer.json: id {i} is both {s!r} and an added token")
        ranks[as_bytes(s)] = int(i)
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise UnsupportedModel(
            f"tokenizer.json: the vocabulary lacks {len(missing)} of the 256 byte tokens "
            f"(e.g. {missing[:5]}): not a full byte-level BPE"
        )

    merges = _merge_pairs(model.get("merges", []))
    previous = -1
    for n, (a, b) in enumerate(merges):
        left, right = as_bytes(a), as_bytes(b)
        rank = ranks.get(left + right)
        if rank is None:
            raise UnsupportedModel(
                f"tokenizer.json: merge {n} ({a!r}, {b!r}) makes a token not in the vocabulary"
            )
        if rank <= previous:
            raise UnsupportedModel(
                f"tokenizer.json: merge {n} ({a!r}, {b!r}) makes id {rank} after id {previous}: tiktoken "
                "orders merges by the merged token's id, so merge order must follow the ids"
            )
        previous = rank
        if _split_with_lower_ranks(ranks, left + right, rank) != [left, right]:
            raise UnsupportedModel(
                f"tokenizer.json: merge {n} ({a!r}, {b!r}) is not the split tiktoken makes of "
                f"{left + right!r} with lower ranks"
            )
    n_multi = sum(len(t) > 1 for t in ranks)
    if n_multi != len(merges):
        raise UnsupportedModel(
            f"tokenizer.json: {n_multi} multi-byte vocabulary tokens but {len(merges)} merges: every "
            "token must be made by exactly one merge"
        )
    if not model.get("ignore_merges", False):
        _check_tokens_are_reachable(data, ranks)
    return ranks, added, pattern


def _check_tokens_are_reachable(data: dict, ranks: dict[bytes, int]) -> None:
    """With ``ignore_merges: false`` HF runs BPE even on a pre-token that is a vocabulary entry,
    where tiktoken returns the entry: equal only if BPE of every entry gives the entry itself."""
    from tokenizers import Tokenizer as HFTokenizer

    from tokenizer.folder import token_to_unicode

    bpe = HFTokenizer.from_str(json.dumps(data)).model
    for token, rank in ranks.items():
        if len(token) > 1:
            got = [t.id for t in bpe.tokenize(token_to_unicode(token))]
            if got != [rank]:
                raise UnsupportedModel(
                    f"tokenizer.json: BPE of vocabulary entry {token!r} (id {rank}) gives {got}, and "
                    "ignore_merges is false: tiktoken would emit the entry whole"
                )


def verify_tokenizer(tokenizer: Tokenizer, tokenizer_json: str, texts: list[str] | None = None) -> int:
    """Encode ``texts`` (default: ``PROBE_TEXTS``, every added token between text, and every vocabulary
    entry, 64 to a text) with ``tokenizer`` and with HF ``tokenizers`` over ``tokenizer_json``;
    raises ``UnsupportedModel`` on the first difference, returns the number of texts compared."""
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_str(tokenizer_json)
    if texts is None:
        texts = list(PROBE_TEXTS)
        texts.append(" ".join(f"x{s}y {s}\n{s}" for s in tokenizer.special_tokens))
        entries = []
        for token in tokenizer.encoding._mergeable_ranks:
            try:
                entries.append(token.decode("utf-8"))
            except UnicodeDecodeError:
                continue
        texts += ["".join(entries[i : i + 64]) for i in range(0, len(entries), 64)]
    theirs = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    for text, want in zip(texts, theirs, strict=True):
        got = tokenizer.encode(text, allowed_special="all")
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise UnsupportedModel(
                f"converted tokenizer differs from tokenizer.json on {text[:80]!r}: at token {first}, "
                f"{got[first : first + 4]} vs HF {want[first : first + 4]} (pattern {tokenizer.pattern!r})"
            )
    return len(texts)


def _token_name(value, added: dict[str, int]) -> str | None:
    """An added token's name from an id, a name, or tokenizer_config's {"content": name}."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("content")
    if value is None:
        return None
    if isinstance(value, int):
        names = [n for n, i in added.items() if i == value]
        if not names:
            raise UnsupportedModel(
                f"token id {value} (a bos/eos/pad id) is not an added token of tokenizer.json"
            )
        return names[0]
    if value not in added:
        raise UnsupportedModel(f"special token {value!r} is not an added token of tokenizer.json")
    return value


def token_roles(model_dir: Path, config: dict, added: dict[str, int]) -> dict[str, str | None]:
    """``{"eot", "bos", "pad"}`` token names (see the module docstring); eot is required."""
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    gen_config = _read_json(model_dir / "generation_config.json")

    def pick(key: str) -> str | None:
        for value in (
            config.get(f"{key}_token_id"),
            gen_config.get(f"{key}_token_id"),
            tok_config.get(f"{key}_token"),
        ):
            name = _token_name(value, added)
            if name is not None:
                return name
        return None

    roles = {"eot": pick("eos"), "bos": pick("bos"), "pad": pick("pad")}
    if roles["eot"] is None:
        raise UnsupportedModel(
            f"{model_dir}: no eos token (config.json eos_token_id or tokenizer_config.json eos_token): "
            "winnow ends documents and generation with it"
        )
    return roles


# --------------------------------------------------------------------------------------------------
# Model


def gpt_config(config: dict) -> GPTConfig:
    """winnow's ``GPTConfig`` for a Llama ``config.json``; ``UnsupportedModel`` lists every field the
    GPT does not compute."""
    arch = config.get("architectures") or ["LlamaForCausalLM"]
    if config.get("model_type") != "llama" or arch != ["LlamaForCausalLM"]:
        raise UnsupportedModel(
            f"model_type {config.get('model_type')!r}, architectures {arch}: only LlamaForCausalLM "
            "(model_type 'llama') can be imported"
        )
    problems = []
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config['hidden_act']!r} (winnow's MLP is SwiGLU with SiLU)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            problems.append(f"{key}=true (winnow's GPT has no biases)")
    for key in ("sliding_window", "use_sliding_window"):
        if config.get(key):
            problems.append(f"{key}={config[key]!r} (winnow attends to the whole context)")
    rope_parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    for where, params in (("rope_parameters", rope_parameters), ("rope_scaling", scaling)):
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            problems.append(f"{where} rope_type {kind!r} (only plain RoPE is implemented)")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            problems.append(f"{where} partial_rotary_factor {params['partial_rotary_factor']}")
    theta = rope_parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    if "rope_theta" in config and float(config["rope_theta"]) != float(theta):
        problems.append(f"rope_theta {config['rope_theta']} != rope_parameters.rope_theta {theta}")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = config.get("head_dim")
    if head_dim is not None and hidden % heads == 0 and int(head_dim) != hidden // heads:
        problems.append(f"head_dim {head_dim} != hidden_size/num_attention_heads ({hidden // heads})")
    if problems:
        raise UnsupportedModel("unsupported Llama config: " + "; ".join(problems))
    try:
        return GPTConfig(
            vocab_size=int(config["vocab_size"]),
            block_size=int(config.get("max_position_embeddings", 2048)),
            n_layer=int(config["num_hidden_layers"]),
            n_head=heads,
            n_kv_head=int(config.get("num_key_value_heads") or heads),
            n_embd=hidden,
            mlp_hidden=int(config["intermediate_size"]),
            rope_theta=float(theta),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            init_std=float(config.get("initializer_range", 0.02)),
        )
    except ValueError as e:
        raise UnsupportedModel(str(e)) from None


def load_safetensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder: the shards model.safetensors.index.json lists, else *.safetensors."""
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = [model_dir / f for f in sorted(set(weight_map.values()))]
    else:
        weight_map = None
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{model_dir}: no *.safetensors weights (pytorch_model.bin is not read: "
            "save_pretrained(..., safe_serialization=True) writes safetensors)"
        )
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        for name, tensor in load_file(str(f)).items():
            if name in weights:
                raise UnsupportedModel(f"{f.name}: tensor {name} is also in another shard")
            weights[name] = tensor
    if weight_map is not None and set(weight_map) != set(weights):
        lost = sorted(set(weight_map) ^ set(weights))
        raise UnsupportedModel(
            f"{index.name} and the shards disagree on {len(lost)} tensors, e.g. {lost[:3]}"
        )
    return weights


def gpt_state_dict(weights: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """HF Llama tensor names → winnow's (drop ``model.``), fp32, checked against the GPT's own."""
    state: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, tensor in weights.items():
        if name.endswith("rotary_emb.inv_freq"):  # derived (old checkpoints saved it): recomputed
            continue
        key = name.removeprefix("model.") if name.startswith("model.") else name
        if key != name or name == "lm_head.weight":
            state[key] = tensor.to(torch.float32) if tensor.is_floating_point() else tensor
        else:
            unexpected.append(name)
    head, emb = state.get("lm_head.weight"), state.get("embed_tokens.weight")
    if config.tie_embeddings and emb is not None:
        if head is not None and not torch.equal(head, emb):
            raise UnsupportedModel(
                "tie_word_embeddings is true but lm_head.weight differs from embed_tokens.weight"
            )
        state["lm_head.weight"] = emb
    elif not config.tie_embeddings and head is None:
        raise UnsupportedModel(
            "tie_word_embeddings is false but there is no lm_head.weight (transformers would "
            "initialise the head at random)"
        )
    with torch.device("meta"):
        expected = {k: v.shape for k, v in GPT(config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected += sorted("model." + k for k in set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(s)}"
        for k, s in expected.items()
        if k in state and state[k].shape != s
    ]
    if missing or unexpected or wrong:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"shape {wrong[:3]}" if wrong else "",
        ]
        raise UnsupportedModel(
            "weights do not fit a Llama of config.json: " + "; ".join(p for p in parts if p)
        )
    return state


# --------------------------------------------------------------------------------------------------
# The import


def import_hf(model_dir: str | Path, out: str | Path, *, force: bool = False, verify: bool = True) -> Path:
    """Write ``out/checkpoints/step-00000000`` from the HF folder ``model_dir``; returns the step folder.

    ``out`` is written whole, atomically (it must be empty or absent unless ``force``, which
    replaces it).  ``verify``: compare the converted tokenizer with HF's on the probe texts.
    """
    from pipeline.atomic import atomic_dir
    from tokenizer.folder import save_imported_tokenizer_dir
    from train.checkpoint import CHECKPOINTS, save_checkpoint, step_dir_name

    model_dir, out = Path(model_dir), Path(out)
    for name in ("config.json", HF_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} is missing: expected a Hugging Face model folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
    config = _read_json(model_dir / "config.json")
    gcfg = gpt_config(config)  # fails fast on an unsupported architecture, before any weights load

    tok_text = (model_dir / HF_FILE).read_text(encoding="utf-8")
    tok_data = json.loads(tok_text)
    if strip_export_normalizer(tok_data):  # a winnow export: back to the tokenizer it was made from
        tok_text = json.dumps(tok_data, ensure_ascii=False)
    ranks, added, pattern = convert_tokenizer(tok_data)
    roles = token_roles(model_dir, config, added)
    source = {
        "format": "hf",
        "path": str(model_dir.resolve()),
        "config_sha256": file_sha256(model_dir / "config.json"),
        "tokenizer_json_sha256": file_sha256(model_dir / HF_FILE),
    }
    with tempfile.TemporaryDirectory(
        prefix=".import-", dir=out.parent if out.parent.exists() else None
    ) as td:
        tok_dir = save_imported_tokenizer_dir(
            Path(td) / "tokenizer",
            ranks,
            tokenizer_json=tok_text,
            special_tokens=added,
            pattern=pattern,
            roles=roles,
            source=source,
        )
        try:
            tokenizer = Tokenizer.from_dir(tok_dir)
        except ValueError as e:  # tiktoken's regex engine rejects the pattern
            raise UnsupportedModel(
                f"tokenizer.json: pre-tokenizer regex {pattern!r} is not supported: {e}"
            ) from None
        if verify:
            verify_tokenizer(tokenizer, tok_text)
        if tokenizer.vocab_size > gcfg.vocab_size:
            raise UnsupportedModel(
                f"the tokenizer has ids up to {tokenizer.vocab_size - 1} but the model only "
                f"{gcfg.vocab_size} embedding rows"
            )
        state = gpt_state_dict(load_safetensors(model_dir), gcfg)
        model = GPT(gcfg)
        model.load_state_dict(state)
        meta = {"kind": "imported", "source": source, "tokens": 0}
        with atomic_dir(out) as tmp:
            save_checkpoint(tmp, 0, model, tokenizer_dir=tok_dir, meta=meta, trainer_state=None)
    return out / CHECKPOINTS / step_dir_name(0)


# --------------------------------------------------------------------------------------------------
# Chat tokens for an imported base model


@torch.no_grad()
def _set_new_rows(model: GPT, new_ids: list[int], n_existing: int) -> None:
    """Rows ``new_ids`` of the embedding (and of an untied head) := the mean of rows
    ``[0, n_existing)`` (the tokenizer's ids: padding rows beyond them are untrained), growing the
    matrices when an id is past their end.  Other rows, so other ids' logits, are unchanged."""
    old = model.embed_tokens.weight
    n, d = old.shape
    size = max(n, max(new_ids) + 1)
    rows = torch.tensor(new_ids, device=old.device)
    if size > n:
        emb = torch.nn.Embedding(size, d, device=old.device, dtype=old.dtype)
        emb.weight[:n] = old
        emb.weight.requires_grad_(old.requires_grad)
        model.embed_tokens = emb
    emb_w = model.embed_tokens.weight
    emb_w[rows] = old[:n_existing].mean(dim=0)
    old_head = model.lm_head.weight
    if model.config.tie_embeddings:
        if size > n:
            model.lm_head = torch.nn.Linear(d, size, bias=False, device=old.device, dtype=old.dtype)
            model.lm_head.weight = emb_w
    else:
        if size > n:
            model.lm_head = torch.nn.Linear(d, size, bias=False, device=old.device, dtype=old_head.dtype)
            model.lm_head.weight[:n] = old_head
            model.lm_head.weight.requires_grad_(old_head.requires_grad)
        model.lm_head.weight[rows] = old_head[:n_existing].mean(dim=0)
    model.config.vocab_size = size


def add_chat_tokens(model: GPT, tokenizer: str | Path | Tokenizer) -> list[str]:
    """Give an imported tokenizer winnow's chat tokens; returns the names added (``[]``: none missing).

    Appends ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>`` -- and ``<|pad|>`` when the
    tokenizer has no pad token -- as special tokens with the next ids (``tokenizer.vocab_size``, ...:
    those HF gives them too), and sets those rows of ``model``'s embedding (and untied head) to the
    mean of the tokenizer's existing rows (a neutral start that SFT then trains), growing the
    matrices when the model has no padding rows there.  Existing ids and their logits are unchanged.
    Call it on the bare model (not DDP / compiled) before building the optimizer.

    The tokenizer folder is rewritten in place (``tokenizer.tiktoken``, ``winnow_tokenizer.json``
    and ``tokenizer.json``, whose added tokens HF then reads), so pass the run's own copy: a folder
    inside a checkpoint (next to its ``model.pt``) is refused.  A ``Tokenizer`` passed in is reloaded
    in place.
    """
    from pipeline.atomic import atomic_dir

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_dir(tokenizer)
    wanted = list(CHAT_SPECIALS)
    if tok.pad_id == tok.eot_id and PAD not in tok.special_tokens:
        wanted.append(PAD)
    missing = [t for t in wanted if t not in tok.special_tokens]
    if not missing:
        return []
    if not tok.imported:
        raise ValueError(
            f"{tok.path}: a winnow tokenizer lacking {missing} (it should have every chat token)"
        )
    if (tok.path.parent / "model.pt").is_file():
        raise ValueError(
            f"{tok.path} belongs to a checkpoint: copy the tokenizer folder and pass the copy "
            "(add_chat_tokens rewrites it)"
        )
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model {model.config.vocab_size} rows")
    # the ids HF gives tokens added after the last one (it renumbers others on load): the model's
    # padding rows past the tokenizer, if any, are reused before the embedding grows
    start = tok.vocab_size
    new = {name: start + i for i, name in enumerate(missing)}

    meta = json.loads((tok.path / META_FILE).read_text())
    meta["special_tokens"] = {**meta["special_tokens"], **new}
    meta["vocab_size"] = start + len(new)
    if PAD in new:
        meta["roles"] = {**meta["roles"], "pad": PAD}
    meta["chat_tokens_added"] = missing
    hf = json.loads((tok.path / HF_FILE).read_text(encoding="utf-8"))
    hf["added_tokens"] = list(hf.get("added_tokens", [])) + [
        {
            "id": i,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for name, i in new.items()
    ]
    with atomic_dir(tok.path) as tmp:
        shutil.copyfile(tok.path / RANKS_FILE, tmp / RANKS_FILE)
        (tmp / HF_FILE).write_text(json.dumps(hf, ensure_ascii=False), encoding="utf-8")
        meta["tokenizer_json_sha256"] = file_sha256(tmp / HF_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    fresh = Tokenizer.from_dir(tok.path)
    from tokenizers import Tokenizer as HFTokenizer

    hf_ids = HFTokenizer.from_file(str(tok.path / HF_FILE))
    wrong = {name: hf_ids.token_to_id(name) for name, i in new.items() if hf_ids.token_to_id(name) != i}
    if wrong:  # holes in the source's ids: HF would renumber the new tokens
        raise ValueError(f"{tok.path / HF_FILE}: HF gives the new tokens other ids {wrong} than {new}")
    _set_new_rows(model, list(new.values()), start)
    if isinstance(tokenizer, Tokenizer):
        tokenizer.__dict__.update(fresh.__dict__)
    return missing


def main(args: argparse.Namespace) -> int:
    try:
        step = import_hf(args.model, args.out, force=args.force)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"winnow import: {e}", file=sys.stderr)
        return 2
    from train.checkpoint import load_model

    model, tok = load_model(step)
    names = {i: n for n, i in tok.special_tokens.items()}
    chat = "has" if all(t in tok.special_tokens for t in CHAT_SPECIALS) else "lacks (SFT adds them)"
    print(f"wrote {step} ({model.summary()})")
    print(
        f"tokenizer: {tok.vocab_size} ids, eot {names[tok.eot_id]}, bos "
        f"{names.get(tok.bos_id) if tok.bos_id is not None else 'none'}, pad {names[tok.pad_id]}; "
        f"{chat} winnow's chat tokens"
    )
    return 0
