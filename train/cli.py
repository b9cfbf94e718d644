"""``winnow train ...``, ``winnow generate``, ``winnow chat`` and ``winnow export``.

``register`` only builds parsers: torch is imported by the handlers, so ``winnow validate`` and
``winnow --help`` never pay torch's import time.  Each command's flags live in its own function
below; its handler is ``main(args) -> int`` in the module that does the work.
"""

from __future__ import annotations

import argparse


def _lazy(module: str):
    """A handler that imports ``module`` (and so torch) only when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).main(args)

    return handler


def add_shared_flags(
    p: argparse.ArgumentParser, *, micro_batch: str, lr: str, seed: str, eval_every: int, save_every: int
) -> tuple[argparse._ArgumentGroup, argparse._ArgumentGroup, argparse._MutuallyExclusiveGroup]:
    """The flags every ``winnow train`` command shares (DESIGN "Training"); the help strings name
    each trainer's defaults.  Returns the "optimization" and "runtime" groups and the mutually
    exclusive group of ``--max-steps`` (a trainer adds its other length flag there: ``--tokens``,
    ``--epochs``)."""
    o = p.add_argument_group("optimization")
    length = o.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, help="optimizer steps")
    o.add_argument("--micro-batch", type=int, help=micro_batch)
    o.add_argument("--lr", type=float, help=lr)
    o.add_argument("--seed", type=int, help=seed)
    r = p.add_argument_group("runtime")
    r.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast where the GPU/CPU supports it, else fp32",
    )
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    r.add_argument(
        "--eval-every", type=int, help=f"steps between validations, 0 = never (default {eval_every})"
    )
    r.add_argument(
        "--save-every", type=int, help=f"steps between checkpoints (default {save_every}; always at end)"
    )
    r.add_argument("--keep-checkpoints", type=int, default=3, help="newest kept, 0 = all (default 3)")
    r.add_argument("--log-every", type=int, default=1, help="steps between metrics.jsonl lines")
    r.add_argument("--resume", action="store_true", help="continue from --out's latest checkpoint")
    r.add_argument(
        "--stop-after", type=int, help="run at most this many steps now, save, exit 0 (time-limited jobs)"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar (plain log lines)")
    return o, r, length


def add_val_flags(p: argparse.ArgumentParser) -> None:
    """``--val FILE`` or ``--val-fraction F``: the post-training trainers' validation data."""
    v = p.add_mutually_exclusive_group()
    v.add_argument(
        "--val", metavar="FILE", help="validation rows (.jsonl or .jsonl.gz), same format as --data"
    )
    v.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="hold out this fraction of --data's rows for validation (chosen by --seed)",
    )


def _schedule_flags(
    o: argparse._ArgumentGroup, *, warmup: str, min_lr_ratio: float, weight_decay: float
) -> None:
    o.add_argument("--schedule", choices=["cosine", "wsd"], help="after warmup (default cosine)")
    o.add_argument("--warmup", type=int, help=f"linear warmup steps (default {warmup})")
    o.add_argument("--cooldown", type=float, help="wsd: final fraction of steps that decays (default 0.2)")
    o.add_argument("--min-lr-ratio", type=float, help=f"final lr / peak lr (default {min_lr_ratio})")
    o.add_argument(
        "--weight-decay", type=float, help=f"AdamW decoupled weight decay (default {weight_decay})"
    )
    o.add_argument("--beta1", type=float, help="default 0.9")
    o.add_argument("--beta2", type=float, help="default 0.95")
    o.add_argument("--grad-clip", type=float, help="max global grad norm, 0 = off (default 1.0)")


