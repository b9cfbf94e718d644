"""train/generate.py: each strategy's defining property, the KV-cache path, stop strings, streaming, CLI."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from tinygpt import bigram_gpt, byte_tokenizer_dir, chain_table, save_gpt_checkpoint, tiny_gpt  # noqa: E402

from train.generate import (  # noqa: E402
    GenerationConfig,
    apply_repetition_penalty,
    beam_search,
    choose_next,
    filter_top_k,
    filter_top_p,
    generate,
    generate_ids,
    make_generator,
    sample_steps,
    stream,
)

V = 101


def full_logits(model, prompt: list[int], new: list[int]) -> torch.Tensor:
    """No-cache logits predicting each new token: (len(new), V)."""
    seq = torch.tensor([prompt + new])
    with torch.no_grad():
        logits = model(seq)
    return logits[0, len(prompt) - 1 : len(prompt) - 1 + len(new)]


def sequence_logprob(model, prompt: list[int], new: list[int]) -> float:
    lp = torch.log_softmax(full_logits(model, prompt, new), dim=-1)
    return sum(lp[i, t].item() for i, t in enumerate(new))


# ---------------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"strategy": "top_p", "top_p": 0.0}, "top_p must be in"),
        ({"strategy": "top_p", "top_p": 1.5}, "top_p must be in"),
        ({"strategy": "beam", "num_beams": 0}, "num_beams must be"),
        ({"strategy": "sample", "temperature": -1.0}, "temperature must be"),
        ({"strategy": "top_k", "top_k": 0}, "top_k must be"),
        ({"strategy": "greedy", "temperature": 0.7}, "only apply to sampling"),
        ({"strategy": "beam", "top_k": 5}, "only apply to sampling"),
        ({"strategy": "sample", "num_beams": 3}, "num_beams only applies"),
        ({"strategy": "nucleus"}, "strategy must be one of"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"stop": ["ok", ""]}, "stop strings"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**settings).resolved()


def test_defaults_and_temperature_zero_is_greedy():
    assert GenerationConfig(strategy="top_k").resolved().top_k == 50
    assert GenerationConfig(strategy="top_p").resolved().top_p == 0.9
    assert GenerationConfig(strategy="beam").resolved().num_beams == 4
    assert GenerationConfig(strategy="sample").resolved().temperature == 1.0
    assert GenerationConfig(strategy="top_p", temperature=0).resolved().strategy == "greedy"


# ---------------------------------------------------------------------------------------------------
# logits processing (distribution level)


def test_top_k_draws_never_leave_the_k_best():
    torch.manual_seed(1)
    logits = torch.randn(V).repeat(4000, 1)
    filtered = filter_top_k(logits, 5)
    draws = choose_next(
        filtered, GenerationConfig(strategy="top_k", top_k=5).resolved(), make_generator(0, "cpu")
    )
    best = set(torch.topk(logits[0], 5).indices.tolist())
    assert set(draws.tolist()) == best  # all 5 drawn in 4000 tries, nothing else


def test_top_p_draws_never_leave_the_nucleus():
    probs = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
    logits = probs.log().repeat(4000, 1)
    cfg = GenerationConfig(strategy="top_p", top_p=0.8).resolved()
    draws = choose_next(filter_top_p(logits, 0.8), cfg, make_generator(0, "cpu"))
    assert set(draws.tolist()) == {0, 1, 2}  # 0.45 + 0.25 < 0.8 <= 0.45 + 0.25 + 0.15
    # renormalised within the nucleus: token 0 has 0.45 / 0.85 of the mass
    assert (draws == 0).float().mean().item() == pytest.approx(0.45 / 0.85, abs=0.03)
    # the top token always survives, however small p is
    assert torch.isfinite(filter_top_p(logits[:1], 1e-6)).sum().item() == 1


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]


# ---------------------------------------------------------------------------------------------------
# token-level generation with a tiny random model


def test_greedy_is_the_argmax_of_the_uncached_logits_at_every_step():
    model = tiny_gpt(V)
    prompt = [5, 17, 3, 99, 42]
    new = generate_ids(model, [prompt], GenerationConfig(strategy="greedy", max_new_tokens=20))[0]
    assert len(new) == 20
    assert full_logits(model, prompt, new).argmax(-1).tolist() == new


def test_batched_prompts_of_different_lengths_equal_each_alone():
    model = tiny_gpt(V, n_kv_head=2)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [40, 41], [7, 7, 7, 60, 61]]
    cfg = GenerationConfig(strategy="greedy", max_new_tokens=12)
    batched = generate_ids(model, prompts, cfg)
    assert batched == [generate_ids(model, [p], cfg)[0] for p in prompts]


def test_sampled_tokens_stay_in_top_k_and_nucleus_of_the_uncached_logits():
    model = tiny_gpt(V)
    prompt = [3, 1, 4, 1, 5]
    for cfg in (
        GenerationConfig(strategy="top_k", top_k=3, max_new_tokens=10, temperature=3.0),
        GenerationConfig(strategy="top_p", top_p=0.3, max_new_tokens=10, temperature=3.0),
    ):
        steps = sample_steps(model, [prompt] * 8, cfg, generator=make_generator(0, "cpu"))
        rows = torch.stack(list(steps), dim=1).tolist()  # (8, 10)
        for new in rows:
            logits = full_logits(model, prompt, new) / 3.0
            for t, tok in enumerate(new):
                if cfg.strategy == "top_k":
                    allowed = set(torch.topk(logits[t], 3).indices.tolist())
                else:  # the nucleus with a hair of slack for cache-vs-full rounding
                    allowed = set(
                        torch.isfinite(filter_top_p(logits[t : t + 1], 0.3 + 1e-4))[0]
                        .nonzero()[:, 0]
                        .tolist()
                    )
                assert tok in allowed
        assert len({tuple(r) for r in rows}) > 1  # it does sample


def test_temperature_to_zero_equals_greedy_and_top_k_1_equals_greedy():
    model = tiny_gpt(V)
    prompts = [[8, 9, 10], [11]]
    greedy = generate_ids(model, prompts, GenerationConfig(max_new_tokens=16))
    for cfg in (
        GenerationConfig(strategy="sample", temperature=1e-6, max_new_tokens=16),
        GenerationConfig(strategy="sample", temperature=0.0, max_new_tokens=16),
        GenerationConfig(strategy="top_k", top_k=1, max_new_tokens=16),
    ):
        assert generate_ids(model, prompts, cfg, generator=make_generator(3, "cpu")) == greedy


def test_fixed_seed_reproduces_and_different_seeds_differ():
    model = tiny_gpt(V)
    cfg = GenerationConfig(strategy="sample", max_new_tokens=24)

    def run(seed):
        return generate_ids(model, [[1, 2, 3]], cfg, generator=make_generator(seed, "cpu"))

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_beam_with_one_beam_equals_greedy():
    model = tiny_gpt(V)
    prompts = [[5, 6, 7], [70, 71, 72, 73, 74]]
    greedy = generate_ids(model, prompts, GenerationConfig(max_new_tokens=15))
    beam = generate_ids(model, prompts, GenerationConfig(strategy="beam", num_beams=1, max_new_tokens=15))
    assert beam == greedy


def test_beam_search_finds_a_higher_scoring_sequence_than_greedy():
    # from token 0: A=1 (p .5) or B=2 (p .4); after A the mass is spread over 3..7 (p .2 each),
    # after B token 3 has p .9.  Greedy takes A then .2 (joint .10); beam keeps B and gets .36.
    table = torch.full((8, 8), -30.0)
    table[0, 1], table[0, 2], table[0, 3] = math.log(0.5), math.log(0.4), math.log(0.1)
    table[1, 3:8] = math.log(0.2)
    table[2, 3], table[2, 4] = math.log(0.9), math.log(0.1)
    table[3:8, 0] = 0.0
    model = bigram_gpt(table)
    cfg = dict(max_new_tokens=2)
    greedy = generate_ids(model, [[0]], GenerationConfig(**cfg))[0]
    ((best, score, reason),) = beam_search(
        model, [[0]], GenerationConfig(strategy="beam", num_beams=2, **cfg)
    )
    assert greedy[0] == 1 and best == [2, 3] and reason == "length"
    assert sequence_logprob(model, [0], best) > sequence_logprob(model, [0], greedy) + 0.9
    assert score == pytest.approx(sequence_logprob(model, [0], best) / 2, abs=1e-4)  # length_penalty 1


def test_beam_hypothesis_ends_at_eos_and_batches():
    model = tiny_gpt(V)
    prompts = [[5, 6, 7], [70, 71]]
    cfg = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=12)
    free = beam_search(model, prompts, cfg)
    eos = free[0][0][3]  # a token the best hypothesis of prompt 0 emits at step 4
    ended = beam_search(model, prompts, cfg, eos_id=eos)
    assert eos not in ended[0][0]
    assert [r[0] for r in beam_search(model, prompts[1:], cfg)] == [free[1][0]]  # batch-independent


def test_repetition_penalty_breaks_a_self_loop():
    table = torch.full((6, 6), -5.0)
    for t in range(6):
        table[t, t], table[t, (t + 1) % 6] = 2.0, 1.5  # repeating is likeliest, then t+1
    model = bigram_gpt(table)
    plain = generate_ids(model, [[0]], GenerationConfig(max_new_tokens=5))[0]
    penalised = generate_ids(model, [[0]], GenerationConfig(max_new_tokens=5, repetition_penalty=2.0))[0]
    assert plain == [0, 0, 0, 0, 0]
    assert penalised == [1, 2, 3, 4, 5]  # 2 / 2 < 1.5: every seen token loses to the next unseen one


def test_prompt_longer_than_context_is_refused_and_generation_stops_at_the_context():
    model = tiny_gpt(V, block_size=16)
    with pytest.raises(ValueError, match="no room"):
        generate_ids(model, [list(range(16))], GenerationConfig())
    assert len(generate_ids(model, [list(range(10))], GenerationConfig(max_new_tokens=50))[0]) == 6


# ---------------------------------------------------------------------------------------------------
# text level: byte tokenizer (id = byte) and a bigram model that spells a fixed text


TEXT = "Hi é!XY"  # distinct bytes, one 2-byte character


@pytest.fixture(scope="module")
def speller(tmp_path_factory):
    from tokenizer import Tokenizer

    tok = Tokenizer.from_dir(byte_tokenizer_dir(tmp_path_factory.mktemp("tok") / "tokenizer"))
    chain = [tok.eot_id, *TEXT.encode(), tok.eot_id]
    model = bigram_gpt(chain_table(tok.vocab_size, chain))
    return model, tok


def test_stops_at_endoftext(speller):
    model, tok = speller
    (c,) = generate(model, tok, "", GenerationConfig(max_new_tokens=50))
    assert (c.text, c.finish_reason, c.prompt_tokens) == (TEXT, "eot", 1)
    assert tok.eot_id not in c.token_ids and len(c.token_ids) == len(TEXT.encode())


@pytest.mark.parametrize(
    ("stop", "text"), [(["!X"], "Hi é"), (["é"], "Hi "), (["zzz", "i"], "H"), (["Y"], "Hi é!X")]
)
def test_stop_strings_end_the_text_before_them(speller, stop, text):
    model, tok = speller
    for strategy in ("greedy", "beam"):
        (c,) = generate(model, tok, "", GenerationConfig(strategy=strategy, stop=stop, max_new_tokens=16))
        assert (c.text, c.finish_reason) == (text, "stop")
        assert (
            "".join(stream(model, tok, "", GenerationConfig(strategy=strategy, stop=stop, max_new_tokens=16)))
            == text
        )


def test_streaming_deltas_never_split_a_character_and_join_to_the_text(speller):
    model, tok = speller
    deltas = list(stream(model, tok, "", GenerationConfig(max_new_tokens=50)))
    assert deltas == ["H", "i", " ", "é", "!", "X", "Y"]  # é's two bytes arrive as one delta
    # a stop string whose start appears ("!Q" never completes): "!" is held back until "X" rules it out
    deltas = list(stream(model, tok, "", GenerationConfig(stop=["!Q"])))
    assert deltas == ["H", "i", " ", "é", "!X", "Y"]


def test_max_new_tokens_can_end_inside_a_character(speller):
    model, tok = speller
    (c,) = generate(model, tok, "", GenerationConfig(max_new_tokens=4))  # "Hi " + first byte of é
    assert c.finish_reason == "length" and c.text == "Hi \ufffd"


def test_batched_text_generation_with_callback(speller):
    model, tok = speller
    seen: dict[int, str] = {}
    out = generate(
        model, tok, ["", "Hi"], GenerationConfig(), on_text=lambda r, d: seen.update({r: seen.get(r, "") + d})
    )
    assert [c.text for c in out] == [TEXT, TEXT[2:]]
    assert seen == {0: TEXT, 1: TEXT[2:]}


# ---------------------------------------------------------------------------------------------------
# CLI: winnow generate on a checkpoint


def test_cli_generate_from_checkpoint(speller, tmp_path, capsys):
    from pipeline.cli import main

    model, tok = speller
    save_gpt_checkpoint(model, tmp_path / "out", tok.path)
    assert main(["generate", "--checkpoint", str(tmp_path / "out"), "--prompt", "Hi", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == "Hi" + TEXT[2:] + "\n"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": ""}) + "\n" + json.dumps("Hi é") + "\n")
    argv = ["generate", "--checkpoint", str(tmp_path / "out"), "--prompt-file", str(prompts), "--json"]
    assert main([*argv, "--strategy", "top_k", "--top-k", "1", "--stop", "X", "--seed", "0"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["text"], x["finish_reason"]) for x in lines] == [("Hi é!", "stop"), ("!", "stop")]


def test_cli_bad_combination_is_a_clear_error(speller, tmp_path, capsys):
    from pipeline.cli import main

    model, tok = speller
    save_gpt_checkpoint(model, tmp_path / "out", tok.path)
    argv = ["generate", "--checkpoint", str(tmp_path / "out"), "--prompt", "x", "--strategy", "top_p"]
    assert main([*argv, "--top-p", "1.5"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(tmp_path / "out")]) == 2
    assert "no prompt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# --chat: the prompt is a user turn, the assistant turn is opened, <|end|> ends the reply

REPLY = "Sure!"  # distinct bytes


def chat_speller(tok, end: str = "<|end|>"):
    """A bigram model that answers REPLY after <|assistant|>, then ``end``."""
    chain = [tok.special_tokens["<|assistant|>"], *REPLY.encode(), tok.special_tokens[end]]
    return bigram_gpt(chain_table(tok.vocab_size, chain))


@pytest.mark.parametrize("end", ["<|end|>", "<|endoftext|>"])
def test_cli_generate_chat_json(speller, tmp_path, capsys, end):
    from pipeline.cli import main
    from tokenizer.chat import render_for_completion

    _, tok = speller
    save_gpt_checkpoint(chat_speller(tok, end), tmp_path / "out", tok.path)
    argv = ["generate", "--checkpoint", str(tmp_path / "out"), "--chat", "--json", "--device", "cpu"]
    prompts = ["hi", "a <|end|> b"]
    assert main([*argv, "--prompt", prompts[0], "--prompt", prompts[1]]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    for line, prompt in zip(lines, prompts, strict=True):
        assert (line["text"], line["finish_reason"]) == (REPLY, "eot")
        assert line["token_ids"] == list(REPLY.encode())  # the end token is not part of the reply
        # the prompt's "<|end|>" is text (7 byte tokens), not a control token
        want = render_for_completion(tok, [{"role": "user", "content": prompt}])
        assert line["prompt_tokens"] == len(want) == len(prompt.encode()) + 4
    assert main([*argv, "--prompt", "hi", "--stop", "r"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["text"], line["finish_reason"], line["token_ids"]) == ("Su", "stop", list(b"Sur"))
    assert main([*argv, "--prompt", "hi", "--max-new-tokens", "3"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["text"], line["finish_reason"]) == ("Sur", "length")


def test_cli_generate_chat_text_and_errors(speller, tmp_path, capsys):
    from pipeline.cli import main

    _, tok = speller
    save_gpt_checkpoint(chat_speller(tok), tmp_path / "out", tok.path)
    argv = ["generate", "--checkpoint", str(tmp_path / "out"), "--chat", "--device", "cpu"]
    assert main([*argv, "--prompt", "hi"]) == 0
    assert capsys.readouterr().out == REPLY + "\n"  # a reply, not a continuation of the prompt
    assert main([*argv, "--prompt", "hi", "--prompt", "yo", "--strategy", "beam"]) == 0
    out = capsys.readouterr().out
    block = "=== [{}] (eot, 5 tokens)\nuser: {}\nassistant: " + REPLY + "\n"
    assert out == block.format(0, "hi") + block.format(1, "yo")
    assert main([*argv, "--prompt", "hi", "--no-bos"]) == 2
    assert "--no-bos does not apply with --chat" in capsys.readouterr().err
    # without --chat the same model continues the raw prompt text: behaviour unchanged
    assert (
        main(["generate", "--checkpoint", str(tmp_path / "out"), "--prompt", "<|assistant|>", "--json"]) == 0
    )
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["text"], line["finish_reason"], line["prompt_tokens"]) == (REPLY, "eot", 2)


def test_end_ids_are_the_chat_stop_ids(speller):
    from tokenizer.chat import stop_ids
    from train.generate import end_ids

    _, tok = speller
    assert end_ids(tok) == stop_ids(tok) == [tok.eot_id, tok.special_tokens["<|end|>"]]


def test_embedding_rows_without_a_token_are_never_generated(tmp_path):
    """A model with more embedding rows than its tokenizer has tokens (an HF import padded to a
    multiple of 64, add_chat_tokens' spare rows): even where a spare row has the highest logit,
    generate (and so the playground and reply samples) picks a real token, and the text decodes."""
    from tokenizer import Tokenizer
    from train.generate import GenerationConfig, generate, spare_ids

    tok = Tokenizer.from_dir(byte_tokenizer_dir(tmp_path / "tok"))
    n = tok.vocab_size + 8
    spare = tok.vocab_size + 3
    table = chain_table(n, [ord("a"), spare])  # after "a" a spare row is the best next token...
    table[ord("a"), ord("b")] = 9.0  # ...and "b" the best real one
    model = bigram_gpt(table)
    assert spare_ids(model, tok) == tuple(range(tok.vocab_size, n))
    for cfg in (GenerationConfig(max_new_tokens=1), GenerationConfig(strategy="beam", max_new_tokens=1)):
        (done,) = generate(model, tok, ["a"], cfg)
        assert done.token_ids == [ord("b")] and done.text == "b"
