"""``winnow train reward`` and the shared preference rows (``train/preference.py``): row formats
and their errors, the HH transcript form, the score read at the last real token (padding and batch
partner never move it), the Bradley–Terry loss by hand, val_accuracy, learning, lineage, exact
resume and the score normalisation.  A tiny pretrained base (test_sft's fixture); CPU, fp32."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest
import torch
from test_sft import base, metrics, write_jsonl  # noqa: F401 (base is a fixture)
from train_fixtures import WORDS

from pipeline.cli import main as winnow
from train.data import DataError
from train.loop import TIMING_KEYS
from train.model import GPTConfig
from train.preference import Pair, collate_pairs, read_pairs, render_pairs, row_pair
from train.reward import RewardModel, bradley_terry, make_evaluate, wilson

PREFERENCE_DEV = Path("/work/shared/data/preference_dev.jsonl.gz")
FLAGS = ["--micro-batch", 2, "--dtype", "fp32", "--no-progress", "--lr", 3e-3]


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bright_pairs(n: int, seed: int = 0) -> list[dict]:
    """A toy preference: the chosen reply ends with "bright", the rejected one with "cold"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
        rows.append(
            {"prompt": "describe: " + words, "chosen": words + " bright", "rejected": words + " cold"}
        )
    return rows


def reward(*argv) -> int:
    return winnow(["train", "reward", *map(str, argv)])


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("pref") / "bright.jsonl.gz", bright_pairs(60))


# --------------------------------------------------------------------------------------------------
# rows


def test_row_forms_string_messages_and_one_message_replies():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert row_pair({"prompt": "q", "chosen": "a", "rejected": "b"}, "f:1") == Pair(
        [{"role": "user", "content": "q"}], "a", "b"
    )
    row = {"prompt": msgs, "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b", "margin": 2}
    assert row_pair(row, "f:1") == Pair(msgs, "a", "b", 2.0)


def test_hh_transcripts_split_into_messages():
    row = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: why?\n\nAssistant: because",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: why?\n\nAssistant: no",
    }
    p = row_pair(row, "f:1")
    assert p.prompt == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "why?"},
    ]
    assert (p.chosen, p.rejected) == ("because", "no")


@pytest.mark.skipif(not PREFERENCE_DEV.is_file(), reason="shared preference_dev not present")
def test_hh_raw_transcripts_of_preference_dev_match_its_parsed_fields():
    """Every row's ``chosen_raw``/``rejected_raw`` parse to its own ``prompt``/``chosen``/``rejected``."""
    with gzip.open(PREFERENCE_DEV, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    mismatches = 0
    for n, r in enumerate(rows, 1):
        raw = row_pair({"chosen": r["chosen_raw"], "rejected": r["rejected_raw"]}, f"dev:{n}")
        mismatches += raw != row_pair(r, f"dev:{n}")
    assert len(rows) == 2303 and mismatches == 0


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"prompt": "a", "chosen": "b", "rejected": "c"}, "{oops"], ":2: not JSON"),
        (
            [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}],
            ":2: field `rejected`",
        ),
        (
            [{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "b", "rejected": "c"}],
            ":1: field `prompt`",
        ),
        (
            [{"prompt": [{"role": "bot", "content": "x"}], "chosen": "b", "rejected": "c"}],
            ":1: field `prompt`",
        ),
        ([{"prompt": "a", "chosen": "b", "rejected": "c", "margin": "big"}], ":1: field `margin`"),
        (
            [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: c"}],
            ":1: fields",
        ),
        ([{"chosen": "plain text", "rejected": "\n\nHuman: a\n\nAssistant: c"}], ":1: field `chosen`"),
        ([{"text": "nothing"}], ":1: unknown row format"),
        ([], "no rows"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message) as err:
        read_pairs(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------------
# the score


def tiny_reward_model(seed: int = 0) -> RewardModel:
    torch.manual_seed(seed)
    model = RewardModel(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_kv_head=2, n_embd=32))
    return model.eval()


def test_score_reads_the_last_real_token_whatever_the_padding_and_partner():
    model = tiny_reward_model()
    seq = torch.tensor([[5, 9, 3, 17, 2, 8]])
    alone = model.raw_scores(seq, torch.tensor([5]))
    for pad in (1, 7, 20):
        padded = torch.cat([seq, torch.zeros(1, pad, dtype=torch.long)], dim=1)
        assert torch.equal(model.raw_scores(padded, torch.tensor([5])), alone)
    partner = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    batch = torch.cat([torch.cat([seq, torch.zeros(1, 6, dtype=torch.long)], dim=1), partner])
    scores = model.raw_scores(batch, torch.tensor([5, 11]))
    assert torch.equal(scores[:1], alone)
    # and the position is the one read: the score of a prefix is the score read at its end
    assert torch.equal(
        model.raw_scores(seq[:, :4], torch.tensor([3])), model.raw_scores(seq, torch.tensor([3]))
    )


def test_bradley_terry_against_a_hand_computation():
    rc, rr = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.2, 0.5, 2.0])
    total, n = bradley_terry(rc, rr, 0.3)
    hand = sum(math.log1p(math.exp(-(c - r - 0.3))) for c, r in [(1.0, 0.2), (-0.5, 0.5), (2.0, 2.0)])
    assert n.item() == 3 and total.item() == pytest.approx(hand, rel=1e-6)
    per_row, _ = bradley_terry(rc, rr, torch.tensor([0.0, 1.0, 0.0]))
    hand = math.log1p(math.exp(-0.8)) + math.log1p(math.exp(2.0)) + math.log(2)
    assert per_row.item() == pytest.approx(hand, rel=1e-6)


