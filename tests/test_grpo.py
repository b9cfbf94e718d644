"""``winnow train grpo`` and ``train.tasks``: group advantages and each loss normalisation by hand,
the arithmetic task (deterministic, disjoint validation, the last number judged), user verifiers
(from a .py path and a dotted module; their errors scored 0 and counted; import and signature errors
exit 2), every parameter moving in one step, bit-identical resume, the refusals (reward checkpoint,
bad rows, missing prompts), and ``winnow generate`` on the result.  Tiny random policy with a
byte-level chat tokenizer; CPU, fp32, one thread."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from test_sft import metrics, write_jsonl
from tinygpt import byte_tokenizer_dir, tiny_gpt

from pipeline.cli import main as winnow
from train.checkpoint import load_checkpoint, save_checkpoint
from train.loop import UsageError
from train.losses import group_advantages, grpo_loss
from train.tasks import Item, Verifier, arithmetic_items, arithmetic_reward, load_verifier, sft_rows

FLAGS = [
    "--micro-batch",
    2,
    "--num-generations",
    4,
    "--max-new-tokens",
    6,
    "--dtype",
    "fp32",
    "--no-progress",
]
VERIFIER = '''
def score(prompt, completion):
    """A reward that varies between samples of a random policy (so advantages are not all 0)."""
    return float(sum(map(ord, completion)) % 5)


def fragile(prompt, completion):
    if sum(map(ord, completion)) % 3 == 0:
        raise RuntimeError("cannot judge this one")
    return 1.0


def with_item(prompt, completion, item=None):
    return float(item["target"] in completion)


def one_arg(prompt):
    return 0.0
'''


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    """A tiny chat-capable checkpoint (random weights, byte tokenizer with the chat tokens)."""
    tmp = tmp_path_factory.mktemp("grpo")
    tok = byte_tokenizer_dir(tmp / "tok")
    model = tiny_gpt(vocab_size=262, seed=0, block_size=64)
    meta = {"kind": "sft", "tokens": 0}
    return save_checkpoint(tmp / "sft", 5, model, tokenizer_dir=tok, meta=meta, trainer_state=None)


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> tuple[Path, Path]:
    """(verifier .py file, prompts file)."""
    tmp = tmp_path_factory.mktemp("grpo_items")
    (tmp / "myverifier.py").write_text(VERIFIER)
    rows = [{"prompt": f"Say {w}.", "target": w} for w in ("a", "b", "c", "d", "e", "f", "g", "h")]
    return tmp / "myverifier.py", write_jsonl(tmp / "prompts.jsonl", rows)


def grpo(*argv) -> int:
    return winnow(["train", "grpo", *map(str, argv)])


def weights(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


# --------------------------------------------------------------------------------------------------
# advantages and losses by hand


def test_group_advantages_by_hand_and_zero_std_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # two groups of 4
    adv, zero = group_advantages(rewards, 4, scale="group", eps=1e-4)
    std = math.sqrt(((0.5**2) * 4) / 3)  # unbiased std of (1, 0, 0, 1): 0.5774
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0, 0]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=0, atol=1e-6)
    assert zero.tolist() == [False, True]  # all-equal rewards: advantages exactly 0, counted
    adv, _ = group_advantages(rewards, 4, scale="none")  # Dr. GRPO: mean-centred only
    assert adv.tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)


def test_each_loss_normalisation_equals_a_hand_computed_two_sequence_example():
    # sequence 0: 2 completion tokens, advantage +1; sequence 1: 4 tokens, advantage -0.5
    logp = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-0.5, -0.5, -1.0, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -0.5])
    # on-policy: ratio 1, each token's loss is -A (value); gradient -A per token
    token_loss = {"token": (-1 * 2 + 0.5 * 4, 6), "sequence": (-1.0 + 0.5, 2), "dr_grpo": ((-2 + 2) / 10, 2)}
    grad_per_token = {"token": (-1.0, 0.5), "sequence": (-1 / 2, 0.5 / 4), "dr_grpo": (-1 / 10, 0.5 / 10)}
    for loss_type, (total, n) in token_loss.items():
        logp.grad = None
        s, count = grpo_loss(logp, adv, mask, loss_type=loss_type, max_completion_length=10)
        assert s.item() == pytest.approx(total) and float(count) == n
        s.backward()
        g0, g1 = grad_per_token[loss_type]
        expected = torch.tensor([[g0, g0, 0, 0], [g1, g1, g1, g1]])
        torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-7)
    # the length bias in numbers: per token, `sequence` weighs the 2-token answer 4x the 4-token one
    # (|-1/2| vs |0.5/4|); `token` weighs each token by its advantage only
    # beta > 0 adds beta * k3, which is 0 where policy == reference
    s, _ = grpo_loss(logp, adv, mask, loss_type="token", ref_logp=logp.detach(), beta=0.5)
    assert s.item() == pytest.approx(0.0)
    # off-policy ratio: PPO's clip binds outside 1 ± eps
    old = logp.detach() + 1.0  # ratio e^-1 = 0.37 < 0.8: for A > 0 the clipped term 0.8·A is the min
    s, _ = grpo_loss(logp, adv, mask, loss_type="token", old_logp=old)
    r = math.exp(-1)
    assert s.item() == pytest.approx(-(2 * r * 1.0) - 4 * (-0.5 * 0.8))


# --------------------------------------------------------------------------------------------------
# tasks


def test_arithmetic_items_are_deterministic_disjoint_and_judged_by_the_last_number():
    train, val = arithmetic_items(seed=3, digits=1, val_size=20)
    assert len(train) == 80 and len(val) == 20
    assert {i.prompt for i in train}.isdisjoint(i.prompt for i in val)
    again, _ = arithmetic_items(seed=3, digits=1, val_size=20)
    assert [i.prompt for i in again] == [i.prompt for i in train]
    other, _ = arithmetic_items(seed=4, digits=1, val_size=20)
    assert [i.prompt for i in other] != [i.prompt for i in train]
    assert arithmetic_reward("What is 23 + 58?", "81") == 1.0
    assert arithmetic_reward("What is 23 + 58?", "It is 80, no, 81") == 1.0
    assert arithmetic_reward("What is 23 + 58?", "81, or 80") == 0.0
    assert arithmetic_reward("What is 23 + 58?", "no idea") == 0.0
    train21, val21 = arithmetic_items(seed=3, digits="2,1", val_size=100)  # A of 2 digits, B of 1
    assert len(train21) + len(val21) == 1000 and all(len(i.prompt.split(" + ")[1]) == 2 for i in train21)
    with pytest.raises(UsageError, match="D1,D2"):
        arithmetic_items(seed=3, digits="2,x", val_size=10)
    rows = sft_rows(seed=3, digits=1, val_size=20, n=50)
    assert all(arithmetic_reward(r["prompt"], r["response"]) == 1.0 for r in rows)
    assert {r["prompt"] for r in rows}.isdisjoint(i.prompt for i in val)  # SFT never sees validation
    hedged = sft_rows(seed=3, digits=1, val_size=20, n=80, hedge=0.5)  # a second, wrong guess: scored 0
    scores = [arithmetic_reward(r["prompt"], r["response"]) for r in hedged]
    assert 20 < scores.count(0.0) < 60 and all((s == 0.0) == (", or maybe" in r["response"])
                                                for s, r in zip(scores, hedged, strict=True))  # fmt: skip


def test_user_verifier_errors_score_zero_and_are_counted(items):
    path, _ = items
    fn, takes_item = load_verifier(f"{path}:fragile")
    logged = []
    v = Verifier(fn, takes_item=takes_item, log=logged.append)
    it = Item([{"role": "user", "content": "x"}], "x", {})
    scores = [v(it, c) for c in ("\x00", "\x01", "\x03")]  # ord sums 0, 1, 3: two raise
    assert scores == [0.0, 1.0, 0.0] and v.errors == 2 and len(logged) == 1  # logged once per kind
    v = Verifier(lambda p, c: "high", log=logged.append)
    assert v(it, "a") == 0.0 and v.errors == 1
    v = Verifier(lambda p, c: float("nan"))
    assert v(it, "a") == 0.0 and v.errors == 1
    fn, takes_item = load_verifier(f"{path}:with_item")
    assert takes_item and Verifier(fn, takes_item=True)(Item([], "p", {"target": "b"}), "abc") == 1.0


def test_bad_verifiers_are_usage_errors(items, tmp_path, capsys, policy):
    path, prompts = items
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n")
    cases = [
        (f"{path}:one_arg", "must take (prompt: str, completion: str)"),
        (f"{path}:missing", "has no attribute 'missing'"),
        (f"{tmp_path / 'broken.py'}:f", "importing the file failed: ModuleNotFoundError"),
        ("no_such_pkg_abc.mod:f", "cannot import module"),
        (f"{tmp_path / 'nope.py'}:f", "no such file"),
        ("justaname", "expected 'arithmetic' or MODULE:FUNCTION"),
    ]
    for spec, msg in cases:
        out = tmp_path / f"o{abs(hash(spec))}"
        assert grpo("--policy", policy, "--task", spec, "--prompts", prompts, "--out", out, *FLAGS) == 2
        assert msg in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# training runs


@pytest.mark.parametrize(
    "variant", [[], ["--loss-type", "sequence"], ["--loss-type", "dr_grpo", "--scale-rewards", "none"]]
)
def test_one_step_at_a_large_lr_changes_every_parameter(policy, items, tmp_path, variant):
    path, prompts = items
    out = tmp_path / "run"
    argv = [
        "--policy",
        policy,
        "--task",
        f"{path}:score",
        "--prompts",
        prompts,
        "--out",
        out,
        *FLAGS,
        *variant,
    ]
    assert grpo(*argv, "--max-steps", 1, "--lr", 0.05, "--eval-every", 0) == 0
    before, after = weights(policy), weights(out)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    row = metrics(out, timing=True)[-1]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "entropy",
                "timing/generation_s", "timing/training_s", "grad_norm"):  # fmt: skip
        assert key in row, key
    assert row["frac_reward_zero_std"] < 1 and row["grad_norm"] > 0
    # on-policy with group-normalised advantages the loss is ~0 while the gradient is not
    assert abs(row["train_loss"]) < 0.5
    config = json.loads((out / "checkpoints" / "latest").parent.joinpath(
        (out / "checkpoints" / "latest").read_text().strip(), "config.json").read_text())  # fmt: skip
    assert config["kind"] == "grpo" and config["parent"]["path"] == str(policy)
    assert config["parent"]["kind"] == "sft" and config["data"]["task"].endswith("myverifier.py:score")


def test_resume_is_bit_identical(policy, items, tmp_path):
    path, prompts = items
    task = ["--policy", policy, "--task", f"{path}:score", "--prompts", prompts, "--val-fraction", 0.25]
    common = [*task, *FLAGS, "--max-steps", 4, "--eval-every", 2, "--lr", 0.01, "--beta", 0.1]
    assert grpo(*common, "--out", tmp_path / "full") == 0
    assert grpo(*common, "--out", tmp_path / "part", "--stop-after", 2) == 0
    assert grpo("--out", tmp_path / "part", "--resume", "--no-progress", "--dtype", "fp32") == 0
    full, part = metrics(tmp_path / "full"), metrics(tmp_path / "part")
    assert [r["step"] for r in full] == [0, 1, 2, 3, 4] and "val_accuracy" in full[0] and "kl" in full[1]
    assert full == part
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the final policy's greedy completions with their rewards (winnow report), the same after a resume
    samples = (tmp_path / "full" / "samples.jsonl").read_text()
    assert samples == (tmp_path / "part" / "samples.jsonl").read_text()
    rows = [json.loads(line) for line in samples.splitlines()]
    assert rows and all(r["step"] == 4 and isinstance(r["reward"], float) for r in rows)


def test_dotted_module_verifier_and_generate_accepts_the_checkpoint(
    policy, items, tmp_path, monkeypatch, capsys
):
    _, prompts = items
    pkg = tmp_path / "verifiers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fragile_mod.py").write_text(VERIFIER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    out = tmp_path / "run"
    argv = ["--policy", policy, "--task", "verifiers.fragile_mod:fragile", "--prompts", prompts, "--out", out]
    try:
        assert grpo(*argv, *FLAGS, "--max-steps", 1, "--eval-every", 0) == 0
    finally:
        for name in [m for m in sys.modules if m.startswith("verifiers")]:
            del sys.modules[name]
    row = metrics(out)[-1]
    assert row["reward_errors"] > 0  # the verifier raised on some completions; the run went on
    capsys.readouterr()
    code = winnow(["generate", "--checkpoint", str(out), "--chat", "--prompt", "hi", "--max-new-tokens", "3",
                   "--json"])  # fmt: skip
    assert code == 0 and "token_ids" in json.loads(capsys.readouterr().out)


def test_refusals_exit_2_with_a_clear_message(policy, items, tmp_path, capsys):
    path, prompts = items
    task = f"{path}:score"
    rm = tiny_gpt(vocab_size=262, block_size=64)
    meta = {"kind": "reward", "tokens": 0}
    reward_ckpt = save_checkpoint(tmp_path / "rm", 1, rm, tokenizer_dir=None, meta=meta, trainer_state=None)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": ["x"]}])
    cases = [
        (["--policy", reward_ckpt, "--task", task, "--prompts", prompts], "is a reward model"),
        (["--policy", policy, "--task", task], "--prompts FILE.jsonl is required"),
        (["--policy", policy, "--task", task, "--prompts", bad], f"{bad}:2: field `prompt` must be a string"),
        (["--policy", policy, "--task", task, "--prompts", tmp_path / "none.jsonl"], "no such file"),
        (["--policy", policy], "--task is required"),
        (
            ["--policy", policy, "--task", "arithmetic", "--val-fraction", 0.1],
            "makes its own held-back items",
        ),
        (["--policy", tmp_path / "nothing", "--task", "arithmetic"], "--policy: checkpoint path"),
        # last flag wins: after FLAGS' --num-generations 4
        (
            ["--policy", policy, "--task", task, "--prompts", prompts, "@", "--num-generations", 1],
            "must be >= 2",
        ),
    ]
    for i, (argv, msg) in enumerate(cases):
        cut = argv.index("@") if "@" in argv else len(argv)
        assert grpo(*argv[:cut], "--out", tmp_path / f"o{i}", *FLAGS, *argv[cut + 1 :]) == 2, msg
        err = capsys.readouterr().err
        assert "winnow train grpo: error:" in err and msg in err, (msg, err)


def test_arithmetic_task_runs_and_reports_val_accuracy(policy, tmp_path):
    out = tmp_path / "arith"
    argv = ["--policy", policy, "--task", "arithmetic", "--digits", 1, "--val-size", 6, "--out", out, *FLAGS]
    assert grpo(*argv, "--max-steps", 1, "--eval-every", 1) == 0
    rows = metrics(out)
    assert rows[0]["step"] == 0 and 0 <= rows[0]["val_accuracy"] <= 1
    assert rows[1]["reward"] == 0.0 and rows[1]["frac_reward_zero_std"] == 1.0  # a random policy never adds
    assert json.loads(json.dumps(rows[1]))["train_loss"] == 0.0  # all groups zero-std: no gradient at all
