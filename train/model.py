"""A decoder-only transformer (GPT) in one readable file, laid out exactly like Hugging Face Llama.

Architecture: token embedding → ``n_layer`` × [RMSNorm → attention (RoPE, optional GQA) → residual,
RMSNorm → SwiGLU MLP → residual] → RMSNorm → linear head (optionally tied to the embedding).  No
biases anywhere, no absolute positions, no dropout (pretraining on deduplicated data for ~1 epoch
does not need it).

Why Llama's layout: parameter names (``layers.3.self_attn.q_proj.weight``, ...), the RoPE convention
(``rotate_half``: the first and second halves of each head are the two rotated coordinates) and the
RMSNorm (weight, eps) are those of ``transformers``' ``LlamaForCausalLM``, so ``train/export.py`` is a
renaming of weights (``model.`` prefix) and every Llama runtime (transformers, vLLM, llama.cpp) can
load the result.

Sizes come from one dial, ``GPTConfig.from_depth(depth, ...)``: width 64·depth, heads of 64 (128 from
width 1024 up), SwiGLU hidden ≈ 8/3·width, and a peak AdamW learning rate that shrinks as 1/width.
Parallelism (DDP) and ``torch.compile`` are applied by the trainer, never here.

KV cache (generation): ``KVCache`` preallocates keys/values for every layer.  Batched prompts of
different lengths are **left-padded**: every row writes the same cache slot at every step (one
``copy_`` per layer instead of a scatter), and each row carries its pad count, from which its RoPE
positions (``slot - pad``) and its key mask (pad slots hidden) follow, so a padded row's logits equal
those of the same prompt run alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _round_up(x: float, multiple: int) -> int:
    return int(multiple * math.ceil(x / multiple))


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 1024  # longest sequence (training window, and prompt + generation)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 12  # < n_head: grouped-query attention (n_head must be a multiple)
    n_embd: int = 768
    mlp_hidden: int = 2048  # SwiGLU hidden width
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "mlp_hidden"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not problems:
            if self.n_embd % self.n_head:
                problems.append(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
            elif self.head_dim % 2:
                problems.append(f"head_dim n_embd/n_head ({self.head_dim}) must be even for RoPE")
            if self.n_head % self.n_kv_head:
                problems.append(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.init_std <= 0:
            problems.append("rope_theta, norm_eps and init_std must be > 0")
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, block_size: int = 1024, **overrides) -> GPTConfig:
        """The depth dial (nanochat's): everything else derives from the number of layers.

        * width ``n_embd = 64 * depth`` (aspect ratio 64, as nanochat: depth 12 → 768, GPT-2 small)
        * heads of 64 dims below width 1024, of 128 from there (fewer, larger heads keep attention
          matmuls efficient on GPUs); ``n_kv_head = n_head`` (plain multi-head) unless overridden
        * SwiGLU hidden ``8/3 * n_embd`` rounded up to a multiple of 64, so the MLP has the 8·d²
          parameters of a 4×-wide GELU MLP
        * ``peak_lr()`` derives from the width

        Any field may be overridden (``n_kv_head=2``, ``n_embd=384``, ``tie_embeddings=False``); when
        ``n_embd`` is overridden, heads and MLP width derive from it unless given too.
        """
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (got {depth})")
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {sorted(unknown)}")
        n_embd = int(overrides.pop("n_embd", 64 * depth))
        if "n_head" in overrides:
            n_head = int(overrides.pop("n_head"))
        else:
            head_dim = 128 if n_embd >= 1024 and n_embd % 128 == 0 else 64
            if n_embd % head_dim:
                raise ValueError(f"n_embd ({n_embd}) must be a multiple of 64, or give n_head")
            n_head = n_embd // head_dim
        fields = dict(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=depth,
            n_head=n_head,
            n_kv_head=n_head,
            n_embd=n_embd,
            mlp_hidden=_round_up(8 * n_embd / 3, 64),
        )
        fields.update(overrides)
        return cls(**fields)

    def peak_lr(self) -> float:
        """Peak AdamW learning rate for this width: ``6e-4 · 768 / n_embd``, capped at 3e-3.

        1/width is μP's rule for hidden matrices under Adam; anchored at GPT-2 small (768 → 6e-4) it
        reproduces GPT-3's table within 1.5× (1024 → 4.5e-4 vs 3e-4, 1536 → 3e-4 vs 2.5e-4,
        2048 → 2.25e-4 vs 2e-4).  The cap keeps tiny models (width ≤ 128) out of the unstable range.
        """
        return min(3e-3, 6e-4 * 768 / self.n_embd)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Rotary position embeddings, Hugging Face Llama's convention


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (length, head_dim), fp32; the frequencies repeat for the two halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (T, D) or (B, 1, T, D).  Cast so bf16 activations stay bf16.
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions.

    Shapes: ``k``/``v`` are (n_layer, batch, n_kv_head, max_len, head_dim).  ``pos`` is the next slot
    to write (the same for every row); ``pad`` (batch,) is each row's number of left-pad slots,
    which its keys mask out and its RoPE positions subtract.  ``reorder`` selects rows (beam search).
    Memory: 2 · n_layer · batch · n_kv_head · head_dim · max_len values (GQA shrinks it n_head/n_kv_head×).
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        pad: torch.Tensor | None = None,
    ):
        if max_len > config.block_size:
            raise ValueError(f"KV cache length {max_len} exceeds the model's block_size {config.block_size}")
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0
        self.pad = torch.zeros(batch_size, dtype=torch.long, device=device) if pad is None else pad.to(device)
        if self.pad.shape != (batch_size,):
            raise ValueError(f"pad must have shape ({batch_size},), got {tuple(self.pad.shape)}")

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def padded(self) -> bool:
        return bool(self.pad.any())

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H_kv, T, D) at ``pos``; return this layer's keys/values for slots [0, pos + T)."""
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (a LongTensor of row indices, repeats allowed), e.g. surviving beams."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)
        self.pad = self.pad.index_select(0, rows)