class _SumModel(torch.nn.Module):
    """A stand-in reward model: the score is the last real token's id."""

    def raw_scores(self, ids, last):
        return ids[torch.arange(ids.shape[0]), last].float()


def test_val_accuracy_is_pairwise_and_strict(tmp_path):
    from train_fixtures import make_tokenizer, sentences

    from tokenizer import Tokenizer
    from train.parallel import DistInfo

    tok = Tokenizer.from_dir(make_tokenizer(tmp_path / "tok", sentences(40), 300))
    pairs = [Pair([{"role": "user", "content": "q"}], c, r) for c, r in [("a", "b"), ("b", "a"), ("c", "c")]]
    ex = render_pairs(tok, pairs, 64)
    # the score of a row is its <|end|> id: equal for every row, so every pair ties; then make the
    # chosen row of pair 0 higher by reading one token earlier (its reply's token id)
    evaluate = make_evaluate(
        ex, micro_batch=2, pad_id=tok.pad_id, margin=0.0, device=torch.device("cpu"),
        autocast=torch.autocast("cpu", enabled=False), info=DistInfo(0, 0, 1, torch.device("cpu")),
    )  # fmt: skip
    got = evaluate(_SumModel())
    assert got["val_accuracy"] == 0.0 and got["val_loss"] == pytest.approx(math.log(2))
    ids_a, ids_b = tok.encode_ordinary("a")[-1], tok.encode_ordinary("b")[-1]

    class _ReplyModel(_SumModel):
        def raw_scores(self, ids, last):
            return super().raw_scores(ids, last - 1)

    got = evaluate(_ReplyModel())
    expected = (int(ids_a > ids_b) + int(ids_b > ids_a) + 0) / 3  # one of the two differs; the tie fails
    assert got["val_accuracy"] == pytest.approx(expected)
    low, high = wilson(1, 3)
    assert (got["val_accuracy_low"], got["val_accuracy_high"]) == pytest.approx((low, high))
    assert 0 < low < 1 / 3 < high < 1


def test_collate_puts_chosen_rows_first_and_masks_only_the_final_reply(base):  # noqa: F811
    from tokenizer import Tokenizer

    tok = Tokenizer.from_dir(base[0] / "tokenizer")
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "earlier"},
              {"role": "user", "content": "more"}]  # fmt: skip
    ex = render_pairs(tok, [Pair(prompt, "yes indeed", "no")], 128)
    b = collate_pairs(ex, [0], tok.pad_id)
    end = tok.special_tokens["<|end|>"]
    for r in (0, 1):
        ids = b.ids[r, : b.last[r] + 1].tolist()
        reply = [i for i, m in zip(ids, b.mask[r].tolist(), strict=False) if m]
        assert reply[-1] == end and tok.decode(reply[:-1]) == ("yes indeed" if r == 0 else "no")
        assert ids[b.last[r]] == end and not b.mask[r, b.last[r] + 1 :].any()


# --------------------------------------------------------------------------------------------------
# the command


