"""train/loop.py: loss normalisation over the whole accumulated batch (micro-batch 8 × accumulation 1
== 1 × 8 on masked data), the zero-supervision step, and a toy task through ``run_loop`` (metrics,
checkpoint with the iterator's state).  Tiny models, CPU, fp32."""

from __future__ import annotations

import json

import pytest
import torch

from train.loop import LoopSettings, Task, accumulate, run_loop
from train.losses import IGNORE, token_cross_entropy
from train.model import GPT, GPTConfig
from train.parallel import DistInfo

INFO = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _examples(n: int = 8, T: int = 16, vocab: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """n rows whose supervised-token counts differ widely (1 to T): a per-micro-batch mean would
    weight them differently from the global mean."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (n, T), generator=g)
    y = torch.randint(0, vocab, (n, T), generator=g)
    for i in range(n):
        keep = 1 + (i * 5) % T  # 1, 6, 11, 16, 5, ...
        y[i, : T - keep] = IGNORE
    return x, y


class ListBatches:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, micro: int):
        self.x, self.y, self.micro, self.pos = x, y, micro, 0

    def next_batch(self):
        i = self.pos % len(self.x)
        self.pos += self.micro
        return self.x[i : i + self.micro], self.y[i : i + self.micro]

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


def _task(x, y, micro: int) -> Task:
    return Task(
        batches=ListBatches(x, y, micro),
        loss=lambda model, b: token_cross_entropy(model(b[0]), b[1]),
        tokens=lambda b: b[0].numel(),
    )


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_depth(1, 40, 16, n_embd=32, n_head=2))


def _grads(micro: int, accum: int) -> tuple[dict, tuple]:
    x, y = _examples()
    model = _model()
    params = list(model.parameters())
    stats = accumulate(
        model,
        _task(x, y, micro),
        accum,
        autocast=torch.autocast("cpu", enabled=False),
        info=INFO,
        params=params,
    )
    return {k: p.grad.clone() for k, p in model.named_parameters()}, stats


def test_accumulation_equals_one_big_batch_on_masked_data():
    big, big_stats = _grads(8, 1)
    small, small_stats = _grads(1, 8)
    assert big_stats[1] == small_stats[1] == 68  # 1 + 6 + 11 + 16 + 5 + 10 + 15 + 4
    for k in big:
        torch.testing.assert_close(small[k], big[k], atol=1e-6, rtol=1e-5, msg=k)
    # and both are the gradient of the plain global mean
    x, y = _examples()
    model = _model()
    total, n = token_cross_entropy(model(x), y)
    (total / n).backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(big[k], p.grad, atol=1e-6, rtol=1e-5, msg=k)


def test_per_micro_batch_means_would_differ():
    """The data discriminates: averaging each micro-batch's mean (the bug) moves the gradient."""
    x, y = _examples()
    model = _model()
    for i in range(8):
        total, n = token_cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        (total / n / 8).backward()
    naive = {k: p.grad.clone() for k, p in model.named_parameters()}
    right, _ = _grads(8, 1)
    diff = max((naive[k] - right[k]).abs().max().item() for k in right)
    assert diff > 1e-4


def test_no_supervised_token_gives_zero_gradient():
    x, y = _examples()
    y[:] = IGNORE
    model = _model()
    stats = accumulate(
        model, _task(x, y, 4), 2, autocast=torch.autocast("cpu", enabled=False), info=INFO, params=[]
    )
    assert stats[1] == 0 and stats[2] == 8 * 16
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_run_loop_writes_metrics_and_resumable_state(tmp_path):
    x, y = _examples()
    settings = LoopSettings(
        max_steps=4,
        accum=2,
        lr=1e-2,
        warmup=1,
        schedule="cosine",
        min_lr_ratio=0.1,
        cooldown=0.2,
        weight_decay=0.0,
        beta1=0.9,
        beta2=0.95,
        grad_clip=1.0,
        eval_every=2,
        save_every=2,
        progress=False,
    )
    task = _task(x, y, 2)
    task.evaluate = lambda model: {"val_loss": 1.0}
    task.supervised = True
    model = _model()
    code = run_loop(
        model, task, settings, out=tmp_path, info=INFO, dtype=torch.float32, meta={}, tokenizer_dir=None
    )
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0] == {"step": 0, "tokens": 0, "supervised_tokens": 0, "val_loss": 1.0}
    assert rows[4]["tokens"] == 4 * 2 * 2 * 16 and "train_loss" in rows[4] and "val_loss" in rows[4]
    ts = torch.load(tmp_path / "checkpoints/step-00000004/trainer.pt", weights_only=True)
    assert ts["data"] == {"pos": 16} and ts["supervised_tokens"] == rows[4]["supervised_tokens"]


def test_write_samples_replaces_the_rows_of_this_step_and_later(tmp_path):
    """samples.jsonl after a resumed end, or a run continued with more steps: earlier ends' rows stay,
    the rows of this step (a rerun of the same end) and later are replaced, a torn line is dropped."""
    from train.loop import SAMPLES_FILE, write_samples

    write_samples(tmp_path, 10, [{"prompt": "a", "completion": "x"}])
    write_samples(tmp_path, 20, [{"prompt": "a", "completion": "y"}])
    with (tmp_path / SAMPLES_FILE).open("a") as f:
        f.write('{"step": 30, "prom')  # torn by a crash
    write_samples(tmp_path, 20, [{"prompt": "a", "completion": "z"}, {"prompt": "b", "completion": "w"}])
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert [(r["step"], r["completion"]) for r in rows] == [(10, "x"), (20, "z"), (20, "w")]


def test_epoch_order_is_a_seeded_permutation_per_epoch_and_seeks():
    """The post-training iterators' data order: epoch e is default_rng([*key, e])'s permutation, and
    a seek to (epoch, position) continues the same sequence (what resume relies on)."""
    import numpy as np

    from train.loop import EpochOrder

    order = EpochOrder(5, 7, 0)
    got = [order.next() for _ in range(12)]
    expected = [int(i) for e in range(3) for i in np.random.default_rng([7, 0, e]).permutation(5)][:12]
    assert got == expected and (order.epoch, order.position) == (2, 2)
    again = EpochOrder(5, 7, 0)
    again.seek(2, 2)
    assert [again.next() for _ in range(6)] == [order.next() for _ in range(6)]
