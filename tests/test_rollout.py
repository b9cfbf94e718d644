"""``train.rollout`` (the RL trainers' sampling and log-probs) and ``train.losses.kl_estimates``:
right-padded packing and its completion mask, log-probs independent of padding and batch partner,
cached == uncached sampling for a seed, stop tokens kept with finish reasons, prompt-file errors, and
the KL estimators against the exact KL of a small categorical distribution.  CPU, fp32, tiny models."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from tinygpt import bigram_gpt, chain_table, tiny_gpt

from train.data import DataError
from train.losses import kl_estimates
from train.rollout import Rollout, read_prompt_rows, read_prompts, sample, token_logprobs

PAD, STOP = 0, 7


# one torch thread: bit-identical sums across runs, and no oversubscription beside Ray workers
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pack_right_pads_and_marks_the_positions_that_predict_completion_tokens():
    r = Rollout([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], ["eot", "length"])
    b = r.pack(pad_id=PAD)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2], [8, 3, 4, 9, PAD]]
    # position t predicts input_ids[t + 1]: row 0's completion (1, 2) is predicted at t = 2, 3
    assert b.completion_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert b.lengths.tolist() == [5, 4] and b.prompt_lengths.tolist() == [3, 1]
    assert b.completion_lengths.tolist() == [2, 3]
    targets = b.input_ids[:, 1:][b.completion_mask.bool()]
    assert targets.tolist() == [1, 2, 3, 4, 9]


def test_logprobs_of_a_row_do_not_depend_on_padding_or_the_batch_partner():
    model = tiny_gpt(seed=1)
    g = torch.Generator().manual_seed(0)
    row_p, row_c = torch.randint(1, 100, (9,), generator=g).tolist(), torch.randint(1, 100, (6,), generator=g)
    alone = Rollout([row_p], [row_c.tolist()]).pack(PAD)
    partners = [([3, 4], [5]), (torch.randint(1, 100, (30,), generator=g).tolist(), [1, 2, 3, 4, 5, 6, 7, 8])]
    with torch.no_grad():
        ref = token_logprobs(model, alone)[0]
        for p, c in partners:
            for order in (0, 1):
                rows = [(row_p, row_c.tolist()), (p, c)][:: 1 - 2 * order]
                batch = Rollout([r[0] for r in rows], [r[1] for r in rows]).pack(PAD)
                got = token_logprobs(model, batch)[order]
                n = len(ref)
                # right padding: the same values at every real position, up to the last bits of
                # fp32 (a wider matmul splits its work differently: measured <= 4.8e-7)
                torch.testing.assert_close(got[:n], ref, rtol=0, atol=2e-6)
                mask = batch.completion_mask[order].bool()
                assert mask.sum() == len(row_c) and mask[: len(row_p) - 1].sum() == 0


def test_entropy_and_hidden_come_from_the_same_forward():
    model = tiny_gpt(seed=2)
    batch = Rollout([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]]).pack(PAD)
    with torch.no_grad():
        logp = token_logprobs(model, batch)
        logp2, entropy, hidden = token_logprobs(model, batch, return_entropy=True, return_hidden=True)
        logits = model(batch.input_ids[:, :-1]).float()
    torch.testing.assert_close(logp2, logp, rtol=0, atol=1e-6)
    assert hidden.shape == (2, 4, model.config.n_embd)  # L = 5: L - 1 positions
    p = logits.softmax(-1)
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1), rtol=1e-5, atol=1e-5)
    _, entropy_only, no_hidden = token_logprobs(model, batch, return_entropy=True)
    assert no_hidden is None and entropy_only.shape == (2, 4)


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 20)])
def test_cached_and_uncached_sampling_draw_the_same_tokens_for_a_seed(temperature, top_k):
    model = tiny_gpt(seed=3)
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(1234)
        runs.append(sample(model, PAD, prompts, max_new_tokens=12, temperature=temperature, top_k=top_k,
                           generator=g, stop_ids=[STOP], use_cache=use_cache))  # fmt: skip
    assert runs[0].completion_ids == runs[1].completion_ids
    assert runs[0].finish_reasons == runs[1].finish_reasons
    assert runs[0].prompt_ids == prompts
    # another seed draws other tokens (the generator is used)
    g = torch.Generator().manual_seed(99)
    other = sample(model, PAD, prompts, max_new_tokens=12, generator=g, stop_ids=[STOP])
    assert other.completion_ids != runs[0].completion_ids


def test_a_completion_keeps_its_stop_token_and_reports_why_it_ended():
    # a bigram model that walks 1 → 2 → STOP and 3 → 4 → 5 → 6 → 3 → ..., never stopping
    table = chain_table(16, [1, 2, STOP])
    table[3, 4] = table[4, 5] = table[5, 6] = table[6, 3] = 10.0
    model = bigram_gpt(table)
    r = sample(model, PAD, [[1], [3]], max_new_tokens=4, temperature=0.0, stop_ids=[STOP])
    assert r.completion_ids == [[2, STOP], [4, 5, 6, 3]]
    assert r.finish_reasons == ["eot", "length"]
    assert model.training is False
    model.train()
    sample(model, PAD, [[1]], max_new_tokens=2, temperature=0.0, stop_ids=[STOP])
    assert model.training  # switched back after sampling


def test_kl_estimators_sample_means_match_the_exact_kl():
    torch.manual_seed(0)
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 400_000, replacement=True)  # tokens sampled from the policy p
    est = kl_estimates(p.log()[x], q.log()[x])
    means = {k: v.mean().item() for k, v in est.items()}
    assert means["k1"] == pytest.approx(exact, rel=0.05)
    assert means["k3"] == pytest.approx(exact, rel=0.05)
    # k2 is biased: E[½ log²(p/q)] = KL to second order; here within 15 %
    assert means["k2"] == pytest.approx(exact, rel=0.15)
    assert (est["k3"] >= 0).all() and (est["k1"] < 0).any()  # k1 per sample can be negative, k3 never
    # the sampling error of k3 is smaller than k1's (a reason GRPO uses k3 in its loss)
    assert est["k3"].std() < est["k1"].std()
    same = kl_estimates(p.log(), p.log())
    assert all((v == 0).all() for v in same.values())


def _write(path, lines):
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_prompt_files_read_both_row_forms_and_name_file_line_and_field(tmp_path):
    msgs = [{"role": "system", "content": "terse"}, {"role": "user", "content": "2+2?"}]
    f = _write(tmp_path / "p.jsonl.gz", [{"prompt": "hi", "answer": 4}, "", {"messages": msgs}])
    assert read_prompts(f) == [[{"role": "user", "content": "hi"}], msgs]
    assert read_prompt_rows(f)[0][1]["answer"] == 4  # other fields are kept for verifiers
    bad = [
        ({"prompt": 3}, "field `prompt` must be a string"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
         "the last message must be a user turn"),
        ({"messages": [{"role": "robot", "content": "a"}]}, "unknown role"),
        ({"question": "a"}, "no `prompt`"),
        ("{not json", "not JSON"),
    ]  # fmt: skip
    for row, msg in bad:
        path = _write(tmp_path / "bad.jsonl", [{"prompt": "ok"}, row])
        with pytest.raises(DataError, match=msg) as e:
            read_prompts(path)
        assert f"{path}:2" in str(e.value)
    with pytest.raises(DataError, match="no rows"):
        read_prompts(_write(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="no such file"):
        read_prompts(tmp_path / "missing.jsonl")