def test_reward_learns_records_lineage_and_kind(base, pairs_file, tmp_path):  # noqa: F811
    ckpt = base[0]
    out = tmp_path / "rm"
    argv = ["--base", ckpt, "--data", pairs_file, "--val-fraction", 0.25, "--out", out, *FLAGS]
    assert reward(*argv, "--max-steps", 30, "--eval-every", 15) == 0
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(31))
    assert {"accuracy", "margin", "mean_reward", "train_loss"} <= set(rows[10])
    assert rows[30]["val_accuracy"] >= 0.9 and rows[30]["val_loss"] < rows[0]["val_loss"]
    assert rows[30]["val_accuracy_low"] < rows[30]["val_accuracy"] <= rows[30]["val_accuracy_high"]
    meta = json.loads((out / "checkpoints/step-00000030/config.json").read_text())
    assert meta["kind"] == "reward" and meta["parent"]["path"] == str(ckpt)
    assert meta["data"]["val"] == {"fraction": 0.25, "rows": 15, "seed": 0} and meta["data"]["pairs"] == 45
    state = torch.load(out / "checkpoints/step-00000030/model.pt", weights_only=True)
    assert state["score_head.weight"].shape == (1, 64)
    # a reward model cannot generate: load_model and `winnow generate` say so (exit 2, no traceback)
    from helpers import winnow

    from train.checkpoint import load_model

    with pytest.raises(ValueError, match="is a reward model"):
        load_model(out)
    res = winnow("generate", "--checkpoint", str(out), "--prompt", "hi")
    assert res.returncode == 2 and "is a reward model" in res.stderr and "Traceback" not in res.stderr


def test_resume_reproduces_the_uninterrupted_reward_run(base, pairs_file, tmp_path):  # noqa: F811
    common = ["--base", base[0], "--data", pairs_file, "--val-fraction", 0.2, *FLAGS, "--max-steps", 8,
              "--save-every", 4, "--eval-every", 4, "--keep-checkpoints", 0, "--batch-pairs", 4]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert reward(*common, "--out", a) == 0
    assert reward(*common, "--out", b, "--stop-after", 4) == 0
    assert reward("--out", b, "--resume", "--dtype", "fp32", "--no-progress") == 0
    wa = torch.load(a / "checkpoints/step-00000008/model.pt", weights_only=True)
    wb = torch.load(b / "checkpoints/step-00000008/model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert metrics(a) == metrics(b)


def test_normalize_gives_mean_0_std_1_on_the_calibration_set(base, pairs_file, tmp_path):  # noqa: F811
    from tokenizer import Tokenizer
    from tokenizer.chat import render_conversation
    from train.checkpoint import load_checkpoint
    from train.sft import read_conversations

    calib = write_jsonl(tmp_path / "calib.jsonl", [{"prompt": r["prompt"], "response": r["chosen"]}
                                                   for r in bright_pairs(30, seed=5)])  # fmt: skip
    out = tmp_path / "rm"
    argv = ["--base", base[0], "--data", pairs_file, "--out", out, *FLAGS, "--max-steps", 3]
    assert reward(*argv, "--normalize", calib) == 0
    ck = load_checkpoint(out)
    model = RewardModel(ck["config"])
    model.load_state_dict(ck["state_dict"])
    model.eval()
    tok = Tokenizer.from_dir(ck["dir"] / "tokenizer")
    scores = []
    for conv in read_conversations(calib)[0]:
        ids = render_conversation(tok, conv)[0]
        scores.append(model.score(torch.tensor([ids]), torch.tensor([len(ids) - 1])).item())
    s = torch.tensor(scores, dtype=torch.float64)
    assert s.mean().item() == pytest.approx(0, abs=1e-5) and s.std(correction=0).item() == pytest.approx(
        1, abs=1e-5
    )
    assert ck["meta"]["reward_normalization"]["n"] == 30
    assert torch.load(out / "checkpoints/step-00000003/trainer.pt", weights_only=True)["step"] == 3


def test_metrics_lines_hold_no_timing_surprises(base, pairs_file, tmp_path):  # noqa: F811
    out = tmp_path / "rm"
    assert reward("--base", base[0], "--data", pairs_file, "--out", out, *FLAGS, "--max-steps", 1) == 0
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(TIMING_KEYS) & set(line) and line["step"] == 1
