"""train/model.py: shapes, the depth dial, causality, learning, KV cache equality, accounting."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from train.losses import token_cross_entropy  # noqa: E402
from train.model import GPT, GPTConfig, KVCache  # noqa: E402
from train.pretrain import param_groups  # noqa: E402

V = 101


def tiny(**overrides) -> GPTConfig:
    fields = dict(n_embd=64, n_head=4, mlp_hidden=96, block_size=48)
    fields.update(overrides)
    return GPTConfig.from_depth(2, V, **fields)


def model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**overrides)).eval()


def test_shapes_and_loss_ignores_minus_100():
    m = model()
    idx = torch.randint(0, V, (3, 17))
    logits = m(idx)
    assert logits.shape == (3, 17, V)
    targets = torch.randint(0, V, (3, 17))
    total, n = token_cross_entropy(logits, targets)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    assert n.item() == 3 * 17
    torch.testing.assert_close(total / n, expected)
    # ignored targets do not count: the sum over the kept half equals the sum of just that half
    masked = targets.clone()
    masked[:, 8:] = -100
    total_masked, n_masked = token_cross_entropy(logits, masked)
    kept = torch.nn.functional.cross_entropy(
        logits[:, :8].reshape(-1, V), targets[:, :8].reshape(-1), reduction="sum"
    )
    assert n_masked.item() == 3 * 8
    torch.testing.assert_close(total_masked, kept)
    last = m(idx, last_only=True)
    torch.testing.assert_close(last[:, 0], logits[:, -1])


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_packed_documents_compute_what_each_computes_alone(n_kv_head):
    """doc_ids: attention stays inside each document and positions restart, so the logits of a
    packed window equal those of every document run alone."""
    m = model(n_kv_head=n_kv_head)
    lengths = [[5, 9, 3, 7], [24]]
    rows = [torch.randint(0, V, (sum(ls),)) for ls in lengths]
    idx = torch.stack(rows)
    doc_ids = torch.stack([torch.cat([torch.full((n,), d) for d, n in enumerate(ls)]) for ls in lengths])
    packed = m(idx, doc_ids=doc_ids)
    for r, ls in enumerate(lengths):
        start = 0
        for n in ls:
            alone = m(rows[r][start : start + n][None])
            torch.testing.assert_close(packed[r, start : start + n], alone[0], atol=1e-5, rtol=1e-5)
            start += n
    # one document per row is plain causal attention
    torch.testing.assert_close(m(idx[1:], doc_ids=torch.zeros(1, 24, dtype=torch.long)), m(idx[1:]))
    with pytest.raises(ValueError, match="KV cache"):
        m(idx, doc_ids=doc_ids, kv_cache=KVCache(m.config, 2, 30))


def test_too_long_sequence_is_refused():
    m = model()
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 49, dtype=torch.long))


def test_depth_dial_derives_sizes_and_lr():
    c = GPTConfig.from_depth(12, 32768)
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.head_dim) == (12, 768, 12, 12, 64)
    assert c.mlp_hidden == 2048 and c.mlp_hidden % 64 == 0
    wide = GPTConfig.from_depth(20, 32768)
    assert (wide.n_embd, wide.head_dim) == (1280, 128)
    assert wide.peak_lr() < c.peak_lr() <= GPTConfig.from_depth(4, 32768).peak_lr()
    assert c.peak_lr() == pytest.approx(6e-4)
    assert GPTConfig.from_depth(1, 100).peak_lr() <= 3e-3
    gqa = GPTConfig.from_depth(8, 1000, n_kv_head=2, tie_embeddings=False, block_size=256)
    assert (gqa.n_head, gqa.n_kv_head, gqa.tie_embeddings, gqa.block_size) == (8, 2, False, 256)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_head": 3}, "multiple of n_head"),
        ({"n_kv_head": 3}, "multiple of n_kv_head"),
        ({"bogus": 1}, "unknown GPTConfig"),
        ({"n_embd": 100}, "multiple of 64"),
        ({"norm_eps": 0.0}, "must be > 0"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig.from_depth(2, V, **overrides)


def test_causality_future_tokens_never_change_past_logits():
    m = model()
    idx = torch.randint(0, V, (2, 24))
    changed = idx.clone()
    changed[:, 15:] = (changed[:, 15:] + 7) % V
    a = m(idx)
    b = m(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=0, atol=1e-6)
    assert (a[:, 15:] - b[:, 15:]).abs().max() > 1e-3  # the changed positions do change


def test_loss_falls_with_adamw_on_a_fixed_batch():
    torch.manual_seed(0)
    m = GPT(tiny()).train()
    idx = torch.randint(0, V, (4, 33))
    opt = torch.optim.AdamW(param_groups(m, 0.1), lr=3e-3)
    losses = []
    for _ in range(15):
        total, n = token_cross_entropy(m(idx[:, :-1]), idx[:, 1:])
        loss = total / n
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(float(V))).item(), rel=0.1)  # ~uniform at init
    assert losses[-1] < 0.6 * losses[0]


def test_tied_and_untied_embeddings():
    tied, untied = model(), model(tie_embeddings=False)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert untied.num_params() - tied.num_params() == V * 64
    assert tied.num_params(non_embedding=True) == untied.num_params(non_embedding=True)
    assert "lm_head.weight" in tied.state_dict()  # both names present: the exporter dedups


def test_init_scales_residual_projections():
    m = GPT(GPTConfig.from_depth(8, 512, n_embd=256, block_size=32))
    std = m.layers[0].self_attn.q_proj.weight.std().item()
    resid = m.layers[0].mlp.down_proj.weight.std().item()
    assert std == pytest.approx(0.02, rel=0.05)
    assert resid == pytest.approx(0.02 / 4, rel=0.05)  # 1/sqrt(2 * 8 layers)
    assert torch.all(m.norm.weight == 1)


def test_param_count_and_flops_formula():
    m = model(tie_embeddings=False)
    c = m.config
    per_layer = 2 * c.n_embd + c.n_embd * c.head_dim * (2 * c.n_head + 2 * c.n_kv_head) + 3 * c.n_embd * 96
    assert m.num_params(non_embedding=True) == c.n_layer * per_layer + c.n_embd
    assert m.num_params() == m.num_params(non_embedding=True) + 2 * V * c.n_embd
    n_matmul = m.num_params(non_embedding=True) + V * c.n_embd
    attention = 12 * c.n_layer * c.n_head * c.head_dim * 32
    assert m.flops_per_token(32) == 6 * n_matmul + attention
    assert m.flops_per_token() == 6 * n_matmul + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size
    line = m.summary()
    assert "M params" in line and "MFLOPs/token" in line and "untied" in line


def _decode_with_cache(m: GPT, idx: torch.Tensor, prefill: int, pad: torch.Tensor | None = None):
    cache = KVCache(m.config, idx.shape[0], idx.shape[1], pad=pad)
    outs = [m(idx[:, :prefill], kv_cache=cache)]
    for t in range(prefill, idx.shape[1]):
        outs.append(m(idx[:, t : t + 1], kv_cache=cache))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
def test_kv_cache_logits_equal_full_forward(n_kv_head):
    m = model(n_kv_head=n_kv_head)
    idx = torch.randint(0, V, (3, 30))
    full = m(idx)
    with torch.no_grad():
        torch.testing.assert_close(_decode_with_cache(m, idx, 11), full, rtol=0, atol=1e-5)
        # a multi-token chunk after the prefill (slot > 0, T > 1) takes the explicit-mask path
        cache = KVCache(m.config, 3, 30)
        a = m(idx[:, :10], kv_cache=cache)
        b = m(idx[:, 10:30], kv_cache=cache)
    torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_kv_cache_left_padded_batch_equals_each_prompt_alone(n_kv_head):
    m = model(n_kv_head=n_kv_head)
    lengths = [20, 13, 6]
    prompts = [torch.randint(0, V, (n,)) for n in lengths]
    longest, new = max(lengths), 8
    pad = torch.tensor([longest - n for n in lengths])
    batch = torch.full((3, longest + new), 0, dtype=torch.long)
    continuation = torch.randint(0, V, (3, new))
    for i, p in enumerate(prompts):
        batch[i, pad[i] : longest] = p
    batch[:, longest:] = continuation
    with torch.no_grad():
        got = _decode_with_cache(m, batch, longest, pad=pad)
        for i, p in enumerate(prompts):
            alone = m(torch.cat([p, continuation[i]])[None])
            torch.testing.assert_close(got[i, pad[i] :], alone[0], rtol=0, atol=1e-5)
            assert torch.isfinite(got[i]).all()  # pad rows too: no NaN from fully masked rows


def test_kv_cache_reorder_and_overflow():
    m = model()
    idx = torch.randint(0, V, (2, 10))
    cache = KVCache(m.config, 2, 12)
    with torch.no_grad():
        m(idx, kv_cache=cache)
        cache.reorder(torch.tensor([1, 1]))
        nxt = torch.tensor([[5], [5]])
        a = m(nxt, kv_cache=cache)
        full = m(torch.cat([idx[1:], nxt[:1]], 1))
    torch.testing.assert_close(a[0, -1], full[0, -1], rtol=0, atol=1e-5)
    torch.testing.assert_close(a[1, -1], full[0, -1], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="KV cache full"):
        m(torch.zeros(2, 2, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        KVCache(m.config, 1, 49)


def test_bf16_autocast_forward_backward():
    m = model().train()
    idx = torch.randint(0, V, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(idx)
        total, n = token_cross_entropy(logits, idx)
        loss = total / n
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.parameters())