# --------------------------------------------------------------------------------------------------
# The transformer


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.q_proj = nn.Linear(config.n_embd, config.n_head * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=False)

    def forward(self, x, cos, sin, mask, kv_cache: KVCache | None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)
        if self.n_kv_head != self.n_head:
            # each kv head serves n_head/n_kv_head consecutive query heads (Llama's repeat_kv);
            # SDPA's enable_gqa does this without materialising the copies on the flash path
            gqa = {"enable_gqa": True}
        else:
            gqa = {}
        # mask "causal": plain causal attention (training, or a prefill from slot 0); None: the single
        # new token sees every cached key; a tensor: explicit (B or 1, 1, T, S) boolean mask
        if isinstance(mask, str):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, kv_cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # RoPE tables are derived, not learned: not saved in the state_dict (persistent=False)
        cos, sin = rope_tables(config.head_dim, config.block_size, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's init: N(0, init_std) for every matrix, with the two projections that write into the
        residual stream (``o_proj``, ``down_proj``) scaled by 1/sqrt(2·n_layer), so the residual's
        variance at init does not grow with depth (2 additions per layer); RMSNorm weights 1.
        A tied embedding gets init_std too (the lookup and the head share it)."""
        std = self.config.init_std
        resid_std = std / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=resid_std)
            else:
                nn.init.normal_(p, mean=0.0, std=std)
        cos, sin = rope_tables(self.config.head_dim, self.config.block_size, self.config.rope_theta)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def _positions(self, T: int, kv_cache: KVCache | None):
        """(cos, sin, mask) for T new tokens: see ``Attention.forward`` for the mask convention."""
        if kv_cache is None:
            if self.config.block_size < T:
                raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
            return self.rope_cos[:T], self.rope_sin[:T], "causal"
        start, end = kv_cache.pos, kv_cache.pos + T
        if end > kv_cache.max_len:
            raise ValueError(f"KV cache full: {end} positions > its length {kv_cache.max_len}")
        if not kv_cache.padded:
            cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
            if start == 0:
                return cos, sin, "causal"
            if T == 1:
                return cos, sin, None
        device = self.rope_cos.device
        slots = torch.arange(start, end, device=device)  # (T,) absolute cache slots of the queries
        keys = torch.arange(end, device=device)  # (S,)
        pad = kv_cache.pad.to(device)[:, None]  # (B, 1)
        positions = (slots[None, :] - pad).clamp(min=0)  # (B, T): pad slots all get position 0
        cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]  # (B, 1, T, D)
        causal = keys[None, None, :] <= slots[None, :, None]  # (1, T, S)
        not_pad = keys[None, None, :] >= pad[:, :, None]  # (B, 1, S)
        # a pad query sees only itself: never an empty row (SDPA would return NaN, and NaN·0 = NaN
        # would leak into real rows' values); real queries never see pad keys
        itself = keys[None, None, :] == slots[None, :, None]
        mask = causal & (not_pad | itself)  # (B, T, S)
        return cos, sin, mask[:, None]

    def _packed_positions(self, doc_ids: torch.Tensor):
        """(cos, sin, mask) for windows that pack several documents: ``doc_ids`` (B, T) numbers each
        token's document (equal ids are contiguous).  Positions restart at 0 at every document and a
        token attends only to earlier tokens of its own document (block-diagonal causal mask), so a
        packed window computes exactly what each document computes alone."""
        B, T = doc_ids.shape
        if self.config.block_size < T:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        t = torch.arange(T, device=doc_ids.device).expand(B, T)
        starts = torch.ones_like(doc_ids, dtype=torch.bool)
        starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        # index of the latest document start at or before each position (cummax of start indices)
        first = torch.where(starts, t, torch.zeros_like(t)).cummax(dim=1).values
        positions = t - first
        cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]  # (B, 1, T, D)
        same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
        return cos, sin, (same_doc & causal)[:, None]

    def forward(
        self,
        idx: torch.Tensor,
        *,
        kv_cache: KVCache | None = None,
        last_only: bool = False,
        doc_ids: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """idx (B, T) token ids → logits (B, T, V).  Losses live in ``train/losses.py``.

        ``kv_cache``: append these T tokens after the cached ones (generation).
        ``last_only``: logits of the last position only (B, 1, V), skipping the head's work on the
        rest of a prompt (at vocab 32k the head is the largest matmul of a small model).
        ``doc_ids`` (B, T): several documents packed in one window (SFT): attention stays inside each
        document and positions restart per document (see ``_packed_positions``).  The explicit mask
        costs SDPA's fused causal path: measured in bench/README.md (SFT packing vs padding).
        ``return_hidden``: the final normed hidden states (B, T, C) instead of logits, for heads other
        than the LM head (the reward model's scalar head, ``train/reward.py``).
        """
        T = idx.shape[1]
        if doc_ids is not None:
            if kv_cache is not None:
                raise ValueError("doc_ids (packed training windows) cannot be used with a KV cache")
            cos, sin, mask = self._packed_positions(doc_ids)
        else:
            cos, sin, mask = self._positions(T, kv_cache)
        x = self.embed_tokens(idx)
        for block in self.layers:
            x = block(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        x = self.norm(x)
        if return_hidden:
            return x[:, -1:] if last_only else x
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x)

    # ----------------------------------------------------------------------------------------------
    # accounting

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters (a tied matrix counted once).  ``non_embedding``: without the token embedding
        and the output head (the scaling-law convention, Kaplan et al.)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in nanochat / PaLM appendix B:
        ``6 · N_matmul + 12 · n_layer · n_head · head_dim · seq_len``, where N_matmul counts every
        matrix a token is multiplied by (blocks + output head, not the embedding lookup) and the
        second term is attention's QKᵀ and AV (without the causal halving)."""
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        n_matmul = self.num_params(non_embedding=True) + c.vocab_size * c.n_embd
        return 6.0 * n_matmul + 12.0 * c.n_layer * c.n_head * c.head_dim * T

    def summary(self, seq_len: int | None = None) -> str:
        """One line for logs: shape, parameter counts and training FLOPs per token."""
        c = self.config
        heads = f"{c.n_head} heads" + (f" ({c.n_kv_head} kv)" if c.n_kv_head != c.n_head else "")
        return (
            f"GPT {c.n_layer} layers × {c.n_embd} wide, {heads} × {c.head_dim}, mlp {c.mlp_hidden}, "
            f"vocab {c.vocab_size}, context {c.block_size}, {'tied' if c.tie_embeddings else 'untied'} "
            f"embeddings: {self.num_params() / 1e6:.2f}M params "
            f"({self.num_params(non_embedding=True) / 1e6:.2f}M non-embedding), "
            f"{self.flops_per_token(seq_len) / 1e6:.1f} MFLOPs/token (train)"
        )