def _sft_parser(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser(
        "sft",
        help="supervised fine-tuning on chat / instruction rows (loss on assistant tokens only)",
        description="Fine-tune a checkpoint on conversations: rows of `messages`, `prompt`/`response` or "
        "Alpaca `instruction`/`input`/`output`. Loss only on assistant tokens; several conversations "
        "packed per window with attention kept inside each (--no-packing pads instead).",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--base",
        "--init-from",
        dest="base",
        metavar="CKPT",
        help="checkpoint to start from (weights only: fresh optimizer and schedule)",
    )
    d.add_argument("--data", action="append", metavar="FILE", help="rows (.jsonl or .jsonl.gz); repeatable")
    add_val_flags(p)
    d.add_argument("--out", required=True, metavar="DIR", help="output: checkpoints/, metrics.jsonl")
    d.add_argument(
        "--packing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="several conversations per window (default); --no-packing: one per row, padded",
    )
    o, _, length = add_shared_flags(
        p,
        micro_batch="windows (rows) per forward pass and rank (default 8)",
        lr="peak learning rate (default: 0.1 x the base model's peak_lr())",
        seed="data order and the --val-fraction hold-out (default 0)",
        eval_every=100,
        save_every=500,
    )
    length.add_argument("--epochs", type=float, help="passes over the data (default 1)")
    o.add_argument(
        "--batch-rows",
        type=int,
        help="global batch in windows (rows); accumulation = this / (micro-batch*world) "
        "(default micro-batch*world)",
    )
    _schedule_flags(o, warmup="3%% of steps", min_lr_ratio=0.0, weight_decay=0.0)
    p.set_defaults(handler=_lazy("train.sft"))


def _preference_parser(train_sub: argparse._SubParsersAction, name: str, **kw) -> argparse._ArgumentGroup:
    """The flags ``winnow train reward`` and ``winnow train dpo`` share (``train.preference``);
    returns the optimization group for the trainer's own flags."""
    p = train_sub.add_parser(name, **kw)
    d = p.add_argument_group("data")
    d.add_argument("--base", "--init-from", dest="base", metavar="CKPT", help="checkpoint to start from")
    d.add_argument(
        "--data",
        action="append",
        metavar="FILE",
        help="preference rows (.jsonl[.gz]): prompt + chosen + rejected, or HH transcripts; repeatable",
    )
    add_val_flags(p)
    d.add_argument("--out", required=True, metavar="DIR", help="output: checkpoints/, metrics.jsonl")
    o, _, length = add_shared_flags(
        p,
        micro_batch="pairs per forward pass and rank (default 4)",
        lr="peak learning rate (default: 0.1 x the base model's peak_lr())",
        seed="data order, head init and the --val-fraction hold-out (default 0)",
        eval_every=50,
        save_every=500,
    )
    length.add_argument("--epochs", type=float, help="passes over the pairs (default 1)")
    o.add_argument(
        "--batch-pairs",
        type=int,
        help="global batch in pairs; accumulation = this / (micro-batch*world) (default micro-batch*world)",
    )
    _schedule_flags(o, warmup="3%% of steps", min_lr_ratio=0.0, weight_decay=0.0)
    p.set_defaults(handler=_lazy(f"train.{name}"))
    return o


def _reward_parser(train_sub: argparse._SubParsersAction) -> None:
    o = _preference_parser(
        train_sub,
        "reward",
        help="train a Bradley-Terry reward model on preference pairs",
        description="A scalar head on the base's last hidden state at each sequence's last real token, "
        "trained with -log sigmoid(r_chosen - r_rejected - margin). Validation: pairwise val_accuracy.",
    )
    o.add_argument("--margin", type=float, help="added to every pair's own `margin` field (default 0)")
    o.add_argument(
        "--normalize",
        metavar="FILE",
        help="after training, set gain/bias so scores of these SFT rows have mean 0, std 1",
    )


def _dpo_parser(train_sub: argparse._SubParsersAction) -> None:
    o = _preference_parser(
        train_sub,
        "dpo",
        help="direct preference optimisation of a chat model (sigmoid loss, frozen reference)",
        description="DPO against the frozen --base (the reference, whose log-probs are computed once). "
        "Logs rewards/chosen|rejected|margins|accuracies (TRL's names); a falling rewards/chosen is normal.",
    )
    o.add_argument(
        "--beta", type=float, help="DPO beta: the strength of the pull to the reference (default 0.1)"
    )
    o.add_argument("--sft-weight", type=float, help="weight of an NLL term on the chosen replies (default 0)")
    o.add_argument(
        "--live-reference",
        action="store_true",
        help="compute reference log-probs in every step instead of once before training (memory: two models)",
    )


def _grpo_parser(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser(
        "grpo",
        help="GRPO: RL of a chat model against a programmatic verifier (arithmetic, or MODULE:FUNCTION)",
        description="Group relative policy optimisation: sample --num-generations completions per prompt "
        "from the current policy, score them with the verifier, group-normalised advantages, one step per "
        "rollout (on-policy). Logs reward, reward_std, frac_reward_zero_std, completions/mean_length, "
        "val_accuracy, timing/generation_s|training_s. A train_loss near 0 with grad_norm > 0 is expected.",
    )
    d = p.add_argument_group("task")
    d.add_argument("--policy", metavar="CKPT", help="the chat model to train (an SFT checkpoint)")
    d.add_argument(
        "--task",
        metavar="arithmetic|MODULE:FUNCTION",
        help="arithmetic (built in: 'What is A + B?'), or FUNCTION(prompt, completion) -> float of a dotted "
        "module importable from here or of a .py file",
    )
    d.add_argument(
        "--prompts", metavar="FILE", help="the task's items (.jsonl[.gz]): rows of `prompt` or `messages`"
    )
    add_val_flags(p)
    d.add_argument("--digits", help="arithmetic: digits per operand, D or D1,D2 (default 2)")
    d.add_argument("--val-size", type=int, help="arithmetic: held-back problems (default 200)")
    d.add_argument("--out", required=True, metavar="DIR", help="output: checkpoints/, metrics.jsonl")
    o, _, _ = add_shared_flags(
        p,
        micro_batch="prompts per forward pass and rank, each with --num-generations completions (default 4)",
        lr="peak learning rate (default: 0.1 x the policy's peak_lr())",
        seed="item order and sampling (default 0)",
        eval_every=25,
        save_every=100,
    )
    o.add_argument(
        "--batch-prompts",
        type=int,
        help="prompts per step; accumulation = this / (micro-batch*world) (default: micro-batch*world)",
    )
    o.add_argument("--num-generations", type=int, help="G: completions per prompt, one group (default 8)")
    o.add_argument("--max-new-tokens", type=int, help="completion length limit (default 64)")
    o.add_argument("--temperature", type=float, help="sampling temperature of the rollouts (default 1.0)")
    o.add_argument("--top-k", type=int, help="rollouts: keep the k most likely tokens (default: off)")
    o.add_argument("--top-p", type=float, help="rollouts: nucleus mass (default: off)")
    o.add_argument(
        "--loss-type",
        choices=["token", "sequence", "dr_grpo"],
        help="token: sum / completion tokens (DAPO, default); sequence: mean of per-completion means "
        "(original GRPO, length-biased); dr_grpo: sum / (completions x max-new-tokens)",
    )
    o.add_argument(
        "--scale-rewards",
        choices=["group", "none"],
        help="advantages (r - mean) / std per group (default), or r - mean (none: Dr. GRPO)",
    )
    o.add_argument("--beta", type=float, help="k3 KL weight, to the frozen --policy (default 0)")
    _schedule_flags(o, warmup="0", min_lr_ratio=0.0, weight_decay=0.0)
    p.set_defaults(handler=_lazy("train.grpo"))


def _ppo_parser(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser(
        "ppo",
        help="RLHF: PPO of a chat model against a reward model (value head, GAE, KL to the reference)",
        description="Rollouts of --policy on --prompts, scored by --reward minus a per-token KL penalty to "
        "the frozen --policy; GAE, whitened advantages, clipped policy and value losses, --ppo-epochs passes "
        "per rollout. Logs rlhf_reward, objective/kl, policy/clipfrac_avg, val/ratio (TRL names), timing/*.",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--policy", metavar="CKPT", help="the chat model to tune (an SFT checkpoint); also the reference"
    )
    d.add_argument("--reward", metavar="RM_CKPT", help="a reward model (winnow train reward), same tokenizer")
    d.add_argument(
        "--prompts", metavar="FILE", help="prompt rows (.jsonl[.gz]): `prompt` (a string) or `messages`"
    )
    add_val_flags(p)
    d.add_argument("--out", required=True, metavar="DIR", help="output: checkpoints/, metrics.jsonl")
    o, _, _ = add_shared_flags(
        p,
        micro_batch="rollout rows per forward pass (default 4)",
        lr="peak learning rate (default: 0.1 x the policy's peak_lr())",
        seed="prompt order, sampling, minibatch order and the --val-fraction hold-out (default 0)",
        eval_every=20,
        save_every=200,
    )
    o.add_argument(
        "--batch-rows", type=int, help="rows per optimizer step (a PPO minibatch); default --micro-batch"
    )
    _schedule_flags(o, warmup="0", min_lr_ratio=0.0, weight_decay=0.0)
    r = p.add_argument_group("ppo")
    r.add_argument("--rollout-prompts", type=int, help="prompts sampled per rollout (default 16)")
    r.add_argument("--ppo-epochs", type=int, help="passes over each rollout in minibatches (default 4)")
    r.add_argument("--max-new-tokens", type=int, help="reply length limit in tokens (default 48)")
    r.add_argument("--kl-coef", type=float, help="beta of the per-token KL penalty (default 0.05)")
    r.add_argument("--kl-estimator", choices=["k1", "k3"], help="KL estimator in the reward (default k1)")
    r.add_argument(
        "--target-kl", type=float, help="adaptive beta towards this summed KL per reply (default: fixed)"
    )
    r.add_argument(
        "--kl-horizon", type=float, help="adaptive controller's horizon in replies (default 10000)"
    )
    r.add_argument(
        "--missing-eot-penalty",
        type=float,
        help="subtracted from the score of a reply without <|end|> (default 0)",
    )
    r.add_argument("--gamma", type=float, help="GAE discount (default 1)")
    r.add_argument("--lam", type=float, help="GAE lambda (default 0.95)")
    r.add_argument("--cliprange", type=float, help="policy ratio clip epsilon (default 0.2)")
    r.add_argument(
        "--cliprange-value", type=float, help="value clip around the rollout's values (default 0.2)"
    )
    r.add_argument("--vf-coef", type=float, help="weight of the value loss (default 0.1)")
    p.set_defaults(handler=_lazy("train.ppo"))


def _pretrain_parser(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser(
        "pretrain",
        help="pretrain a GPT on the token shards of run directories",
        description="Pretrain a GPT on token shards (or text Parquet + --tokenizer). Flags left out on "
        "--resume take the checkpoint's values; flags that define the run must not change.",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--data",
        action="append",
        metavar="RUN_DIR[:WEIGHT]",
        help="run dir with tokens/ (or data/ text + --tokenizer); repeat for a mixture",
    )
    d.add_argument(
        "--val",
        action="append",
        metavar="RUN_DIR",
        help="validation data: a run's tokens/val split, or a text run used whole "
        "(default: the val splits of --data)",
    )
    d.add_argument("--tokenizer", metavar="DIR", help="tokenizer for text Parquet (checked against shards)")
    d.add_argument(
        "--shuffle-tokens",
        type=int,
        metavar="N",
        help="shuffle training windows within chunks of N tokens per source, 0 = stream order "
        "(default 4194304; memory ~2 chunks x 2-4 bytes/token)",
    )
    d.add_argument("--out", required=True, metavar="DIR", help="output: checkpoints/, metrics.jsonl")
    m = p.add_argument_group("model (the depth dial, then explicit overrides)")
    m.add_argument("--depth", type=int, help="layers; width 64*depth, heads, MLP and lr derive (default 6)")
    m.add_argument("--block-size", type=int, help="context length in tokens (default 1024)")
    m.add_argument("--n-embd", type=int)
    m.add_argument("--n-head", type=int)
    m.add_argument("--n-kv-head", type=int, help="< n_head: grouped-query attention")
    m.add_argument("--mlp-hidden", type=int)
    m.add_argument("--rope-theta", type=float)
    m.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None)
    o, r, length = add_shared_flags(
        p,
        micro_batch="sequences per forward pass and rank (default 8)",
        lr="peak learning rate (default: the model's peak_lr())",
        seed="model init and data order (default 0)",
        eval_every=250,
        save_every=1000,
    )
    length.add_argument("--tokens", type=float, help="training tokens (default: 20 x parameters)")
    o.add_argument(
        "--batch-tokens",
        type=int,
        help="global batch in tokens; accumulation = this / (micro-batch*block*world)",
    )
    _schedule_flags(o, warmup="5%% of steps, <= 1000", min_lr_ratio=0.1, weight_decay=0.1)
    r.add_argument("--eval-tokens", type=int, help="validation tokens per evaluation (default 262144)")
    p.set_defaults(handler=_lazy("train.pretrain"))


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """The checkpoint and decoding options shared by ``winnow generate`` and ``winnow chat``
    (``train.generate.config_from_args`` and ``load_for_generation`` read them)."""
    p.add_argument("--checkpoint", required=True, help="training output dir, its checkpoints/, or a step")
    p.add_argument("--strategy", default="greedy", choices=["greedy", "beam", "sample", "top_k", "top_p"])
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1; 0 = greedy)")
    p.add_argument("--top-k", type=int, help="top_k: keep the k most likely tokens (default 50)")
    p.add_argument("--top-p", type=float, help="top_p: keep the nucleus of mass p, in (0, 1] (default 0.9)")
    p.add_argument("--num-beams", type=int, help="beam: number of beams (default 4)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam: score / length**this")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL-style, > 1: fewer repeats")
    p.add_argument("--stop", action="append", help="stop string (repeatable; not included in the output)")
    p.add_argument("--seed", type=int, help="seed for sampling (reproducible output)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint",
        description="Generate text from a checkpoint (KV cache; batched prompts; one prompt streams).",
    )
    p.add_argument("--prompt", action="append", help="prompt text (repeatable: a batch)")
    p.add_argument("--prompt-file", help="a prompt per line, or .jsonl of strings / {'prompt': ...}")
    add_decoding_arguments(p)
    p.add_argument(
        "--chat",
        action="store_true",
        help="render each prompt as a user turn of the chat format and open the assistant turn",
    )
    p.add_argument("--no-bos", action="store_true", help="do not prepend <|endoftext|> to prompts")
    p.add_argument("--json", action="store_true", help="one JSON line per prompt instead of text")
    p.set_defaults(handler=_lazy("train.generate"))


def _chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="an interactive conversation with a checkpoint in the terminal",
        description="Chat with a checkpoint: type a message, the reply streams; /reset starts over, "
        "/quit (or end of input) leaves. The oldest turns are dropped when the conversation outgrows "
        "the model's context.",
    )
    add_decoding_arguments(p)
    p.add_argument("--system", metavar="TEXT", help="a system message at the start of the conversation")
    p.add_argument(
        "--transcript", metavar="FILE", help="append each turn as a JSON line (messages, ids, reply)"
    )
    p.set_defaults(handler=_lazy("train.chat"))


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint (hf: Hugging Face Llama format)")
    p.add_argument("format", choices=["hf"], help="hf: a LlamaForCausalLM folder (safetensors + tokenizer)")
    p.add_argument("--checkpoint", required=True, help="training output dir, its checkpoints/, or a step")
    p.add_argument("--out", required=True, help="folder to write (must be empty or absent unless --force)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--verify", action="store_true", help="load with transformers and compare logits")
    p.set_defaults(handler=_lazy("train.export"))


def _import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import a model as a checkpoint (hf: a Hugging Face Llama folder)")
    p.add_argument("format", choices=["hf"], help="hf: a LlamaForCausalLM folder")
    p.add_argument("--model", required=True, metavar="HF_DIR", help="config.json, weights, tokenizer.json")
    p.add_argument("--out", required=True, metavar="DIR", help="output: DIR/checkpoints/step-00000000")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.set_defaults(handler=_lazy("train.import_hf"))


def _playground_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "playground",
        help="a local web page to try checkpoints: decoding settings, streaming, chat, tokens",
        description='Serve a web page and its HTTP API (DESIGN.md "Playground HTTP API") over the given '
        "checkpoints only; it binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="DIR",
        help="training output dir (its latest checkpoint), its checkpoints/, or a step (repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this host only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--max-concurrent", type=int, default=2, help="generations at once; more answer 429 (default 2)"
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.set_defaults(handler=_lazy("train.playground"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``generate``, ``chat`` and ``export`` to winnow's parser."""
    train = sub.add_parser("train", help="train a GPT on a run's token shards")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    _pretrain_parser(train_sub)
    _sft_parser(train_sub)
    _reward_parser(train_sub)
    _dpo_parser(train_sub)
    _ppo_parser(train_sub)
    _grpo_parser(train_sub)
    _generate_parser(sub)
    _chat_parser(sub)
    _export_parser(sub)
    _import_parser(sub)
    _playground_parser(sub)
